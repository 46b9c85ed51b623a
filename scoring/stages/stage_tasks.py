"""One stage task by name, as every engine runs it (messages carry names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scoring.errors import RunStateError
from scoring.runs.ledger import task_host, utc_now
from scoring.runs.plan import read_plan
from scoring.runs.store import RunPaths, run_store
from scoring.stages.aggregate import aggregate
from scoring.stages.count import count
from scoring.stages.export import EXPORT, export
from scoring.stages.fused import FUSED, fused
from scoring.stages.ingest import ingest
from scoring.stages.peer_groups import peer_stats
from scoring.stages.stage_files import TASK, stage_key

STAGE_BODIES: dict[str, Callable[[RunPaths, int], dict[str, Any]]] = {
    EXPORT: export,
    FUSED: fused,
    "ingest": ingest,
    "count": count,
    "aggregate": aggregate,
    "peer_stats": peer_stats,
}


def run_stage_task(paths: RunPaths, stage: str, index: int) -> dict[str, Any]:
    """One shard task of one stage, as every engine calls it (by name: messages carry names)."""
    if stage not in STAGE_BODIES:
        msg = f"unknown stage {stage!r} (stages: {', '.join(STAGE_BODIES)})"
        raise RunStateError(msg)
    shards = read_plan(paths)[2]
    if not 0 <= index < shards:
        msg = f"run {paths.run_id}: {stage} shard {index} out of range 0..{shards - 1}"
        raise RunStateError(msg)
    started = utc_now("milliseconds")
    summary = STAGE_BODIES[stage](paths, index)
    task = {"started_at": started, "finished_at": utc_now("milliseconds"), **task_host()}
    run_store(paths).write_json(stage_key(stage, index, TASK), task)  # the report's timeline
    return summary
