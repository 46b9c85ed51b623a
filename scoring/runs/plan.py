"""The run's plan (plan.json, window.json): what every stage task reads first."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import polars as pl

from scoring.config import Settings, frozen_settings
from scoring.errors import InputError, RunStateError
from scoring.inputs.contract import input_files, table_rows
from scoring.inputs.dataset import DataSource, data_source
from scoring.inputs.validation import (
    PAYMENTS,
)
from scoring.runs.ledger import input_fingerprint
from scoring.runs.store import STAGES, RunPaths, run_store

PLAN = f"{STAGES}/plan.json"  # what every stage task reads first
WINDOW = f"{STAGES}/window.json"  # reduce's answer: T, each bucket's population and batches


def plan_path(paths: RunPaths) -> Path:
    """plan.json's path, for the Modal side that reads the volume's files directly."""
    return paths.root / PLAN


def auto_shards(payment_rows: int, cfg: Settings) -> int:
    """Shards for `payment_rows` when the run asks for none (`shards` 0)."""
    return max(1, min(4096, -(-payment_rows // cfg.shard_rows)))


def write_plan(
    paths: RunPaths,
    data_dir: DataSource,
    cfg: Settings,
    fingerprint: str,
    *,
    source_kind: str = "dataset",
    payment_rows: int | None = None,
) -> None:
    """What every stage task reads: the source, the frozen settings and the shard count
    (`shards` 0: from the payment rows, counted here or, for Postgres, estimated).
    `source_kind` 'postgres': an export stage fills data_dir first (fingerprint '' until
    combine takes it from the exported parts)."""
    source = data_source(data_dir)
    if payment_rows is None and source_kind == "dataset":  # footers only: cheap
        payment_rows = table_rows(source, PAYMENTS).total
    shards = cfg.shards or auto_shards(payment_rows or 0, cfg)
    cfg = cfg.model_copy(update={"shards": shards})
    plan = {
        "source": source_kind,
        "data_dir": str(source),
        # where the data lies seen from the run directory: a Modal container mounts the
        # volume at its own path, so the absolute one may not exist there
        "data_dir_from_run": (
            None
            if paths.url or not isinstance(source, Path)
            else os.path.relpath(source, paths.root.resolve())
        ),
        "shards": cfg.shards,
        # one shard holds every bucket: its stages run as one task, nothing shuffled (the
        # embedded graph only: a Neo4j mode's reduce step needs the graph's credentials,
        # which a burst gives its single steps, not its shard tasks)
        "fused": cfg.shards == 1 and cfg.fuse and cfg.graph_mode == "embedded",
        "payment_rows": payment_rows,  # how big the run is (the local engine's pool size)
        "polars": pl.__version__,  # peer buckets and row hashes: one polars for all of a run
        "runtime": runtime_probe(),
        "fingerprint": fingerprint,
        "settings": cfg.model_dump(mode="json"),
    }
    run_store(paths).write_json(PLAN, plan)


def run_fingerprint(data_dir: DataSource, cfg: Settings) -> str:
    """The fingerprint of every file a run of `cfg` reads from `data_dir`."""
    return input_fingerprint(input_files(data_dir, with_graph=cfg.graph_mode == "embedded"))


def check_inputs_unchanged(paths: RunPaths) -> None:
    """A dataset run's inputs still have the fingerprint of its plan: a shard run later (a
    retry, a resume) over files replaced meanwhile would mix two datasets in one run."""
    plan = plan_record(paths)
    if not plan["fingerprint"]:  # Postgres: the export stage writes the snapshot
        return
    data_dir, cfg, _ = read_plan(paths)
    if run_fingerprint(data_dir, cfg) != plan["fingerprint"]:
        msg = (
            f"run {paths.run_id}: the inputs in {data_dir} changed since the run was planned "
            f"(fingerprint {plan['fingerprint']}): start a new run on them"
        )
        raise InputError(msg)


@functools.cache
def runtime_probe() -> dict[str, Any]:
    """What shard files depend on beyond the polars version: its index type (group ids)
    and the hashes of fixed values (peer buckets, exact-copy detection). Polars builds of
    one version (rt32 / rt64 / rtcompat) may differ in both."""
    probe = pl.DataFrame({"t": ["207Q00000X", ""], "n": [1, -7], "x": [0.07, 1e300]})
    hashes = probe.select(pl.all().hash(seed=3)).rows()
    return {"index_type": str(pl.get_index_type()), "hashes": [list(map(str, r)) for r in hashes]}


def has_plan(paths: RunPaths) -> bool:
    return run_store(paths).exists(PLAN)


def is_fused(paths: RunPaths) -> bool:
    """The plan runs its stages as one task (a plan written before fusion: never)."""
    return has_plan(paths) and bool(plan_record(paths).get("fused", False))


def has_window(paths: RunPaths) -> bool:
    return run_store(paths).exists(WINDOW)


def plan_record(paths: RunPaths) -> dict[str, Any]:
    """plan.json as written (read_plan checks it and gives what a stage needs)."""
    plan: dict[str, Any] = run_store(paths).read_json(PLAN)
    return plan


def plan_source(paths: RunPaths) -> str:
    """'dataset' or 'postgres' (an export stage fills the snapshot first)."""
    return str(plan_record(paths).get("source", "dataset"))


def read_window(paths: RunPaths) -> dict[str, Any]:
    window: dict[str, Any] = run_store(paths).read_json(WINDOW)
    return window


def write_window(paths: RunPaths, window: dict[str, Any]) -> None:
    run_store(paths).write_json(WINDOW, window)


def read_plan(paths: RunPaths) -> tuple[Path, Settings, int]:
    plan = plan_record(paths)
    if (
        plan.get("polars") != pl.__version__
        or plan.get("runtime", runtime_probe()) != runtime_probe()
    ):
        msg = (
            f"run {paths.run_id} was planned with polars {plan.get('polars')} "
            f"({plan.get('runtime')}), this process has {pl.__version__} ({runtime_probe()}): "
            "its shards would hash peer groups and rows differently"
        )
        raise RunStateError(msg)
    return _plan_data_dir(paths, plan), frozen_settings(plan["settings"]), int(plan["shards"])


def _plan_data_dir(paths: RunPaths, plan: dict[str, Any]) -> Path:
    """The planned dataset as this process sees it: beside the run when it is there (the
    same volume mounted elsewhere), else the absolute path the plan recorded."""
    if paths.url is None and plan.get("data_dir_from_run") is not None:
        beside = paths.root / str(plan["data_dir_from_run"])
        if beside.is_dir():
            return beside.resolve()
    return data_source(plan["data_dir"])


def planned_payment_rows(paths: RunPaths) -> int | None:
    """The payment rows the plan counted (a Postgres run's estimate); None for an older plan."""
    rows = run_store(paths).read_json(PLAN).get("payment_rows")
    return int(rows) if rows is not None else None
