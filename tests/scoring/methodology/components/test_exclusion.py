"""exclusion.py: active LEIE exclusions and component 4, exclusion proximity S_e
(SPEC §4): 100 own active exclusion (reinstated false or null); else 80 owner_excluded;
else 50 chain_excluded_count > 0; else 0."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.components.exclusion import active_exclusions, exclusion_proximity_expr

CFG = Settings()

LEIE = pl.LazyFrame(
    [
        ("E1", 1, False),  # active
        ("E2", 1, False),  # a second row of the same NPI: listed once
        ("E3", 2, None),  # reinstated null counts as false: active
        ("E4", 3, True),  # reinstated only: not active
        ("E5", 4, True),  # reinstated once ...
        ("E6", 4, False),  # ... but excluded again: active
        ("E7", None, False),  # no NPI: nobody
    ],
    schema={"exclusion_id": pl.String, "npi": pl.Int64, "reinstated": pl.Boolean},
    orient="row",
)


def test_active_exclusions_ignore_reinstated_rows() -> None:
    expected = pl.DataFrame({"npi": [1, 2, 4], "actively_excluded": [True, True, True]})
    assert_frame_equal(active_exclusions(LEIE).collect().sort("npi"), expected)


def test_proximity_levels() -> None:
    providers = pl.LazyFrame(
        [
            (1, True, 3),  # own exclusion wins over owner and chain: 100
            (2, False, 0),  # own (reinstated null): 100
            (3, True, 2),  # reinstated itself; owner excluded: 80
            (4, None, None),  # own exclusion (excluded again): 100
            (5, False, 1),  # not excluded; one excluded chain member: 50
            (6, None, 0),  # nothing: 0
            (7, None, None),  # no SNF match at all: 0
        ],
        schema={
            "npi": pl.Int64,
            "owner_excluded": pl.Boolean,
            "chain_excluded_count": pl.Int64,
        },
        orient="row",
    )
    out = (
        providers.join(active_exclusions(LEIE), on="npi", how="left")
        .select("npi", exclusion_proximity_expr(CFG))
        .collect()
        .sort("npi")
    )
    expected = pl.DataFrame(
        {
            "npi": [1, 2, 3, 4, 5, 6, 7],
            "exclusion_proximity_score": [100.0, 100.0, 80.0, 100.0, 50.0, 0.0, 0.0],
        }
    )
    assert_frame_equal(out, expected)
