"""A run directory is reusable and merge accepts only chunks of the current prepare."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from claidex.dev.sample import generate
from claidex.local_engine import resume_local, run_local
from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.runs.store import RunPaths
from scoring.stages.drive import prepare
from scoring.stages.merge import merge_and_calibrate
from scoring.stages.score_batch import score_batch


def _run(data: Path, run_dir: Path, batch_size: int) -> pl.DataFrame:
    paths = run_local(data, Settings(batch_size=batch_size), run_dir=run_dir, show_progress=False)
    return pl.read_parquet(paths.scores)


def test_reusing_a_run_directory_starts_clean(sample_dataset: Path, tmp_path: Path) -> None:
    reference = _run(sample_dataset, tmp_path / "fresh", 10**9)
    reused = tmp_path / "reused"
    _run(sample_dataset, reused, 100)  # many small chunks left behind
    assert_frame_equal(_run(sample_dataset, reused, 700), reference)
    assert len(list((reused / "chunks").glob("*.parquet"))) == -(-reference.height // 700)


def test_a_directory_used_for_another_dataset_gives_this_datasets_scores(
    sample_dataset: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-data"
    generate(other, providers=3000, seed=99)
    _run(other, tmp_path / "run", 500)
    assert_frame_equal(
        _run(sample_dataset, tmp_path / "run", 500), _run(sample_dataset, tmp_path / "clean", 500)
    )


def test_stale_chunk_is_rejected_removed_and_rescored(sample_dataset: Path, tmp_path: Path) -> None:
    reference = _run(sample_dataset, tmp_path / "reference", 400)
    old, new = RunPaths(tmp_path / "old"), RunPaths(tmp_path / "new")
    _run(sample_dataset, old.root, 400)
    manifest = prepare(new, sample_dataset, Settings(batch_size=400))
    for index in range(manifest.batches_total):
        score_batch(new, index)
    shutil.copy(old.chunk(1), new.chunk(1))  # a late worker of another prepare wrote batch 1
    with pytest.raises(RunStateError, match=r"1 chunk\(s\) do not belong to this prepare.*: 1$"):
        merge_and_calibrate(new)
    assert not new.chunk(1).exists()
    resume_local(new, workers=1, show_progress=False)
    assert_frame_equal(pl.read_parquet(new.scores), reference)


def test_a_torn_or_foreign_stage_file_is_named_and_glob_characters_are_plain(
    tmp_path: Path,
) -> None:
    """Reading one bucket of many shard files: a torn file, or one of other columns, is
    named by its path; a run root holding '*' or '[' reads only its own files."""
    from scoring.errors import RunFileError
    from scoring.runs.store import read_buckets, write_bucketed_atomic

    root = tmp_path / "runs[1]*"
    frame = pl.DataFrame({"npi": [1, 2, 3, 4], "v": ["a", "b", "c", "d"]})
    files = []
    for task in range(3):
        path = root / f"{task:05d}" / "rows.parquet"
        write_bucketed_atomic(frame.with_columns(b=pl.col("npi") % 2), path, "b")
        files.append(path)
    decoy = tmp_path / "runs[1]-other" / "00000" / "rows.parquet"  # '*' would match it
    write_bucketed_atomic(frame.with_columns(b=pl.lit(1, pl.Int64)), decoy, "b")
    odd = read_buckets(files, "b", 1)
    assert odd.to_dict(as_series=False) == {"npi": [1, 3] * 3, "v": ["a", "c"] * 3}

    files[1].write_bytes(b"PAR1 torn")
    with pytest.raises(RunFileError, match=re.escape(f"{files[1]}: cannot read")):
        read_buckets(files, "b", 1)
    write_bucketed_atomic(frame.with_columns(b=pl.col("npi") % 2, v=pl.lit(1.5)), files[1], "b")
    with pytest.raises(RunFileError, match=re.escape(f"{files[1]}: its columns")):
        read_buckets(files, "b", 1)
