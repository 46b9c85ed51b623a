"""decay.py: year slots (slot k = year T - k), decay weights ALPHA^(T - year), the
logistic score and the robust z (SPEC §4)."""

from __future__ import annotations

import math

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.decay import (
    decay_weighted_mean,
    logistic_score,
    plain_mean,
    robust_z,
    slot_aggs,
    slot_name,
)

CFG = Settings()
T = 2023


def slots() -> pl.DataFrame:
    rows = pl.DataFrame(
        {
            "npi": [1, 1, 1, 1, 1, 2, 3],
            "year": [2023, 2021, 2019, 2018, 2024, 2022, 2022],
            "v": [1.0, 2.0, 4.0, 100.0, 100.0, 3.0, None],
        }
    )
    return rows.group_by("npi").agg(slot_aggs(["v"], T, CFG)).sort("npi")


def test_slots_hold_years_t_to_t_minus_4_only() -> None:
    # 2018 (T - 5) and a stray 2024 have no slot; a missing year is null
    expected = pl.DataFrame(
        {
            "npi": [1, 2, 3],
            slot_name("v", 0): [1.0, None, None],
            slot_name("v", 1): [None, 3.0, None],
            slot_name("v", 2): [2.0, None, None],
            slot_name("v", 3): [None, None, None],
            slot_name("v", 4): [4.0, None, None],
        },
        schema_overrides={slot_name("v", 3): pl.Float64},
    )
    assert_frame_equal(slots(), expected)


def test_decay_weighted_and_plain_means() -> None:
    out = slots().select(
        "npi",
        decay_weighted_mean("v", CFG).alias("decayed"),
        plain_mean("v", CFG).alias("plain"),
    )
    # npi 1: 2023 (w 1), 2021 (w 0.7^2 = 0.49), 2019 (w 0.7^4 = 0.2401)
    decayed_1 = (1 * 1.0 + 0.49 * 2.0 + 0.2401 * 4.0) / (1 + 0.49 + 0.2401)
    expected = pl.DataFrame(
        {
            "npi": [1, 2, 3],
            "decayed": [decayed_1, 3.0, None],  # one year: its value; no value: null
            "plain": [(1.0 + 2.0 + 4.0) / 3, 3.0, None],
        }
    )
    assert_frame_equal(out, expected, check_exact=False, rel_tol=1e-15, abs_tol=0)


def test_logistic_score_rounds_to_two() -> None:
    z = pl.DataFrame({"z": [0.0, 2.0, -5.0, 5.0, 1e-3]})
    out = z.select(logistic_score(pl.col("z"), CFG).alias("s"))
    # 100 / (1 + exp(-z / 2)): 50; 100 / (1 + e^-1) = 73.105...; 7.585...; 92.414...;
    # 100 / (1 + exp(-0.0005)) = 50.0125 -> 50.01
    expected = [50.0, 73.11, 7.59, 92.41, 50.01]
    assert [round(100 / (1 + math.exp(-v / 2)), 2) for v in z["z"]] == expected
    assert_frame_equal(out, pl.DataFrame({"s": expected}))


def test_robust_z_scale_floor_and_cap() -> None:
    frame = pl.DataFrame(
        {
            "x": [2.0, 3.0, -3.0, 1.0, 1.0 + 1e-12],
            "median": [1.0, 1.0, 1.0, 1.0, 1.0],
            "mad": [0.5, 0.0, 0.0, 0.0, 0.0],
        }
    )
    out = frame.select(robust_z(pl.col("x"), pl.col("median"), pl.col("mad"), CFG).alias("z"))
    expected = [
        1.0 / (1.4826 * 0.5),  # 1.3489...
        5.0,  # 2 / (1.4826 * 1e-9): capped
        -5.0,  # capped below
        0.0,  # on the median, MAD 0: 0 / 1.4826e-9
        ((1.0 + 1e-12) - 1.0) / (1.4826 * 1e-9),  # ~0.000675: the floor, not a division by 0
    ]
    assert_frame_equal(out, pl.DataFrame({"z": expected}), check_exact=False, rel_tol=1e-12)
