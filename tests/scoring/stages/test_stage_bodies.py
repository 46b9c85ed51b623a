"""Stage bodies called in memory on small frames, no run directory: count's per-bucket
counts, reduce's window, combine's renumbered groups, quarantine order and input counts,
and the batch cutter, each against values worked out by hand (SPEC §4, §7)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.errors import InputError
from scoring.inputs.quarantine import QUARANTINE_SCHEMA, ROW
from scoring.stages.batches import cut_batches
from scoring.stages.combine import global_groups, input_counts, quarantine_table
from scoring.stages.count import count_bucket
from scoring.stages.reduce import window_of

INDEX = pl.get_index_type()


def test_count_bucket_counts_distinct_npis_per_year_and_per_window() -> None:
    """(npi, year) pairs (1,2020) (1,2021) (2,2021) (2,2022) (3,2019); the copy of (1,2020)
    counts once. Windows of 2 years end at every T from the first year to the last + 1."""
    rows = pl.DataFrame(
        {"npi": [1, 1, 1, 2, 2, 3], "year": [2020, 2020, 2021, 2021, 2022, 2019]},
        schema={"npi": pl.Int64, "year": pl.Int32},
    )
    counted = count_bucket(rows, Settings(window_years=2))
    assert counted["per_year"] == [(2019, 1), (2020, 1), (2021, 2), (2022, 1)]
    # T=2019: {3}; 2020: {3, 1}; 2021: {1, 2}; 2022: {1, 2}; 2023: {2}
    assert counted["window_population"] == {
        "2019": 1, "2020": 2, "2021": 2, "2022": 2, "2023": 1
    }  # fmt: skip
    as_of = count_bucket(rows, Settings(window_years=2, as_of_year=2030))
    assert as_of["window_population"]["2030"] == 0  # a configured T is always counted
    empty = count_bucket(rows.head(0), Settings(window_years=2))
    assert empty == {"per_year": [], "window_population": {}}


def test_window_of_ends_the_window_and_numbers_each_buckets_batches() -> None:
    """Summed over buckets: 2020: 3, 2021: 4 + 2 = 6, 2022: 1 NPIs. Half the busiest (3)
    is met by 2020 and 2021, so T = 2021; 5 and 2 providers in its window, in batches of
    2: 3 and 1 batches, the second bucket's first batch numbered 3."""
    counts = [
        {"per_year": [[2020, 3], [2021, 4]], "window_population": {"2021": 5, "2022": 4}},
        {"per_year": [[2021, 2], [2022, 1]], "window_population": {"2022": 1}},
    ]
    window = window_of(counts, Settings(batch_size=2), Path("data"))
    assert window["window_end_year"] == 2021
    assert window["window_end_reason"].endswith("(2022: 1 NPI)")
    assert {k: window[k] for k in ("population", "batches", "batch_offsets")} == {
        "population": [5, 0],
        "batches": [3, 0],
        "batch_offsets": [0, 3],
    }
    with pytest.raises(InputError, match=r"^data: no provider .* in the window 2026-2030"):
        window_of(counts, Settings(as_of_year=2030), Path("data"))


def test_global_groups_number_the_peer_buckets_groups_as_one_sorted_table() -> None:
    """Bucket 0 holds groups B (id 0) and D (id 1), bucket 1 group A (id 0): sorted by key
    they are A, B, D = 0, 1, 2, and each rank row follows its group's new number."""
    stats = [
        pl.DataFrame({"group_id": [0, 1], "peer_taxonomy": ["B", "D"], "n": [3, 1]}),
        pl.DataFrame({"group_id": [0], "peer_taxonomy": ["A"], "n": [2]}),
    ]
    ranks = [
        pl.DataFrame({"group_id": [1, 0], "m1": [2.0, 5.0], "n_eq": [1, 3], "n_le": [1, 3]}),
        pl.DataFrame({"group_id": [0], "m1": [5.0], "n_eq": [2], "n_le": [2]}),
    ]
    for part in (*stats, *ranks):
        part.replace_column(0, part["group_id"].cast(INDEX))
    table, rank = global_groups(stats, ranks, ["peer_taxonomy"])
    expected = pl.DataFrame(
        {"group_id": [0, 1, 2], "peer_taxonomy": ["A", "B", "D"], "n": [2, 3, 1]}
    )
    assert_frame_equal(table, expected.with_columns(pl.col("group_id").cast(INDEX)))
    expected_rank = pl.DataFrame(
        {"group_id": [2, 0, 1], "m1": [2.0, 5.0, 5.0], "n_eq": [1, 2, 3], "n_le": [1, 2, 3]}
    )
    assert_frame_equal(rank, expected_rank.with_columns(pl.col("group_id").cast(INDEX)))


def _rows(source: str, rows: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"source": source, ROW: rows, "npi": None, "reason": "r", "record": "{}"},
        schema=QUARANTINE_SCHEMA,
    )


def test_quarantine_lists_rows_as_one_whole_table_pass_would() -> None:
    """Per table: the row rules' failures in slice order, then its exact copies by row
    number (they arrive in bucket order); the graph's rows last. A run that ended at
    reduce lists only the row rules' failures."""
    ingest = {
        "q-payments": _rows("payments", [4, 9]),
        "q-providers": _rows("providers", [1]),
        "q-exclusions": _rows("exclusions", [0]),
    }
    aggregate = {"q-payments": _rows("payments", [7, 2]), "q-providers": _rows("providers", [])}
    table = quarantine_table(ingest, aggregate, _rows("ownership", [5]))
    assert table.select("source", ROW).rows() == [
        ("payments", 4), ("payments", 9), ("payments", 2), ("payments", 7),
        ("providers", 1), ("exclusions", 0), ("ownership", 5),
    ]  # fmt: skip
    assert quarantine_table(ingest).select(ROW).to_series().to_list() == [4, 9, 1, 0]


def test_input_counts_sum_the_buckets_and_count_the_whole_quarantine() -> None:
    summaries = [
        {"payment_rows_valid": 10, "providers_scored": 3, "quarantined_rows": 1},
        {"payment_rows_valid": 5, "providers_scored": 2, "quarantined_rows": 4},
    ]
    window = {"window_end_year": 2022, "window_end_reason": "as_of_year is set"}
    assert input_counts(summaries, 9, window) == {
        "payment_rows_valid": 15,
        "providers_scored": 5,
        "quarantined_rows": 9,  # copies and graph rows too, not the buckets' 1 + 4
        "window_end_year": 2022,
        "window_end_reason": "as_of_year is set",
    }


def test_cut_batches_gives_each_batch_only_its_own_providers_rows() -> None:
    """Providers 1, 3, 5, 8, 9 in batches of 2: {1, 3}, {5, 8}, {9}; provider 5 has no
    provider-year and provider 8 no program row, so those slices are shorter."""
    providers = pl.DataFrame({"npi": [1, 3, 5, 8, 9]})
    py = pl.DataFrame({"npi": [1, 1, 3, 8, 9, 9], "year": [1, 2, 1, 1, 1, 2]})
    programs = pl.DataFrame({"npi": [1, 3, 5, 9], "program": ["a", "b", "c", "d"]})
    batches = cut_batches(py, providers, 2, programs)
    assert [b["providers"]["npi"].to_list() for b in batches] == [[1, 3], [5, 8], [9]]
    assert [b["provider_years"]["npi"].to_list() for b in batches] == [[1, 1, 3], [8], [9, 9]]
    assert [b["programs"]["program"].to_list() for b in batches] == [["a", "b"], ["c"], ["d"]]
    assert [list(b) for b in cut_batches(py, providers, 5)] == [["providers", "provider_years"]]
