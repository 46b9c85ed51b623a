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
    local = run_local(sample_dataset, Settings(batch_size=400), run_dir=tmp_path / "local",
                      show_progress=False)
    for index in range(processes):
        fleet(f"w{index}")
    result = workers_cli(fleet.env, "full", "--data", str(sample_dataset), "--batch-size", "400",
                         "--run-id", "chord-run", "--timeout", "240")
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "chord-run")
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    ledger = RunLedger(paths).summary()
    assert ledger["status"] == "merged" and ledger["engine"] == "celery"
    assert ledger["batches_done"] == ledger["batches_total"] >= 5
    workers_used = {b["worker"].split("@")[0] for b in RunLedger(paths).batch_states().values()}
    assert workers_used == {f"w{i}" for i in range(processes)}
