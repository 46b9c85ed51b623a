"""The run's task timeline from its ledger: every stage task and batch attempt of this prepare,
on the process that ran it (host:pid), in seconds from the prepare's start."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from scoring.errors import RunFileError
from scoring.runs.store import RunPaths


def _seconds(at: str, origin: datetime) -> float:
    return round((datetime.fromisoformat(at) - origin).total_seconds(), 3)


def _lane(record: dict[str, Any]) -> str:
    host = record.get("host") or record.get("worker") or "?"
    return f"{host}:{record.get('pid', '?')}"


def batch_attempts(paths: RunPaths, origin: datetime) -> list[dict[str, Any]]:
    """Each start of a batch paired with the end that followed it; a start followed by
    another start is an attempt whose process died ('lost', ended at the next start)."""
    from scoring.runs.ledger import RunLedger  # the ledger imports the store, as this does

    tasks: list[dict[str, Any]] = []
    try:
        logs = RunLedger(paths).batch_events()
    except (OSError, ValueError, RunFileError):  # unreadable, or not text: nothing drawn
        logs = {}
    for events in logs.values():
        open_start: dict[str, Any] | None = None
        for event in events:
            with contextlib.suppress(ValueError, KeyError, TypeError):  # a torn or foreign one
                if datetime.fromisoformat(event["at"]) < origin:
                    continue  # an earlier prepare of the same run directory
                if event.get("event") == "start":
                    if open_start is not None:
                        tasks.append(_attempt(open_start, event["at"], "lost", origin))
                    open_start = event
                elif open_start is not None:
                    tasks.append(_attempt(open_start, event["at"], event["event"], origin))
                    open_start = None
    return tasks


def _attempt(start: dict[str, Any], end_at: str, outcome: str, origin: datetime) -> dict[str, Any]:
    return {
        "kind": "batch",
        "name": f"batch {start['batch']}",
        "lane": _lane(start),
        "start": _seconds(start["at"], origin),
        "end": _seconds(end_at, origin),
        "outcome": outcome,
    }


def stage_tasks(paths: RunPaths, origin: datetime) -> list[dict[str, Any]]:
    from scoring.stages.stage_files import task_records  # scoring.stages imports the report (merge)

    tasks = []
    for r in task_records(paths):
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a foreign task.json
            tasks.append(
                {
                    "kind": "stage",
                    "name": f"{r['stage']} {r['shard']}",
                    "stage": r["stage"],
                    "lane": _lane(r),
                    "start": _seconds(r["started_at"], origin),
                    "end": _seconds(r["finished_at"], origin),
                    "outcome": "done",
                }
            )
    return tasks


def _use(tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Wall span of a phase, its busy task-seconds, and busy / (processes x span)."""
    if not tasks:
        return {"tasks": 0, "processes": 0, "span_seconds": 0.0, "busy_seconds": 0.0}
    span = max(t["end"] for t in tasks) - min(t["start"] for t in tasks)
    busy = sum(t["end"] - t["start"] for t in tasks)
    lanes = len({t["lane"] for t in tasks})
    return {
        "tasks": len(tasks),
        "processes": lanes,
        "span_seconds": round(span, 3),
        "busy_seconds": round(busy, 3),
        "utilisation": round(busy / (lanes * span), 4) if span > 0 else 1.0,
    }


def timeline(paths: RunPaths, created_at: str | None) -> dict[str, Any]:
    """Tasks ordered by start, and how well each phase (stages, batches) used its processes."""
    if not created_at:
        return {"tasks": [], "stages": _use([]), "batches": _use([]), "per_stage": {}}
    origin = datetime.fromisoformat(created_at)
    stages = stage_tasks(paths, origin)
    batches = batch_attempts(paths, origin)
    per_stage: dict[str, float] = {}
    for task in stages:
        per_stage[task["stage"]] = round(
            per_stage.get(task["stage"], 0.0) + task["end"] - task["start"], 3
        )
    tasks = sorted(stages + batches, key=lambda t: (t["start"], t["lane"], t["name"]))
    return {
        "tasks": tasks,
        "stages": _use(stages),
        "batches": _use(batches),
        "per_stage": per_stage,
    }
