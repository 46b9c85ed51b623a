"""Totals do not depend on row order (SPEC §6.1: identical output whatever the execution)."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.components.concentration import program_amounts, program_totals
from scoring.methodology.population import provider_years

CFG = Settings()


def _payments(order: list[int]) -> pl.LazyFrame:
    # 0.1 + 0.2 + 0.3 is 0.6000000000000001 or 0.6 depending on the order of a float sum.
    rows = [
        {"npi": 1, "year": 2023, "program": p, "payments": v, "claims": v, "beneficiaries": v}
        for p, v in [("Medicare", 0.1), ("Medicaid", 0.2), ("MedicarePartD", 0.3)]
    ] + [
        {
            "npi": 1,
            "year": 2022,
            "program": "Medicare",
            "payments": 1e9 + 0.07,
            "claims": 3.0,
            "beneficiaries": 1.0,
        },
        {
            "npi": 1,
            "year": 2022,
            "program": "Medicare",
            "payments": 0.01,
            "claims": 2.0,
            "beneficiaries": 1.0,
        },
    ]
    return pl.LazyFrame([rows[i] for i in order])


def test_provider_year_totals_are_exact_in_any_order() -> None:
    results = [
        provider_years(_payments(order), CFG).collect()
        for order in ([0, 1, 2, 3, 4], [2, 1, 0, 4, 3], [1, 2, 0, 3, 4], [4, 3, 2, 1, 0])
    ]
    for result in results[1:]:
        assert_frame_equal(result, results[0])
    totals = dict(zip(results[0]["year"], results[0]["payments"], strict=True))
    assert totals[2023] == 0.6  # the correctly rounded decimal sum, not 0.6000000000000001
    assert totals[2022] == 1000000000.08


def test_program_totals_are_exact_in_any_order() -> None:
    first = program_totals(program_amounts(_payments([0, 1, 2, 3, 4]), 2023, CFG), CFG).collect()
    again = program_totals(program_amounts(_payments([4, 2, 0, 3, 1]), 2023, CFG), CFG).collect()
    assert_frame_equal(first, again)
    assert first["recent_total"].item() == 1000000000.68
    assert first["top_program"].item() == "Medicare"


def test_totals_past_int64_never_wrap() -> None:
    """Issue 11.2: ten valid rows of 1e12 for one NPI-year (programs P0..P9) sum to 1e13."""
    rows = pl.LazyFrame(
        {
            "npi": [7] * 10,
            "year": [2023] * 10,
            "program": [f"P{i}" for i in range(10)],
            "payments": [1e12] * 10,
            "claims": [1e12] * 10,
            "beneficiaries": [1e12] * 10,
        }
    )
    year = provider_years(rows, CFG).collect()
    assert year.select("payments", "claims", "beneficiaries").row(0) == (1e13, 1e13, 1e13)
    totals = program_totals(program_amounts(rows, 2023, CFG), CFG).collect()
    assert totals["recent_total"].item() == 1e13
    assert totals["top_program_total"].item() == 1e12
    assert totals["top_program"].item() == "P0"
