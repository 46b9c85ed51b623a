"""Run metrics in the Prometheus text format, from the ledgers (the runs' own record).

Batch jobs have no process to scrape while they are idle, so two ways out, both built on
the same families: `python -m workers metrics` serves them from the run root (what the
fleet's ledgers say, on every scrape: survives restarts, needs no push), and a run whose
process has CLAIDEX_PUSHGATEWAY set pushes its own at its end (Modal bursts and ad-hoc
`claidex run`, where no exporter runs). Celery's per-task metrics stay Flower's.

Labels are the run kind (full, incremental): one series per kind, the latest run's; only
`claidex_run_info` names the run (one series per kind at a time)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from scoring.runs.roots import RunRoot, runs_under
from scoring.runs.statuses import STATUSES
from scoring.runs.store import RunPaths

PUSHGATEWAY = "CLAIDEX_PUSHGATEWAY"
VERDICTS = {"pass": 0, "warn": 1, "block": 2}
log = logging.getLogger(__name__)


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def run_families(states: Iterable[dict[str, Any]]) -> list[Metric]:
    """The families for these runs' ledgers: per kind, the latest run's values."""
    latest: dict[str, dict[str, Any]] = {}
    published: dict[str, float] = {}
    by_status: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for state in states:
        kind = str(state.get("kind", "?"))
        status = str(state.get("status", "?"))
        by_status[status] = by_status.get(status, 0) + 1
        if str(state.get("created_at", "")) >= str(latest.get(kind, {}).get("created_at", "")):
            latest[kind] = state
        at = _epoch(state.get("published_at")) if status == "published" else None
        if at is not None:
            published[kind] = max(published.get(kind, 0.0), at)
    info = GaugeMetricFamily(
        "claidex_run_info", "The latest run of each kind", labels=["kind", "run_id", "status"]
    )
    status_family = GaugeMetricFamily(
        "claidex_run_status", "The latest run's status (1: its status)", labels=["kind", "status"]
    )
    steps = GaugeMetricFamily(
        "claidex_run_step_duration_seconds", "Wall time of each run step", labels=["kind", "step"]
    )
    rows = GaugeMetricFamily(
        "claidex_run_rows", "Rows read, quarantined and scored", labels=["kind", "rows"]
    )
    check_values = GaugeMetricFamily(
        "claidex_run_check_value", "Each check's measured value", labels=["kind", "check"]
    )
    verdicts = GaugeMetricFamily(
        "claidex_run_check_verdict",
        "Each check's verdict: 0 pass, 1 warn, 2 block",
        labels=["kind", "check"],
    )
    last_publish = GaugeMetricFamily(
        "claidex_last_successful_publish_timestamp_seconds",
        "When a run of this kind was last published",
        labels=["kind"],
    )
    runs = GaugeMetricFamily("claidex_runs", "Runs in the run root by status", labels=["status"])
    for kind, state in sorted(latest.items()):
        status = str(state.get("status", "?"))
        info.add_metric([kind, str(state.get("run_id", "?")), status], 1)
        for value in STATUSES:
            status_family.add_metric([kind, value], 1 if value == status else 0)
        for step, seconds in sorted(state.get("timings", {}).items()):
            steps.add_metric([kind, step], float(seconds))
        for name, n in sorted((state.get("rows") or {}).items()):
            rows.add_metric([kind, name], float(n))
        for check in (state.get("checks") or {}).get("checks", []):
            if isinstance(check.get("value"), int | float) and not isinstance(check["value"], bool):
                check_values.add_metric([kind, check["name"]], float(check["value"]))
            verdicts.add_metric([kind, check["name"]], VERDICTS[check["verdict"]])
    for kind, at in sorted(published.items()):
        last_publish.add_metric([kind], at)
    for status, n in sorted(by_status.items()):
        runs.add_metric([status], n)
    return [info, status_family, steps, rows, check_values, verdicts, last_publish, runs]


class RunRootCollector(Collector):
    """Reads every ledger under the run root at each scrape (`read`: a run directory's
    ledger state; given by the caller, so this module never imports the ledger's)."""

    def __init__(self, run_root: RunRoot, read: Callable[[RunPaths], dict[str, Any]]) -> None:
        self.run_root = run_root
        self.read = read

    def collect(self) -> Iterator[Metric]:
        states = []
        for paths in runs_under(self.run_root):
            try:  # a run being created, torn or foreign: left out of this scrape
                state = self.read(paths)
                run_families([state])  # its fields have the types the families need
            except Exception:
                log.warning("metrics: run %s left out (unreadable)", paths.where())
                continue
            states.append(state)
        yield from run_families(states)


def run_root_registry(
    run_root: RunRoot, read: Callable[[RunPaths], dict[str, Any]]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RunRootCollector(run_root, read))
    return registry


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def push_run_metrics(state: dict[str, Any], timeout: float = 5.0) -> bool:
    """Push one run's families to CLAIDEX_PUSHGATEWAY (job claidex, grouped by kind: the
    gateway keeps each kind's last run); never raises: metrics must not fail a run."""
    gateway = os.environ.get(PUSHGATEWAY, "").strip()
    if not gateway:
        return False
    from prometheus_client import pushadd_to_gateway

    try:
        # runs_by_status counts one run here: the exporter's family, not the push's
        families = [f for f in run_families([state]) if f.name != "claidex_runs"]
        if state.get("status") != "published":  # no publish: the last one's time stays
            families = [f for f in families if not f.name.startswith("claidex_last_")]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        # POST (pushadd): replaces the families pushed, keeps the others of the group
        pushadd_to_gateway(
            gateway,
            job="claidex",
            grouping_key={"kind": str(state.get("kind", "?"))},
            registry=registry,
            timeout=timeout,
        )
    except Exception as exc:
        log.warning("run %s: metrics not pushed: %s", state.get("run_id"), type(exc).__name__)
        return False
    return True
