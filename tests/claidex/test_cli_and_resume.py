"""The claidex command end to end, the ledger shown by `status`, and resume after a failure."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from claidex.local_engine import resume_local
from scoring.config import Settings
from scoring.errors import RunFileError, RunStateError
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from scoring.stages.drive import prepare
from scoring.stages.merge import merge_and_calibrate
from scoring.stages.score_batch import score_batch
from tests.builders import claidex_cli


def test_generate_run_status_from_the_command_line(tmp_path: Path) -> None:
    generated = claidex_cli("generate", str(tmp_path / "data"), "--providers", "800", "--seed", "3")
    assert generated.returncode == 0, generated.stderr
    summary = json.loads(generated.stdout)
    assert summary["providers"] == 800 and summary["payment_rows"] > 5000
    for name in (
        "providers",
        "payments_combined",
        "exclusions",
        "entities",
        "ownership",
        "entity_exclusions",
        "planted",
    ):
        assert (tmp_path / "data" / f"{name}.parquet").exists()

    run = claidex_cli(
        "run",
        "--data",
        str(tmp_path / "data"),
        "--run-dir",
        str(tmp_path / "run"),
        "--batch-size",
        "100",
        "--workers",
        "2",
    )
    assert run.returncode == 0, run.stderr
    scores = pl.read_parquet(tmp_path / "run" / "scores.parquet")
    assert f"{scores.height:,} providers scored" in run.stdout
    for text in ("High", "Elevated", "Top flags", "quarantined rows", "Planted anomalies"):
        assert text in run.stdout

    status = claidex_cli("status", str(tmp_path / "run"), "--json")
    assert status.returncode == 0
    ledger = json.loads(status.stdout)
    assert ledger["status"] == "merged"
    assert ledger["batches_done"] == ledger["batches_total"] == -(-scores.height // 100)
    assert ledger["batches_failed"] == []
    assert set(ledger["timings"]) == {"prepare", "score", "merge"}
    assert len(ledger["input_fingerprint"]) == 32


def test_resume_runs_only_missing_batches(sample_dataset: Path, tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    manifest = prepare(paths, sample_dataset, Settings(batch_size=300))
    assert manifest.batches_total >= 4
    for index in range(manifest.batches_total):
        if index != 2:
            score_batch(paths, index)
    with pytest.raises(RunStateError, match=r"1 batch\(es\) missing: 2"):
        merge_and_calibrate(paths)
    assert RunLedger(paths).read()["status"] == "failed"
    assert not paths.scores.exists()

    before = {i: paths.chunk(i).stat().st_mtime_ns for i in range(manifest.batches_total) if i != 2}
    resume_local(paths, workers=1, show_progress=False)
    after = {i: paths.chunk(i).stat().st_mtime_ns for i in before}
    assert after == before  # finished batches were not re-run
    assert RunLedger(paths).summary()["batches_done"] == manifest.batches_total
    assert pl.read_parquet(paths.scores).height == manifest.providers_scored


def test_rerunning_a_batch_rewrites_the_same_bytes(sample_dataset: Path, tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    prepare(paths, sample_dataset, Settings(batch_size=500))
    score_batch(paths, 1)
    first = paths.chunk(1).read_bytes()
    score_batch(paths, 1)
    assert paths.chunk(1).read_bytes() == first


def test_failed_batch_is_recorded_in_the_ledger(sample_dataset: Path, tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    prepare(paths, sample_dataset, Settings(batch_size=500))
    paths.batch_provider_years(0).write_bytes(b"not parquet")
    with pytest.raises(RunFileError, match=r"provider_years\.parquet: cannot read"):
        score_batch(paths, 0)
    state = RunLedger(paths).batch_states()[0]
    assert state["status"] == "failed" and "provider_years.parquet" in state["error"]
    assert RunLedger(paths).summary()["batches_failed"] == [0]


def test_report_ranks_flags_and_reasons_by_count(sample_dataset: Path, tmp_path: Path) -> None:
    from claidex.local_engine import run_local

    paths = run_local(sample_dataset, Settings(), run_dir=tmp_path / "run", show_progress=False)
    report = json.loads(paths.report.read_text())
    counts = list(report["top_flags"].values())
    assert len(counts) >= 3
    assert counts == sorted(counts, reverse=True)
    scores = pl.read_parquet(paths.scores)
    flagged = scores.select(pl.col("flags").explode()).drop_nulls().to_series()
    assert report["top_flags"] == dict(
        sorted(flagged.value_counts().rows(), key=lambda row: (-row[1], row[0]))
    )
