"""Issue 13 on the Celery fleet: each prepare stage is a chord of shard tasks."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import polars as pl
import psycopg
import pytest

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths, read_json
from scoring.stages.stage_files import missing_shards
from tests.fleet import beat, wait_for, workers_cli

STAGES = ("ingest", "count", "aggregate", "peer_stats")


def _stage_beat(paths: RunPaths, stage: str) -> bool:
    return (
        any(paths.heartbeat_dir.glob(f"{stage}-*.json")) if paths.heartbeat_dir.exists() else False
    )


# 64 shards is tests/test_sharding.py's (any_shard_count[64-97-1], the same stage bodies);
# here 16 shards over two workers already takes every chord path the fleet has.
@pytest.mark.parametrize(("shards", "batch_size"), [(3, 700), (16, 400)])
def test_sharded_fleet_run_matches_the_local_engine(
    sample_dataset: Path, fleet, tmp_path: Path, shards: int, batch_size: int
) -> None:
    local = run_local(
        sample_dataset, Settings(batch_size=1_000), run_dir=tmp_path / "local", show_progress=False
    )
    fleet("w0")
    fleet("w1")
    result = workers_cli(
        fleet.env, "full", "--data", str(sample_dataset), "--batch-size", str(batch_size),
        "--shards", str(shards), "--run-id", "sharded", "--timeout", "240",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "sharded")
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    assert paths.quarantine.read_bytes() == local.quarantine.read_bytes()
    ledger = RunLedger(paths).read()
    assert ledger["stages"] == {stage: f"{shards}/{shards}" for stage in STAGES}
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


def _follow(run_id: str, runs: Path, timeout: float = 240) -> dict:
    from workers.cli import follow  # the same follower the CLI uses

    os.environ["CLAIDEX_RUN_ROOT"] = str(runs)
    try:
        return follow(run_id, timeout=timeout, show_progress=False)
    finally:
        os.environ.pop("CLAIDEX_RUN_ROOT", None)


def _start(env: dict[str, str], data: Path, run_id: str, shards: int) -> None:
    started = workers_cli(
        env, "full", "--data", str(data), "--batch-size", "300", "--shards", str(shards),
        "--run-id", run_id, "--no-wait",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr


def _no_shard_twice(paths: RunPaths, reference: RunPaths, shards: int) -> None:
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()
    assert read_json(paths.input_counts) == read_json(reference.input_counts)  # nothing doubled
    assert RunLedger(paths).read()["stages"] == {stage: f"{shards}/{shards}" for stage in STAGES}


def test_a_redis_restart_between_two_stages_is_resumed_and_publishes_once(
    sample_dataset: Path, fleet, redis_server, database_url: str, tmp_path: Path
) -> None:
    """Ingest done, count's chord (or ingest's callback) in Redis only: the restart loses
    it, and beat's watchdog sends the run on from the done markers."""
    reference = run_local(
        sample_dataset, Settings(batch_size=300), run_dir=tmp_path / "local", show_progress=False
    )
    env = {**fleet.env, "DATABASE_URL": database_url, "CLAIDEX_WATCHDOG_INTERVAL": "1"}
    victim = fleet("w0", DATABASE_URL=database_url)
    watchdog = beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")
    try:
        _start(env, sample_dataset, "between", 6)
        paths = RunPaths(tmp_path / "runs" / "between")
        wait_for(
            lambda: paths.ledger.exists() and _ingested(paths, 6), what="ingest done", every=0.001
        )
        os.killpg(victim.pid, signal.SIGSTOP)
        assert missing_shards(paths, "peer_stats", 6) == list(range(6))  # between stages
        redis_server.restart()
        os.killpg(victim.pid, signal.SIGCONT)
        final = _follow("between", tmp_path / "runs")
    finally:
        watchdog.stop()
    assert final["status"] == "published", final
    _no_shard_twice(paths, reference, 6)
    ledger = RunLedger(paths).read()
    assert ledger["publish_count"] == 1
    assert json.loads(paths.watchdog.read_text())["actions"] >= 1
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(DISTINCT npi) FROM provider_risk_scores").fetchone()[0]
    assert rows == ledger["rows_published"] == pl.read_parquet(paths.scores).height


def _ingested(paths: RunPaths, shards: int) -> bool:
    try:
        return missing_shards(paths, "ingest", shards) == []
    except OSError:
        return False


def test_a_worker_main_process_killed_mid_stage_is_rescued(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    """The whole worker dies inside an aggregate shard: its message would return only after
    the visibility timeout; the watchdog re-sends the stage's missing shards to a rescuer."""
    reference = run_local(
        sample_dataset, Settings(batch_size=300), run_dir=tmp_path / "local", show_progress=False
    )
    # the dead delivery would return only after 10 min, past the follow's timeout: only
    # the watchdog's re-sent start can finish the run in time
    slow_return = {
        "CLAIDEX_VISIBILITY_TIMEOUT": "600",
        "CLAIDEX_TASK_TIME_LIMIT": "500",
        "CLAIDEX_TASK_SOFT_TIME_LIMIT": "450",
    }
    victim = fleet("victim", **slow_return)
    env = {**fleet.env, **slow_return, "CLAIDEX_WATCHDOG_INTERVAL": "1"}
    _start(env, sample_dataset, "killed-main", 8)
    paths = RunPaths(tmp_path / "runs" / "killed-main")
    wait_for(lambda: _stage_beat(paths, "aggregate"), what="an aggregate shard", every=0.001)
    victim.kill()
    fleet("rescuer", **slow_return, CLAIDEX_WATCHDOG_INTERVAL="1")
    watchdog = beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")
    try:
        final = _follow("killed-main", tmp_path / "runs", timeout=180)
    finally:
        watchdog.stop()
    assert final["status"] == "merged", final
    _no_shard_twice(paths, reference, 8)
    assert json.loads(paths.watchdog.read_text())["actions"] >= 1


def test_pool_children_past_the_memory_limit_are_replaced_and_the_run_is_the_same(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    """CLAIDEX_WORKER_MAX_MEMORY_MB (Celery's worker_max_memory_per_child, peak RSS): a
    child past it is replaced after its task, so a population step never starts in a child
    still holding an earlier task's heap. At 1 MB every child is replaced after every task;
    the run is unchanged."""
    local = run_local(
        sample_dataset, Settings(batch_size=1_000), run_dir=tmp_path / "local", show_progress=False
    )
    # three children: Celery replaces a recycled one within 5 s (its pool maintenance timer)
    recycled = fleet("recycled", concurrency=3, CLAIDEX_WORKER_MAX_MEMORY_MB="1")
    result = workers_cli(
        fleet.env, "full", "--data", str(sample_dataset), "--batch-size", "1000",
        "--shards", "2", "--run-id", "recycled", "--timeout", "240",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "recycled")
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    log = (tmp_path / "recycled.log").read_text()
    children = set(re.findall(r"ForkPoolWorker-\d+\] Task claidex\.\w+\[[^]]+\] succeeded", log))
    tasks = log.count("] succeeded in ")
    assert tasks >= 8 and len(children) == tasks, log[-3000:]  # one child per task
    assert recycled.process.poll() is None  # the worker itself carries on
