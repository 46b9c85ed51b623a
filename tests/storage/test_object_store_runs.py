"""Runs whose run root and dataset live on S3 (SeaweedFS, the real server): the same bytes
as a run on local files, and every command that takes a run works on one (issue 25)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.devservices import PrivateS3

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3_dataset(sample_dataset: Path, s3_server: PrivateS3) -> str:
    return s3_server.upload(sample_dataset, "datasets/sample")


@pytest.mark.parametrize(("shards", "workers"), [(0, 1), (3, 2)])
def test_a_local_run_on_s3_gives_the_bytes_of_a_run_on_local_files(
    sample_dataset: Path,
    s3_dataset: str,
    s3_env: dict[str, str],
    tmp_path: Path,
    shards: int,
    workers: int,
) -> None:
    """Fused (one shard, in this process) and sharded (a spawned pool reading buckets with
    ranged GETs): the same scores, quarantine and input counts as on local files."""
    cfg = Settings(batch_size=500, shards=shards, workers=workers)
    local = run_local(sample_dataset, cfg, run_dir=tmp_path / "local", show_progress=False)
    remote = run_local(s3_dataset, cfg, run_dir=f"{s3_env['root']}/r1", show_progress=False)
    assert remote.url == f"{s3_env['root']}/r1"
    store = remote.store
    assert store.read_bytes("scores.parquet") == local.scores.read_bytes()
    assert store.read_frame("quarantine.parquet").equals(pl.read_parquet(local.quarantine))
    assert store.read_json("input_counts.json") == json.loads(local.input_counts.read_text())
    state = RunLedger(remote).read()
    assert state["status"] == "merged" and state["source"] == s3_dataset
    assert RunLedger(remote).summary()["batches_done"] == state["batches_total"]
    assert not list(tmp_path.glob("r1")), "nothing of the S3 run on local disk"


def _claidex(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claidex.cli", *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_lines_take_s3_data_run_dirs_and_run_roots(
    sample_dataset: Path, s3_dataset: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """run, status, resume, report, compare and explain on a run that is only on S3, from a
    working directory with nothing in it; no secret in any output."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"CLAIDEX_RUN_ROOT": s3_env["root"], "CLAIDEX_WORKERS": "1"}
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    run = _claidex(
        env, "run", "--data", s3_dataset, "--run-dir", f"{s3_env['root']}/cli", "--quiet", cwd=empty
    )
    assert run.returncode == 0, run.stderr
    assert f"scores: {s3_env['root']}/cli/scores.parquet" in run.stdout
    status = _claidex(env, "status", "cli", "--json", cwd=empty)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "merged"
    by_url = _claidex(env, "status", f"{s3_env['root']}/cli", "--json", cwd=empty)
    assert json.loads(by_url.stdout)["run_id"] == "cli"
    resumed = _claidex(env, "resume", "cli", "--quiet", cwd=empty)
    assert resumed.returncode == 0, resumed.stderr
    report = _claidex(env, "report", "cli", cwd=empty)
    assert report.returncode == 0, report.stderr
    assert RunPaths(f"{s3_env['root']}/cli").store.exists("report.html")
    local = run_local(sample_dataset, Settings(), run_dir=tmp_path / "local", show_progress=False)
    compared = _claidex(env, "compare", "cli", str(local.root), cwd=empty)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    npi = pl.read_parquet(local.scores)["npi"][0]
    explained = _claidex(env, "explain", npi, "--run", "cli", "--json", cwd=empty)
    assert explained.returncode == 0, explained.stderr
    assert all(c["equal"] for c in json.loads(explained.stdout)["checks"].values())
    outputs = [p.stdout + p.stderr for p in (run, status, resumed, report, compared, explained)]
    assert not any(s3_env["AWS_SECRET_ACCESS_KEY"] in text for text in outputs)
    assert not list(empty.rglob("*")), "the commands left files in the working directory"


def test_refused_credentials_fail_in_one_line_before_any_work(
    sample_dataset: Path, s3_env: dict[str, str], s3_server: PrivateS3, tmp_path: Path
) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    refused = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret", "CLAIDEX_S3_OUTAGE_WINDOW": "2"}
    target = f"{s3_env['root']}/denied"
    result = _claidex(
        refused, "run", "--data", str(sample_dataset), "--run-dir", target, "--quiet", cwd=tmp_path
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "denied" in lines[0] and "wrong-secret" not in result.stderr
    # (a bucket that does not exist: SeaweedFS creates it on the first write, so only the
    # refused credentials are a server-side refusal here)


def test_a_postgres_sourced_run_writes_its_snapshot_to_the_bucket(
    s3_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """--source postgres on an S3 run root: each export task PUTs its NPI range's parts under
    the run's source/ prefix, and the run gives the bytes of the same run on local files."""
    from claidex.dev.sample import generate
    from claidex.local_engine import run_local_from_postgres
    from scoring.db.connection import connect
    from scoring.db.load import load_dataset

    data = tmp_path / "production-data"
    generate(data, providers=1500, seed=31, layout="production")
    with connect(database_url) as conn:
        load_dataset(conn, data)
    cfg = Settings(shards=3, workers=1, batch_size=500)
    local = run_local_from_postgres(database_url, cfg, run_dir=tmp_path / "pg", show_progress=False)
    remote = run_local_from_postgres(
        database_url, cfg, run_dir=f"{s3_env['root']}/pg", show_progress=False
    )
    assert remote.store.read_bytes("scores.parquet") == local.scores.read_bytes()
    parts = remote.store.list_keys("source/payments_combined", "part-00002.parquet")
    assert parts == ["source/payments_combined/part-00002.parquet"]
    assert not (tmp_path / "pg-s3").exists()
