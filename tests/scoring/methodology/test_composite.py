"""composite.py: r_raw, PERCENT_RANK calibration and labels (SPEC §4)."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal, assert_series_equal

from scoring.config import Settings
from scoring.methodology.composite import (
    calibrated_score,
    label_expr,
    r_raw_expr,
    reference_risk_score,
)

CFG = Settings()
COMPONENTS = [
    "billing_outlier_score",
    "ownership_chain_risk",
    "payment_trajectory_score",
    "exclusion_proximity_score",
    "program_concentration_score",
]


def test_r_raw_weights_and_missing_components() -> None:
    frame = pl.DataFrame(
        [
            (57.31, 33.33, 50.0, 0.0, 20.0),
            (100.0, 100.0, 100.0, 100.0, 100.0),
            (50.0, None, None, None, None),
            (64.28, 25.0, 53.47, 50.0, 40.0),
        ],
        schema=dict.fromkeys(COMPONENTS, pl.Float64),
        orient="row",
    )
    out = frame.select(r_raw_expr(CFG))
    expected = [
        # 0.30 x 57.31 + 0.25 x 33.33 + 0.20 x 50 + 0.15 x 0 + 0.10 x 20
        # = 17.193 + 8.3325 + 10 + 0 + 2
        37.5255,
        100.0,  # the weights sum to 1
        15.0,  # 0.30 x 50; missing components count 0
        # 19.284 + 6.25 + 10.694 + 7.5 + 4
        47.728,
    ]
    assert_frame_equal(out, pl.DataFrame({"r_raw": expected}))


def test_calibration_is_percent_rank_with_shared_ties() -> None:
    frame = pl.DataFrame({"r_raw": [10.0, 20.0, 20.0, 30.0, 5.0, 20.0, 7.5]})
    out = frame.select(calibrated_score(pl.col("r_raw"), pl.len()))
    # N = 7: strictly smaller counts 2, 3, 3, 6, 0, 3, 1 -> 100 x c / 6
    expected = [33.33, 50.0, 50.0, 100.0, 0.0, 50.0, 16.67]
    assert_frame_equal(out, pl.DataFrame({"risk_score": expected}))
    # the same scores whatever the row order
    again = frame.reverse().select("r_raw", calibrated_score(pl.col("r_raw"), pl.len()))
    assert_frame_equal(again.reverse().select("risk_score"), pl.DataFrame({"risk_score": expected}))


def test_calibration_of_one_provider_and_of_all_tied() -> None:
    one = pl.DataFrame({"r_raw": [42.0]}).select(calibrated_score(pl.col("r_raw"), pl.len()))
    assert_frame_equal(one, pl.DataFrame({"risk_score": [0.0]}))
    tied = pl.DataFrame({"r_raw": [3.0, 3.0, 3.0]})
    out = tied.select(calibrated_score(pl.col("r_raw"), pl.len()))
    assert_frame_equal(out, pl.DataFrame({"risk_score": [0.0, 0.0, 0.0]}))


def test_calibration_rounds_half_to_even() -> None:
    # N = 801: 100 x 1 / 800 = 0.125 and 100 x 3 / 800 = 0.375, both exact binary halves:
    # half to even gives 0.12 and 0.38 (half away from zero would give 0.13)
    frame = pl.DataFrame({"r_raw": [float(v) for v in range(801)]})
    out = frame.select(calibrated_score(pl.col("r_raw"), pl.len())).head(4)
    assert_frame_equal(out, pl.DataFrame({"risk_score": [0.0, 0.12, 0.25, 0.38]}))


def test_reference_risk_score_counts_strictly_smaller_references() -> None:
    reference = pl.Series([10.0, 20.0, 20.0, 30.0, 5.0, 20.0, 7.5])
    r_raw = pl.Series("r_raw", [20.0, 25.0, 5.0, 30.0, 6.0])
    # smaller than 20: {10, 5, 7.5} = 3; than 25: 6; than 5: 0; than 30: 6; than 6: 1; N - 1 = 6
    expected = pl.Series("risk_score", [50.0, 100.0, 0.0, 100.0, 16.67])
    assert_series_equal(reference_risk_score(r_raw, reference), expected)
    # a full run's own values give the full run's calibration
    full = pl.DataFrame({"r_raw": reference}).select(calibrated_score(pl.col("r_raw"), pl.len()))
    assert_series_equal(
        reference_risk_score(reference.alias("r_raw"), reference), full["risk_score"]
    )
    # a reference of one: 0
    single = reference_risk_score(r_raw, pl.Series([1.0]))
    assert_series_equal(single, pl.Series("risk_score", [0.0] * 5))


def test_labels_at_their_boundaries() -> None:
    scores = pl.DataFrame({"risk_score": [100.0, 80.0, 79.99, 60.0, 59.99, 30.0, 29.99, 0.0]})
    out = scores.select(label_expr(CFG))
    expected = ["High", "High", "Elevated", "Elevated", "Moderate", "Moderate", "Low", "Low"]
    assert_frame_equal(out, pl.DataFrame({"risk_label": expected}))
