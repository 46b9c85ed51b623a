"""flags.py: the SPEC §4 flags, in order, with their exact texts."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.flags import flags_expr
from scoring.methodology.registry import flag_rules

CFG = Settings()

BILLING = "Billing > 95th percentile vs. state/taxonomy peers (payments per claim)."
GROWTH = "Rapid growth and high billing intensity vs. peers."
EXCLUSION = "Direct or owner-level exclusion on record."

COLUMNS = {
    "billing_outlier_percentile": pl.Float64,
    "billing_outlier_score": pl.Float64,
    "payment_trajectory_score": pl.Float64,
    "ownership_chain_risk": pl.Float64,
    "chain_excluded_count": pl.Int64,
    "program_concentration_score": pl.Float64,
    "top_program": pl.String,
    "exclusion_proximity_score": pl.Float64,
}


def test_flags_thresholds_order_and_plurals() -> None:
    frame = pl.DataFrame(
        [
            # every flag, each exactly at its threshold; one excluded provider: singular
            (95.0, 80.0, 60.0, 50.0, 1, 60.0, "Medicaid", 80.0),
            # every value just below its threshold
            (94.99, 80.0, 59.99, 49.99, 3, 59.99, "Medicare", 50.0),
            # growth needs both S_b >= 80 and S_t >= 60; two excluded: plural
            (50.0, 79.99, 100.0, 100.0, 2, 0.0, None, 100.0),
            (50.0, 92.41, 60.0, 0.0, 0, 100.0, "MedicarePartD", 0.0),
        ],
        schema=COLUMNS,
        orient="row",
    )
    out = frame.select(flags_expr(flag_rules(), CFG))
    expected = pl.DataFrame(
        {
            "flags": [
                [
                    BILLING,
                    GROWTH,
                    "Ownership chain includes 1 excluded provider.",
                    "Highly concentrated in a single payer program (Medicaid).",
                    EXCLUSION,
                ],
                [],
                ["Ownership chain includes 2 excluded providers.", EXCLUSION],
                [GROWTH, "Highly concentrated in a single payer program (MedicarePartD)."],
            ]
        },
        schema={"flags": pl.List(pl.String)},
    )
    assert_frame_equal(out, expected)
