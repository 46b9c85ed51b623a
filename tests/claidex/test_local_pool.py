"""The local engine's pool size: processes only where a run is big enough to pay for them."""

from __future__ import annotations

import os
from pathlib import Path

from claidex.local_engine import LocalPool
from scoring.config import Settings
from scoring.runs.plan import planned_payment_rows, write_plan
from scoring.runs.store import RunPaths


def test_auto_workers_follow_the_planned_payment_rows(sample_dataset: Path, tmp_path: Path) -> None:
    """workers 0 (the default): a plan of fewer than two `shard_rows` of payment rows runs
    in this process (a spawned worker costs ~1 s); a bigger one gets a process per core.
    An explicit count is kept whatever the size."""
    small, big = RunPaths(tmp_path / "small"), RunPaths(tmp_path / "big")
    write_plan(small, sample_dataset, Settings(shards=3), "f")  # explicit shards: counted too
    write_plan(big, sample_dataset, Settings(shard_rows=100), "f")
    rows = planned_payment_rows(small)
    assert rows is not None and rows == planned_payment_rows(big) and rows >= 200
    decided = {}
    for name, paths in (("small", small), ("big", big)):
        pool = LocalPool(Settings().workers)
        pool._decide(paths)
        decided[name] = pool.workers
    assert decided == {"small": 1, "big": len(os.sched_getaffinity(0))}
    fixed = LocalPool(1)
    fixed._decide(big)
    assert fixed.workers == 1


def test_a_plan_without_its_payment_rows_goes_by_its_shards(
    sample_dataset: Path, tmp_path: Path
) -> None:
    """A plan from before the count was recorded, or a Postgres run without an estimate:
    two or more shards get the processes, one shard none."""
    import json

    decided = []
    for shards in (1, 3):
        paths = RunPaths(tmp_path / f"s{shards}")
        write_plan(paths, sample_dataset, Settings(shards=shards), "f")
        plan_file = paths.root / "stages" / "plan.json"
        plan = json.loads(plan_file.read_text())
        plan.pop("payment_rows")
        plan_file.write_text(json.dumps(plan))
        assert planned_payment_rows(paths) is None
        pool = LocalPool(0)
        pool._decide(paths)
        decided.append(pool.workers)
    assert decided == [1, min(3, len(os.sched_getaffinity(0)))]
