"""population.py: the window end T, the window, provider-year sums, growth and peer
attributes (SPEC §4 'Population and window', 'Provider-year aggregate')."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.errors import InputError
from scoring.methodology.population import (
    in_window,
    npis_per_year,
    peer_attributes,
    provider_years,
    window_end,
    with_growth,
)

CFG = Settings()


def per_year(counts: dict[int, int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"year": list(counts), "npis": list(counts.values())},
        schema={"year": pl.Int32, "npis": pl.UInt32},
    )


# --------------------------------------------------------------------------- window end T


def test_npis_per_year_counts_distinct_npis() -> None:
    rows = pl.LazyFrame(
        {"npi": [1, 1, 2, 3, 3, 3], "year": [2021, 2021, 2021, 2020, 2021, 2022]},
        schema={"npi": pl.Int64, "year": pl.Int32},
    )
    # 2020: {3}; 2021: {1, 2, 3} (npi 1 twice); 2022: {3}
    assert_frame_equal(npis_per_year(rows).collect(), per_year({2020: 1, 2021: 3, 2022: 1}))


def test_window_end_is_the_latest_year_with_half_the_busiest_year() -> None:
    # busiest 2021 with 20 NPIs -> at least 0.5 x 20 = 10 needed; 2022 has 18 (yes),
    # 2023 has 9 (no), a stray 2024 has 1 (no): T = 2022, later years reported
    counts = per_year({2019: 10, 2020: 12, 2021: 20, 2022: 18, 2023: 9, 2024: 1})
    end = window_end(counts, CFG)
    assert end.year == 2022
    assert end.reason == (
        "the latest year in which at least 50% as many NPIs bill as in the busiest year "
        "(2021: 20 NPIs); later years have too few to end the window "
        "(2023: 9 NPIs, 2024: 1 NPI)"
    )


def test_window_end_share_is_inclusive_and_ties_name_the_earliest_busiest_year() -> None:
    # 2023 has exactly 0.5 x 20 = 10 NPIs: enough. 2020 and 2021 tie as busiest: 2020 named.
    end = window_end(per_year({2020: 20, 2021: 20, 2022: 11, 2023: 10}), CFG)
    assert end.year == 2023
    assert end.reason == (
        "the latest year in which at least 50% as many NPIs bill as in the busiest year "
        "(2020: 20 NPIs)"
    )


def test_window_end_share_is_exact_in_decimal() -> None:
    # 0.55 x 100 is 55.00000000000001 in floats; 55 NPIs must still qualify
    cfg = Settings(window_end_min_share=0.55)
    assert window_end(per_year({2022: 100, 2023: 55}), cfg).year == 2023
    assert window_end(per_year({2022: 100, 2023: 54}), cfg).year == 2022


def test_window_end_as_of_year_wins_and_no_rows_is_an_error() -> None:
    cfg = Settings(as_of_year=2019)
    end = window_end(per_year({2022: 100}), cfg)
    assert (end.year, end.reason) == (2019, "as_of_year is set")
    with pytest.raises(InputError, match="no valid payment rows"):
        window_end(per_year({}), CFG)


def test_a_stray_later_row_neither_moves_t_nor_is_scored() -> None:
    # three NPIs bill in 2019..2023, one stray row is dated 2030, one row is older (2017)
    rows = pl.DataFrame(
        {
            "npi": [1, 2, 3] * 5 + [1, 2],
            "year": [y for y in range(2019, 2024) for _ in range(3)] + [2030, 2017],
        },
        schema={"npi": pl.Int64, "year": pl.Int32},
    )
    t = window_end(npis_per_year(rows.lazy()).collect(), CFG).year
    assert t == 2023  # 2030 has 1 of 3 NPIs: below the share
    kept = rows.filter(in_window(t, CFG))
    # the window is T-4..T = 2019..2023: the 2030 and 2017 rows drop out
    assert sorted(kept["year"].unique().to_list()) == [2019, 2020, 2021, 2022, 2023]
    assert kept.height == 15


# --------------------------------------------------------------------------- provider-years


def test_provider_years_sum_programs_exactly() -> None:
    payments = pl.LazyFrame(
        {
            "npi": [2, 1, 1, 1, 2],
            "year": [2022, 2022, 2022, 2021, 2022],
            "program": ["Medicare", "Medicare", "Medicaid", "Medicare", "MedicarePartD"],
            "payments": [5.0, 0.1, 0.2, 10.0, 7.5],
            "claims": [1.0, 3.0, 4.0, 100.0, 2.0],
            "beneficiaries": [1.0, 1.0, 2.0, 50.0, 0.0],
        },
        schema_overrides={"year": pl.Int32},
    )
    expected = pl.DataFrame(
        {
            "npi": [1, 1, 2],
            "year": [2021, 2022, 2022],
            "payments": [10.0, 0.3, 12.5],  # 0.1 + 0.2 = 0.3 exactly (micro-unit sums)
            "claims": [100.0, 7.0, 3.0],
            "beneficiaries": [50.0, 3.0, 1.0],
        },
        schema_overrides={"year": pl.Int32},
    )
    assert_frame_equal(provider_years(payments, CFG).collect(), expected)


def test_growth_uses_the_previous_year_with_data() -> None:
    py = pl.LazyFrame(
        {
            "npi": [1, 1, 1, 2, 2, 3],
            "year": [2019, 2021, 2022, 2020, 2021, 2022],
            "payments": [100.0, 300.0, 150.0, 0.0, 5.0, 40.0],
        },
        schema_overrides={"year": pl.Int32},
    )
    expected = py.collect().with_columns(
        pl.Series(
            "g",
            [
                None,  # npi 1's first year
                (300 - 100) / 100,  # 2021 vs 2019: 2020 has no data, so 2019 is previous
                (150 - 300) / 300,
                None,
                (5 - 0) / max(0, 1),  # previous 0 -> divided by max(0, 1) = 1
                None,  # a single year: no growth
            ],
        )
    )
    assert_frame_equal(with_growth(py).collect(), expected)
    # the row order does not matter: growth is taken in year order per NPI
    shuffled = with_growth(py.reverse()).collect().sort("npi", "year")
    assert_frame_equal(shuffled, expected)


# --------------------------------------------------------------------------- peer attributes


def test_peer_attributes_providers_then_payment_rows_then_unknown() -> None:
    population = pl.LazyFrame({"npi": [1, 2, 3, 4]})
    providers = pl.LazyFrame(
        {
            "npi": [1, 2, 3, 5],
            "taxonomy_1": ["207Q00000X-LONG", "", "PROVTAX", "IGNORED"],
            "state": ["CA", None, "", "ZZ"],
        }
    )
    payments = pl.LazyFrame(
        {
            "npi": [2, 2, 2, 2, 3, 3, 4, 4],
            "program": [
                "Medicare",
                "Medicaid",
                "Medicaid",
                "Medicaid",
                "Medicare",
                "Medicare",
                "Medicare",
                "Medicaid",
            ],
            "year": [2020, 2022, 2022, 2023, 2021, 2021, 2022, 2022],
            "taxonomy": ["AAA", "ZZZ", "MMM", None, "X", "Y", "", None],
            "state": ["AK", "", "TX", "NV", "WA", "OR", None, ""],
        },
        schema_overrides={"year": pl.Int32},
    )
    # npi 1: both from providers; the taxonomy cut to its first 10 characters.
    # npi 2: nothing usable in providers; payment rows ordered by (program, year, value):
    #   Medicaid < Medicare; Medicaid 2022 taxonomies MMM < ZZZ -> MMM; states of Medicaid
    #   2022 are '' (empty: skipped) and TX -> TX.
    # npi 3: taxonomy from providers; state '' -> rows Medicare 2021 OR < WA -> OR.
    # npi 4: not in providers and no non-empty value -> Unknown, Unknown.
    # npi 5: in providers only, not in the population -> absent.
    expected = pl.DataFrame(
        {
            "npi": [1, 2, 3, 4],
            "peer_taxonomy": ["207Q00000X", "MMM", "PROVTAX", "Unknown"],
            "peer_state": ["CA", "TX", "OR", "Unknown"],
        }
    )
    out = peer_attributes(population, providers, payments, CFG).collect().sort("npi")
    assert_frame_equal(out, expected)
    reversed_rows = peer_attributes(population, providers, payments.reverse(), CFG)
    assert_frame_equal(reversed_rows.collect().sort("npi"), expected)
