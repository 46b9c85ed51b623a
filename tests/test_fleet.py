"""The Celery fleet over a private Redis with real worker processes (issue: Celery fleet)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from claidex.devservices import PrivateRedis
from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.ledger import RunLedger
from scoring.rundir import RunPaths
from tests.fleet import CeleryProcess, fleet_env, worker, workers_cli


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def fleet(redis_server: PrivateRedis, tmp_path: Path):
    """Start worker processes on demand; all stopped after the test."""
    started: list[CeleryProcess] = []
    env = fleet_env(redis_server.url, tmp_path / "runs")

    def start(name: str, queues: str = "batches,runs", **extra: str) -> CeleryProcess:
        proc = worker({**env, **extra}, tmp_path / f"{name}.log", name, queues)
        started.append(proc)
        return proc

    start.env = env  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.stop()


@pytest.mark.parametrize("processes", [1, 2])
def test_chord_run_matches_the_local_engine(
    sample_dataset: Path, fleet, tmp_path: Path, processes: int
) -> None:
    local = run_local(
        sample_dataset, Settings(batch_size=400), run_dir=tmp_path / "local", show_progress=False
    )
    for index in range(processes):
        fleet(f"w{index}")
    result = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "400",
        "--run-id",
        "chord-run",
        "--timeout",
        "240",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "chord-run")
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    ledger = RunLedger(paths).summary()
    assert ledger["status"] == "merged" and ledger["engine"] == "celery"
    assert ledger["batches_done"] == ledger["batches_total"] >= 5
    workers_used = {b["worker"].split("@")[0] for b in RunLedger(paths).batch_states().values()}
    assert workers_used == {f"w{i}" for i in range(processes)}


def _running_batch(paths: RunPaths) -> int | None:
    running = RunLedger(paths).summary().get("batches_running", []) if paths.ledger.exists() else []
    return running[0] if running else None


def _kill_during_a_batch(paths: RunPaths, kill) -> int:
    """Call kill() while a batch is in progress; returns that batch (retries if it finished)."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = _running_batch(paths)
        if batch is not None:
            kill()
            if not paths.chunk(batch).exists():
                return batch
        time.sleep(0.005)
    raise AssertionError("never caught a batch in progress")


@pytest.mark.parametrize("target", ["pool child", "main process"])
def test_worker_killed_mid_batch_loses_nothing(
    sample_dataset: Path, fleet, tmp_path: Path, target: str
) -> None:
    import os
    import signal

    from polars import read_parquet

    reference = run_local(
        sample_dataset, Settings(batch_size=40), run_dir=tmp_path / "local", show_progress=False
    )
    victim = fleet("victim")
    started = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "40",
        "--run-id",
        "killed",
        "--no-wait",
    )
    assert started.returncode == 0, started.stderr
    paths = RunPaths(tmp_path / "runs" / "killed")
    if target == "pool child":
        # A killed pool child: reject_on_worker_lost requeues its batch at once.
        batch = _kill_during_a_batch(
            paths, lambda: [os.kill(pid, signal.SIGKILL) for pid in victim.children()]
        )
    else:
        # The whole worker dies (main process too): the batch comes back after the
        # broker's visibility timeout (8 s here), to the worker started next.
        batch = _kill_during_a_batch(paths, victim.kill)
        fleet("rescuer")
    result = workers_cli(fleet.env, "status", "killed")
    summary = __import__("json").loads(result.stdout)
    assert summary["status"] != "failed", summary
    from workers.cli import follow  # the same follower the CLI uses

    os.environ.update({"CLAIDEX_RUN_ROOT": str(tmp_path / "runs")})
    try:
        final = follow("killed", timeout=180, show_progress=False)
    finally:
        os.environ.pop("CLAIDEX_RUN_ROOT", None)
    assert final["status"] == "merged", final
    scores = read_parquet(paths.scores)
    assert scores["npi"].is_unique().all() and scores.height == final["providers_scored"]
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.chunk(batch).exists()
