"""trajectory.py: component 3, payment trajectory S_t (SPEC §4).

Growth g against the provider's previous year with data; z against (taxonomy_10, state,
year) groups of any size; max(z, 0); decay-weighted mean over years with a g -> zscore
(rounded 4) and S_t = round(100 / (1 + exp(-z / 2)), 2) from the unrounded z; a single year
of data gives S_t = 0 and zscore 0.
"""

from __future__ import annotations

import math

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.components.trajectory import (
    trajectory_provider_exprs,
    trajectory_year_scores,
)
from scoring.methodology.decay import slot_aggs
from scoring.methodology.peer_stats import growth_group_stats
from scoring.methodology.population import with_growth

CFG = Settings()
T = 2023
SCALE = 1.4826


def logistic(z: float) -> float:
    return round(100 / (1 + math.exp(-z / 2)), 2)


def test_year_scores_against_hand_made_growth_groups() -> None:
    py = pl.LazyFrame(
        [
            (1, "T", "CA", 2023, 0.9),  # above the median: (0.9 - 0.1) / (1.4826 * 0.2)
            (2, "T", "CA", 2023, -1.0),  # below: z < 0 -> 0
            (3, "T", "CA", 2022, None),  # no growth: no z
            (4, "T", "NY", 2023, 0.6),  # MAD 0 -> floor 1e-9 -> clipped to 5
        ],
        schema={
            "npi": pl.Int64,
            "peer_taxonomy": pl.String,
            "peer_state": pl.String,
            "year": pl.Int32,
            "g": pl.Float64,
        },
        orient="row",
    )
    growth = pl.LazyFrame(
        [("T", "CA", 2023, 0.1, 0.2), ("T", "NY", 2023, 0.5, 0.0)],
        schema={
            "peer_taxonomy": pl.String,
            "peer_state": pl.String,
            "year": pl.Int32,
            "med_g": pl.Float64,
            "mad_g": pl.Float64,
        },
        orient="row",
    )
    out = trajectory_year_scores(py, growth, CFG).collect().sort("npi").select("npi", "growth_z")
    expected = pl.DataFrame(
        {"npi": [1, 2, 3, 4], "growth_z": [(0.9 - 0.1) / (SCALE * 0.2), 0.0, None, 5.0]}
    )
    assert_frame_equal(out, expected, check_exact=False, rel_tol=0, abs_tol=1e-12)


def test_trajectory_from_payments_to_score() -> None:
    # provider payments per year (T = 2023)
    payments = {
        1: {2021: 100.0, 2022: 200.0, 2023: 300.0},  # g 2022 = 1.0, g 2023 = 0.5
        2: {2021: 100.0, 2022: 100.0, 2023: 100.0},  # g 0, 0
        3: {2021: 100.0, 2023: 400.0},  # gap: g 2023 = (400 - 100) / 100 = 3.0
        4: {2023: 50.0},  # a single year: no growth at all
        5: {2022: 0.0, 2023: 10.0},  # g 2023 = 10 / max(0, 1) = 10
        6: {2022: 100.0, 2023: 150.0},  # NY: g 0.5
        7: {2022: 200.0, 2023: 300.0},  # NY: g 0.5
        8: {2022: 100.0, 2023: 190.0},  # NY: g 0.9
    }
    rows = [
        (npi, year, amount, "T", "NY" if npi >= 6 else "CA")
        for npi, years in payments.items()
        for year, amount in years.items()
    ]
    py = pl.LazyFrame(
        rows,
        schema={
            "npi": pl.Int64,
            "year": pl.Int32,
            "payments": pl.Float64,
            "peer_taxonomy": pl.String,
            "peer_state": pl.String,
        },
        orient="row",
    )
    py = with_growth(py)
    scored = trajectory_year_scores(py, growth_group_stats(py), CFG)
    per_npi = scored.group_by("npi").agg(slot_aggs(["growth_z"], T, CFG))
    out = per_npi.with_columns(trajectory_provider_exprs(CFG)).collect().sort("npi")

    # (T, CA, 2022): g [1.0 (npi 1), 0.0 (npi 2)] -> median 0.5, MAD 0.5
    z1_2022 = (1.0 - 0.5) / (SCALE * 0.5)  # 0.6745; npi 2: negative -> 0
    # (T, CA, 2023): g [0.5, 0, 3, 10] -> median 1.75,
    # |dev| [1.25, 1.75, 1.25, 8.25] -> MAD 1.5
    z3 = (3.0 - 1.75) / (SCALE * 1.5)  # 0.5621; npis 1, 2 below the median -> 0
    z5 = (10.0 - 1.75) / (SCALE * 1.5)  # 3.7097, under the cap
    # (T, NY, 2023): g [0.5, 0.5, 0.9] -> median 0.5, MAD 0 -> floor: npi 8 clipped to 5
    # decay over the years that have a g: npi 1 has 2022 (w 0.7) and 2023 (w 1)
    z1 = (1 * 0.0 + 0.7 * z1_2022) / (1 + 0.7)
    zs = {1: z1, 2: 0.0, 3: z3, 5: z5, 6: 0.0, 7: 0.0, 8: 5.0}
    expected = pl.DataFrame(
        {
            "npi": list(range(1, 9)),
            "payment_trajectory_zscore": [round(zs[n], 4) if n in zs else 0.0 for n in range(1, 9)],
            # from the unrounded z; npi 4 (single year): 0, not the 50 of z = 0
            "payment_trajectory_score": [logistic(zs[n]) if n in zs else 0.0 for n in range(1, 9)],
        }
    )
    assert expected["payment_trajectory_score"].to_list() == [
        53.47, 50.0, 56.98, 0.0, 86.47, 50.0, 50.0, 92.41
    ]  # fmt: skip
    assert expected["payment_trajectory_zscore"].to_list() == [
        0.2777, 0.0, 0.5621, 0.0, 3.7097, 0.0, 0.0, 5.0
    ]  # fmt: skip
    assert_frame_equal(out.select(expected.columns), expected)
