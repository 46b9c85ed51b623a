"""Incremental scoring against the latest full run (SPEC §6.6), on the local steps."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.errors import InputError
from scoring.inputs.npi import checked_npis
from scoring.runs.store import RunPaths
from scoring.stages.incremental import (
    latest_full_run,
    prepare_incremental,
)
from scoring.stages.merge import merge_and_calibrate
from scoring.stages.score_batch import score_batch


def _incremental(full: RunPaths, data: Path, run_dir: Path, npis: list[str]) -> pl.DataFrame:
    paths = RunPaths(run_dir)
    prepare_incremental(paths, full, data, checked_npis(npis))
    score_batch(paths, 0)
    return merge_and_calibrate(paths, full)


def test_unchanged_npis_reproduce_the_full_run_exactly(
    sample_dataset: Path, tmp_path: Path
) -> None:
    full = run_local(
        sample_dataset, Settings(run_root=tmp_path), run_dir=tmp_path / "full", show_progress=False
    )
    assert latest_full_run(tmp_path, published_only=False) == full
    scores = pl.read_parquet(full.scores)
    picked = scores.sample(n=100, seed=3).sort("npi")
    redone = _incremental(full, sample_dataset, tmp_path / "inc", picked["npi"].to_list())
    assert_frame_equal(redone, picked)


def test_changed_npi_is_rescored_against_the_reference(
    sample_dataset: Path, tmp_path: Path
) -> None:
    full = run_local(sample_dataset, Settings(), run_dir=tmp_path / "full", show_progress=False)
    scores = pl.read_parquet(full.scores)
    target = scores.sort("r_raw")["npi"][0]  # the lowest risk provider
    changed = tmp_path / "changed"
    changed.mkdir()
    for file in sample_dataset.glob("*.parquet"):
        (changed / file.name).write_bytes(file.read_bytes())
    payments = pl.read_parquet(changed / "payments_combined.parquet")
    payments.with_columns(
        pl.when(pl.col("npi") == target).then(pl.col("payments") * 40).otherwise(pl.col("payments"))
    ).write_parquet(changed / "payments_combined.parquet")
    redone = _incremental(full, changed, tmp_path / "inc", [target])
    assert redone["r_raw"][0] > scores.filter(pl.col("npi") == target)["r_raw"][0]
    expected = round(100 * (scores["r_raw"] < redone["r_raw"][0]).sum() / (scores.height - 1), 2)
    assert redone["risk_score"][0] == expected


def test_malformed_and_unknown_npis(sample_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"malformed NPI\(s\): '123' \(npi not 10 digits\), "
        r"'1234567890' \(npi check digit invalid\)",
    ):
        checked_npis(["123", "1234567890"])
    full = run_local(sample_dataset, Settings(), run_dir=tmp_path / "full", show_progress=False)
    known = pl.read_parquet(full.scores)["npi"][0]
    unknown = "1234567893"  # valid check digit, no payment data
    with pytest.raises(InputError, match=f"no payment data for NPI\\(s\\): {unknown}"):
        _incremental(full, sample_dataset, tmp_path / "only-unknown", [unknown])
    mixed = _incremental(full, sample_dataset, tmp_path / "mixed", [known, unknown])
    assert mixed["npi"].to_list() == [known]
    quarantine = pl.read_parquet(tmp_path / "mixed" / "quarantine.parquet")
    assert (
        quarantine.filter(pl.col("npi") == unknown)["reason"]
        .item()
        .startswith("no payment data in")
    )


def test_the_fleet_follower_waits_for_the_publish() -> None:
    from workers.cli import finished

    assert not finished({"status": "merged", "will_publish": True})  # publish still running
    assert finished({"status": "published", "will_publish": True})
    assert finished({"status": "merged", "will_publish": False})  # --no-publish / no database
    assert finished({"status": "merged"})
    assert not finished({"status": "scoring"})
