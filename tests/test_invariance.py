"""SPEC §6.1: scores do not depend on batch size or worker count (byte-identical output)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from claidex.dev.sample import generate
from claidex.local_engine import run_local
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
    for batch_size, workers in [(1, 1), (7, 1), (7, 2), (50, 2)]:  # (1000, 1): one batch, as 10**9
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


def _with_attribute_ties(source: Path, target: Path, *, seed: int, row_group_size: int) -> None:
    """A copy whose payment rows come in another order and row-group split, where many NPIs
    without a provider taxonomy/state carry several values within one (program, year)."""
    import shutil

    shutil.copytree(source, target)
    providers = pl.read_parquet(source / "providers.parquet")
    blank = providers["npi"].sort().gather_every(7)
    providers.with_columns(
        pl.when(pl.col("npi").is_in(blank.implode())).then(pl.lit("")).otherwise(pl.col(c)).alias(c)
        for c in ("taxonomy_1", "state")
    ).write_parquet(target / "providers.parquet")
    payments = pl.read_parquet(source / "payments_combined.parquet").sort(
        "npi", "year", "program", "payments", "claims"
    )
    line = pl.int_range(pl.len()).over("npi", "year", "program")
    payments = payments.with_columns(
        pl.when(line % 3 == 1)
        .then(pl.lit("207Q00000X"))
        .otherwise(pl.col("taxonomy"))
        .alias("taxonomy"),
        pl.when(line % 2 == 1).then(pl.lit("AK")).otherwise(pl.col("state")).alias("state"),
    )
    payments.sample(fraction=1.0, shuffle=True, seed=seed).write_parquet(
        target / "payments_combined.parquet", row_group_size=row_group_size
    )


def test_row_order_and_file_split_do_not_change_a_byte(small_dataset: Path, tmp_path: Path) -> None:
    """Issue 11.1: the taxonomy/state fallback breaks ties by value, never by row order."""
    outputs = []
    for seed, row_group in [(1, 1_000_000), (2, 977), (3, 64)]:
        data = tmp_path / f"data-{seed}"
        _with_attribute_ties(small_dataset, data, seed=seed, row_group_size=row_group)
        cfg = Settings(validation_chunk_rows=1_500 if seed == 3 else 4_000_000)
        outputs.append(run_local(data, cfg, run_dir=tmp_path / f"r{seed}", show_progress=False))
    scores = pl.read_parquet(outputs[0].scores)
    tied = pl.read_parquet(tmp_path / "data-1" / "providers.parquet").filter(
        pl.col("taxonomy_1") == ""
    )
    assert scores.join(tied, on="npi")["peer_taxonomy"].is_in(["207Q00000X"]).any()
    for other in outputs[1:]:
        assert other.scores.read_bytes() == outputs[0].scores.read_bytes()


def test_a_stray_future_row_never_moves_the_window(small_dataset: Path, tmp_path: Path) -> None:
    """Issue 11.3: one valid-looking row dated 2030 is counted after the window, not scored."""
    import json
    import shutil

    stray = tmp_path / "stray"
    shutil.copytree(small_dataset, stray)
    payments = pl.read_parquet(small_dataset / "payments_combined.parquet")
    row = payments.head(1).with_columns(pl.lit(2030).cast(payments["year"].dtype).alias("year"))
    pl.concat([payments, row]).write_parquet(stray / "payments_combined.parquet")
    clean = run_local(small_dataset, Settings(), run_dir=tmp_path / "a", show_progress=False)
    moved = run_local(stray, Settings(), run_dir=tmp_path / "b", show_progress=False)
    assert moved.scores.read_bytes() == clean.scores.read_bytes()
    counts = json.loads(moved.input_counts.read_text())
    assert counts["window_end_year"] == 2023
    assert counts["payment_rows_after_window"] == 1
    assert counts["window_end_reason"].endswith("(2030: 1 NPI)")
    assert "busiest year" in counts["window_end_reason"]
    report = json.loads(moved.report.read_text())
    assert report["window"] == [2019, 2023]
    assert report["input_counts"]["window_end_reason"] == counts["window_end_reason"]


def test_the_window_end_share_is_exact() -> None:
    """0.55 * 100 is 55.00000000000001 in floats: 55 of 100 NPIs must still qualify."""
    from scoring.methodology.population import window_end

    per_year = pl.DataFrame({"year": [2022, 2023], "npis": [100, 55]})
    end = window_end(per_year, Settings(window_end_min_share=0.55))
    assert end.year == 2023
    assert window_end(per_year, Settings(window_end_min_share=0.56)).year == 2022
    # a share of many digits times millions of NPIs is beyond Int64: no silent wrap
    third = 0.3333333333333333  # 3333333333333333 / 10**16
    big = pl.DataFrame({"year": [2021, 2022, 2023], "npis": [9_000_000, 3_000_000, 2_999_999]})
    assert window_end(big, Settings(window_end_min_share=third)).year == 2022


def test_the_refresh_digest_sees_payment_row_attributes() -> None:
    """The peer-attribute fallback reads payment rows' taxonomy/state: a change there is a
    change of the NPI's inputs."""
    from scoring.inputs.digest import npi_digests

    rows = {
        "npi": [1, 1], "year": [2023, 2023], "program": ["Medicare", "Medicaid"],
        "payments": [10.0, 5.0], "claims": [1.0, 1.0], "beneficiaries": [1.0, 1.0],
        "taxonomy": ["207Q00000X", "Unknown"], "state": ["CA", "Unknown"],
    }  # fmt: skip
    none = pl.LazyFrame(schema={"npi": pl.Int64, "display_name": pl.String,
                                "taxonomy_1": pl.String, "state": pl.String})  # fmt: skip
    leie = pl.LazyFrame(schema={"npi": pl.Int64, "exclusion_id": pl.String,
                                "reinstated": pl.Boolean})  # fmt: skip

    def digest(**change: list[str]) -> int:
        payments = pl.LazyFrame({**rows, **change}).with_columns(
            pl.col("program", "taxonomy", "state").cast(pl.Categorical)
        )
        return npi_digests(payments, none, leie).collect()["digest"].item()

    assert digest() == digest()
    assert digest(taxonomy=["363L00000X", "Unknown"]) != digest()
    assert digest(state=["TX", "Unknown"]) != digest()
