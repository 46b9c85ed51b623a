"""concentration.py: component 5, program concentration S_p (SPEC §4).

Over years T-2..T: share = largest program total / max(total, 1); S_p = 0 if share <= 0.5,
else min(100, 200 * (share - 0.5)), rounded 2; top_program ties alphabetical; no payments:
S_p = 0 and top_program null.
"""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.components.concentration import (
    concentration_exprs,
    program_amounts,
    program_shares,
    program_totals,
)

CFG = Settings()
T = 2023

PAYMENTS = [
    # npi 1: Medicare 600 (2023), Medicaid 300 (2022), PartD 100 (2021 = T - 2, counted);
    # Medicare 5000 in 2020 (T - 3) and 7000 in a stray 2024 are not counted
    (1, 2023, "Medicare", 600.0),
    (1, 2022, "Medicaid", 300.0),
    (1, 2021, "MedicarePartD", 100.0),
    (1, 2020, "Medicare", 5000.0),
    (1, 2024, "Medicare", 7000.0),
    # npi 2: a tie 500 / 500 -> Medicaid (alphabetical), share 0.5
    (2, 2023, "Medicare", 500.0),
    (2, 2023, "Medicaid", 500.0),
    # npi 3: one program -> share 1
    (3, 2022, "Medicaid", 120.0),
    (3, 2023, "Medicaid", 80.0),
    # npi 4: only older payments
    (4, 2019, "Medicare", 900.0),
    # npi 5: zero payments in the window
    (5, 2023, "Medicare", 0.0),
    # npi 6: 0.1 + 0.2 = 0.3 (exact) of 0.4 in total; total < 1 -> share = 0.3 / max(0.4, 1)
    (6, 2023, "Medicare", 0.1),
    (6, 2022, "Medicare", 0.2),
    (6, 2023, "Medicaid", 0.1),
    # npi 7: Medicare 750 of 1000 -> share 0.75
    (7, 2023, "Medicare", 750.0),
    (7, 2023, "Other", 250.0),
]


def payments() -> pl.LazyFrame:
    return pl.LazyFrame(
        PAYMENTS,
        schema={"npi": pl.Int64, "year": pl.Int32, "program": pl.String, "payments": pl.Float64},
        orient="row",
    )


def amounts() -> pl.LazyFrame:
    return program_amounts(payments(), T, CFG).collect().lazy()


def test_program_amounts_are_exact_micro_units_over_three_years() -> None:
    expected = pl.DataFrame(
        [
            (1, "Medicaid", 300_000_000),
            (1, "Medicare", 600_000_000),
            (1, "MedicarePartD", 100_000_000),
            (2, "Medicaid", 500_000_000),
            (2, "Medicare", 500_000_000),
            (3, "Medicaid", 200_000_000),
            (5, "Medicare", 0),
            (6, "Medicaid", 100_000),
            (6, "Medicare", 300_000),
            (7, "Medicare", 750_000_000),
            (7, "Other", 250_000_000),
        ],
        schema={"npi": pl.Int64, "program": pl.String, "amount": pl.Int128},
        orient="row",
    )
    assert_frame_equal(amounts().collect().sort("npi", "program"), expected)
    shares = program_shares(amounts(), CFG).collect()
    assert shares.filter(pl.col("npi") == 6)["amount"].to_list() == [0.1, 0.3]


def test_program_totals_and_score() -> None:
    population = pl.LazyFrame({"npi": [1, 2, 3, 4, 5, 6, 7]})
    totals = program_totals(amounts(), CFG)
    out = (
        population.join(totals, on="npi", how="left")
        .with_columns(concentration_exprs(CFG))
        .collect()
        .sort("npi")
    )
    expected = pl.DataFrame(
        {
            "npi": [1, 2, 3, 4, 5, 6, 7],
            "top_program": ["Medicare", "Medicaid", "Medicaid", None, None, "Medicare", "Medicare"],
            "top_program_total": [600.0, 500.0, 200.0, None, 0.0, 0.3, 750.0],
            "recent_total": [1000.0, 1000.0, 200.0, None, 0.0, 0.4, 1000.0],
            "program_concentration_score": [
                20.0,  # share 0.6: 200 x 0.1
                0.0,  # share 0.5: not above the threshold
                100.0,  # share 1: min(100, 200 x 0.5)
                0.0,  # no payments in T-2..T
                0.0,  # total 0: share 0 / max(0, 1); top_program null (a zero total
                # is read as SPEC's 'no payments')
                0.0,  # share 0.3 / max(0.4, 1) = 0.3
                50.0,  # share 0.75: 200 x 0.25
            ],
        }
    )
    assert_frame_equal(out.select(expected.columns), expected)
