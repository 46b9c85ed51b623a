"""The Celery fleet with its run root and dataset on S3: workers that share nothing but Redis
and the bucket (each its own working and temp directory) give the local engine's bytes,
and recover from faults by themselves (issue 25)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.devservices import PrivateRedis, PrivateS3
from tests.fleet import ROOT, CeleryProcess, fleet_env, wait_for, worker, workers_cli


class Host:
    """A worker 'host': its own working and temp directories, nothing else of the others'."""

    def __init__(self, home: Path, process: CeleryProcess) -> None:
        self.home = home
        self.process = process

    def parquet_left(self) -> list[Path]:
        return sorted(self.home.rglob("*.parquet"))


@pytest.fixture
def s3_fleet(redis_server: PrivateRedis, s3_env: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    env = fleet_env(redis_server.url, s3_env["root"])
    hosts: dict[str, Host] = {}

    def start(name: str, queues: str = "batches,runs", **extra: str) -> Host:
        home = tmp_path / f"host-{name}"
        (home / "tmp").mkdir(parents=True)
        host_env = {**env, "TMPDIR": str(home / "tmp"), **extra}
        proc = worker(host_env, home / "worker.log", name, queues, cwd=home)
        hosts[name] = Host(home, proc)
        return hosts[name]

    operator = tmp_path / "operator"
    operator.mkdir()
    yield {"env": env, "start": start, "hosts": hosts, "operator": operator}
    for host in hosts.values():
        host.process.stop()


@pytest.fixture(scope="module")
def s3_dataset(sample_dataset: Path, s3_server: PrivateS3) -> str:
    return s3_server.upload(sample_dataset, "datasets/fleet-sample")


def _local(sample_dataset: Path, tmp_path: Path, **settings: int) -> bytes:
    cfg = Settings(**settings)
    return run_local(sample_dataset, cfg, run_dir=tmp_path / "local", show_progress=False)


def _full(s3_fleet: dict, data: str, run_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return workers_cli(
        s3_fleet["env"],
        "full",
        "--data",
        data,
        "--run-id",
        run_id,
        "--timeout",
        "240",
        *extra,
        cwd=s3_fleet["operator"],
    )


def test_two_hosts_sharing_only_redis_and_the_bucket_give_the_local_bytes(
    sample_dataset: Path, s3_dataset: str, s3_fleet: dict, s3_env: dict[str, str], tmp_path: Path
) -> None:
    local = _local(sample_dataset, tmp_path, batch_size=300, shards=3)
    first = s3_fleet["start"]("w0")
    second = s3_fleet["start"]("w1", queues="batches,runs,incremental")
    result = _full(s3_fleet, s3_dataset, "f1", "--shards", "3", "--batch-size", "300")
    assert result.returncode == 0, result.stderr + result.stdout
    remote = RunPaths(f"{s3_env['root']}/f1")
    assert remote.store.read_bytes("scores.parquet") == local.scores.read_bytes()
    ledger = RunLedger(remote)
    assert ledger.read()["status"] == "merged"
    assert set(ledger.batch_executions().values()) == {1}
    for host in (first, second):
        assert host.parquet_left() == [], host.parquet_left()
        # (multiprocessing's own empty pymp-* folder aside: no file)
        assert not [p for p in (host.home / "tmp").rglob("*") if p.is_file()]
    assert not list(s3_fleet["operator"].iterdir())
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in json.dumps(ledger.read())
    # an enqueue against that run: the NPIs' rows again, the incremental run on the bucket
    picked = pl.read_parquet(local.scores).sample(n=4, seed=2).sort("npi")
    served = workers_cli(
        s3_fleet["env"], "enqueue", *picked["npi"].to_list(), "--wait", "--timeout", "120",
        cwd=s3_fleet["operator"],
    )  # fmt: skip
    assert served.returncode == 0, served.stderr + served.stdout
    run_id = re.search(r"run (\S+) \(merged, reference f1\)", served.stdout).group(1)
    redone = RunPaths(f"{s3_env['root']}/{run_id}").store.read_frame("scores.parquet")
    assert redone.equals(picked)
    for host in (first, second):
        assert host.parquet_left() == [], host.parquet_left()


def test_the_s3_fleet_rides_out_a_server_restart_and_a_killed_pool_child(
    sample_dataset: Path,
    s3_dataset: str,
    s3_fleet: dict,
    s3_env: dict[str, str],
    s3_server: PrivateS3,
    tmp_path: Path,
) -> None:
    """A pool child killed mid-stage (its lease lapses, the task is redelivered), then the S3
    server down for 3 s mid-scoring (requests retried within CLAIDEX_S3_OUTAGE_WINDOW): the
    run ends with the local bytes, no batch lost or scored twice into the result."""
    local = _local(sample_dataset, tmp_path, batch_size=100, shards=4)
    victim = s3_fleet["start"]("w0")
    follower = subprocess.Popen(
        [sys.executable, "-m", "workers", "full", "--data", s3_dataset, "--run-id", "faults",
         "--shards", "4", "--batch-size", "100", "--timeout", "240", "--quiet"],
        cwd=s3_fleet["operator"],
        env={**s3_fleet["env"], "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    paths = RunPaths(f"{s3_env['root']}/faults")
    ledger = RunLedger(paths)

    def stage_running() -> bool:
        stages = ("ingest-", "count-", "aggregate-", "peer_stats-")
        return any(name.startswith(stages) for name in ledger.heartbeats())

    wait_for(stage_running, what="a stage shard running", every=0.01)
    for pid in victim.process.children():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ledger.summary().get("batches_done", 0) >= 2, what="2 batches", every=0.01)
    s3_server.restart(down=3.0)
    out, err = follower.communicate(timeout=300)
    assert follower.returncode == 0, err + out
    assert paths.store.read_bytes("scores.parquet") == local.scores.read_bytes()
    assert ledger.read()["status"] == "merged"
    assert victim.parquet_left() == []
    log = (victim.home / "worker.log").read_text()
    assert "WorkerLostError" in log or "exited prematurely" in log, log[-2000:]


def test_two_concurrent_full_runs_then_hosts_lost_and_a_resume_on_s3(
    sample_dataset: Path, s3_dataset: str, s3_fleet: dict, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """Two `full` runs at once on one bucket (the same id twice: one gets it); then a run
    whose every worker host is killed mid-scoring, resumed on a new host: the same bytes,
    and only the batches without a chunk run again."""
    local = _local(sample_dataset, tmp_path, batch_size=400)
    first, second = s3_fleet["start"]("w0"), s3_fleet["start"]("w1")
    env = {**s3_fleet["env"], "PYTHONPATH": str(ROOT)}

    def start(run_id: str, batch_size: int = 400) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "workers", "full", "--data", s3_dataset, "--run-id", run_id,
             "--batch-size", str(batch_size), "--timeout", "240", "--quiet"],
            cwd=s3_fleet["operator"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    runs = [start("a"), start("b"), start("b")]
    outcomes = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]
    assert outcomes[0][0] == 0, outcomes[0]
    codes = sorted(code for code, _, _ in outcomes[1:])
    assert codes == [0, 2], outcomes  # one of the two `b` got the id, the other was refused
    refused = next(err for code, _, err in outcomes[1:] if code == 2)
    assert "run b already exists" in refused, refused
    for run_id in ("a", "b"):
        paths = RunPaths(f"{s3_env['root']}/{run_id}")
        assert paths.store.read_bytes("scores.parquet") == local.scores.read_bytes()
        assert set(RunLedger(paths).batch_executions().values()) == {1}

    lost = start("c", batch_size=100)
    paths = RunPaths(f"{s3_env['root']}/c")
    ledger = RunLedger(paths)
    wait_for(lambda: ledger.summary().get("batches_done", 0) >= 3, what="3 batches", every=0.01)
    for host in (first, second):  # every host gone at once, mid-scoring
        host.process.kill()
    lost.kill()
    lost.communicate()
    done_before = ledger.chunks_done()
    total = ledger.read()["batches_total"]
    assert len(done_before) < total, "the run ended before the hosts were lost"
    s3_fleet["start"]("w2")
    resumed = workers_cli(
        s3_fleet["env"], "resume", "c", "--timeout", "200", cwd=s3_fleet["operator"]
    )
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert paths.store.read_bytes("scores.parquet") == local.scores.read_bytes()
    executions = ledger.batch_executions()
    assert all(executions[i] == 1 for i in done_before), executions  # never scored again
    assert sorted(executions) == list(range(total))
