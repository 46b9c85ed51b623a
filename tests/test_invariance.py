"""SPEC §6.1: scores do not depend on batch size or worker count (byte-identical output)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from claidex.local_engine import run_local
from claidex.sample_data import generate
from scoring.config import Settings


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("small")
    generate(directory, providers=400, seed=5)
    return directory


def _scores_file(data: Path, run_dir: Path, *, batch_size: int, workers: int) -> Path:
    cfg = Settings(batch_size=batch_size, workers=workers)
    return run_local(data, cfg, run_dir=run_dir, show_progress=False).scores


def test_batch_size_and_workers_give_identical_bytes(small_dataset: Path, tmp_path: Path) -> None:
    reference = _scores_file(small_dataset, tmp_path / "one-batch", batch_size=10**9, workers=1)
    reference_frame = pl.read_parquet(reference)
    assert reference_frame.height > 200
    assert reference_frame["npi"].is_sorted()
    for batch_size, workers in [(1, 1), (7, 1), (1000, 1), (7, 2), (50, 2)]:
        produced = _scores_file(
            small_dataset,
            tmp_path / f"b{batch_size}-w{workers}",
            batch_size=batch_size,
            workers=workers,
        )
        assert_frame_equal(pl.read_parquet(produced), reference_frame)
        assert produced.read_bytes() == reference.read_bytes(), (batch_size, workers)


def test_batches_read_only_their_own_slice(small_dataset: Path, tmp_path: Path) -> None:
    """Each batch directory holds exactly its NPIs' rows; together they cover everyone once."""
    paths = run_local(
        small_dataset, Settings(batch_size=60), run_dir=tmp_path / "r", show_progress=False
    )
    scores = pl.read_parquet(paths.scores)
    seen: list[pl.Series] = []
    batch = 0
    while paths.batch_providers(batch).exists():
        providers = pl.read_parquet(paths.batch_providers(batch))
        years = pl.read_parquet(paths.batch_provider_years(batch))
        assert providers.height <= 60
        assert set(years["npi"].unique()) == set(providers["npi"])
        seen.append(providers["npi"])
        batch += 1
    assert batch == -(-scores.height // 60)
    everyone = pl.concat(seen)
    assert everyone.is_unique().all()
    assert everyone.len() == scores.height
