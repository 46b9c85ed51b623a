"""Issue 13 on the Celery fleet: each prepare stage is a chord of shard tasks."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.ledger import RunLedger
from scoring.rundir import RunPaths
from tests.fleet import workers_cli

STAGES = ("ingest", "count", "aggregate", "peer_stats")


def _stage_beat(paths: RunPaths, stage: str) -> bool:
    return (
        any(paths.heartbeat_dir.glob(f"{stage}-*.json")) if paths.heartbeat_dir.exists() else False
    )


def test_sharded_fleet_run_matches_the_local_engine(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    local = run_local(
        sample_dataset, Settings(batch_size=400), run_dir=tmp_path / "local", show_progress=False
    )
    fleet("w0")
    fleet("w1")
    result = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "400",
        "--shards",
        "7",
        "--run-id",
        "sharded",
        "--timeout",
        "240",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "sharded")
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    assert paths.quarantine.read_bytes() == local.quarantine.read_bytes()
    ledger = RunLedger(paths).read()
    assert ledger["stages"] == {stage: "7/7" for stage in STAGES}
    assert ledger["status"] == "merged"


def test_a_pool_child_killed_mid_stage_loses_and_doubles_nothing(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    reference = run_local(
        sample_dataset, Settings(batch_size=300), run_dir=tmp_path / "local", show_progress=False
    )
    victim = fleet("victim")
    started = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "300",
        "--shards",
        "12",
        "--run-id",
        "killed-stage",
        "--no-wait",
    )
    assert started.returncode == 0, started.stderr
    paths = RunPaths(tmp_path / "runs" / "killed-stage")
    deadline = time.monotonic() + 120
    while not _stage_beat(paths, "aggregate"):
        assert time.monotonic() < deadline, "never caught an aggregate shard in progress"
        time.sleep(0.005)
    for pid in victim.children():  # reject_on_worker_lost: the shard's message comes back
        os.kill(pid, signal.SIGKILL)
    from workers.cli import follow  # the same follower the CLI uses

    os.environ["CLAIDEX_RUN_ROOT"] = str(tmp_path / "runs")
    try:
        final = follow("killed-stage", timeout=240, show_progress=False)
    finally:
        os.environ.pop("CLAIDEX_RUN_ROOT", None)
    assert final["status"] == "merged", final
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()
    assert RunLedger(paths).read()["stages"]["aggregate"] == "12/12"
