"""provider_scores.py: one batch's providers scored against hand-made global
statistics: every component, r_raw and the flags, worked out by hand from SPEC §4.

A (npi 42, T/CA) has 2022 and 2023; its 2022 primary group has 50 eligible members (used),
its 2023 primary group 40 (the fallback of 81 is used). B (npi 7, T/NY) has only 2023, no
primary group, an extreme payments total, its own LEIE exclusion and one program.
"""

from __future__ import annotations

import math

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.provider_scores import (
    PeerStats,
    chunk_columns,
    score_providers,
)

CFG = Settings()
T = 2023
SCALE = 1.4826
ln = math.log
BILLING_FLAG = "Billing > 95th percentile vs. state/taxonomy peers (payments per claim)."
EXCLUSION_FLAG = "Direct or owner-level exclusion on record."
KEYS = {"peer_taxonomy": pl.String, "peer_state": pl.String, "year": pl.Int32}
MED_MAD = dict.fromkeys(["med_x1", "mad_x1", "med_x2", "mad_x2", "med_x3", "mad_x3"], pl.Float64)
RANK = {"group_id": pl.UInt32, "m1": pl.Float64, "n_eq": pl.Int64, "n_le": pl.Int64}

# SPEC §3: the seven component values of the `components` JSONB, in order
COMPONENTS = [
    "billing_outlier_score",
    "billing_outlier_percentile",
    "ownership_chain_risk",
    "payment_trajectory_score",
    "payment_trajectory_zscore",
    "exclusion_proximity_score",
    "program_concentration_score",
]


def frame(rows: list[tuple], schema: dict) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema=schema, orient="row")


def peer_stats() -> PeerStats:
    fallback_keys = {"peer_taxonomy": pl.String, "year": pl.Int32}
    return PeerStats(
        billing_primary=frame(
            [
                (0, "T", "CA", 2022, 50, ln(11), 0.5, ln(3), 0.1, ln(2001), 0.2),
                (1, "T", "CA", 2023, 40, ln(11), 1.0, ln(3), 1.0, ln(1001), 1.0),
            ],
            {"group_id": pl.UInt32, **KEYS, "n": pl.Int64, **MED_MAD},
        ),
        billing_fallback=frame(
            [
                (0, "T", 2022, 60, ln(11), 1.0, ln(3), 1.0, ln(1001), 1.0),
                (1, "T", 2023, 81, ln(11), 1.0, ln(3), 1.0, ln(1001), 0.25),
            ],
            {"group_id": pl.UInt32, **fallback_keys, "n": pl.Int64, **MED_MAD},
        ),
        m1_rank_primary=frame(
            [(0, 5.0, 20, 20), (0, 20.0, 1, 21), (0, 50.0, 29, 50), (1, 30.0, 40, 40)], RANK
        ).sort("m1"),
        m1_rank_fallback=frame(
            [
                (0, 20.0, 60, 60),
                (1, 10.0, 60, 60),
                (1, 30.0, 1, 61),
                (1, 40.0, 19, 80),
                (1, 1000.0, 1, 81),
            ],
            RANK,
        ).sort("m1"),
        growth=frame(
            [("T", "CA", 2023, 0.1, 0.2)], {**KEYS, "med_g": pl.Float64, "mad_g": pl.Float64}
        ),
    )


def inputs() -> tuple[pl.LazyFrame, pl.LazyFrame]:
    provider_years = frame(
        [
            (42, 2022, 2000.0, 100.0, 50.0, None),
            (42, 2023, 3000.0, 100.0, 50.0, (3000 - 2000) / 2000),
            (7, 2023, 100000.0, 100.0, 100.0, None),
        ],
        {
            "npi": pl.Int64,
            "year": pl.Int32,
            "payments": pl.Float64,
            "claims": pl.Float64,
            "beneficiaries": pl.Float64,
            "g": pl.Float64,
        },
    )
    providers = frame(
        [
            (42, "T", "CA", "Medicare", 700.0, 1000.0, "E1", 4, 1, False, None),
            (7, "T", "NY", "Medicaid", 5000.0, 5000.0, None, None, None, None, True),
        ],
        {
            "npi": pl.Int64,
            "peer_taxonomy": pl.String,
            "peer_state": pl.String,
            "top_program": pl.String,
            "top_program_total": pl.Float64,
            "recent_total": pl.Float64,
            "snf_entity_id": pl.String,
            "chain_provider_count": pl.Int64,
            "chain_excluded_count": pl.Int64,
            "owner_excluded": pl.Boolean,
            "actively_excluded": pl.Boolean,
        },
    )
    return provider_years, providers


def clip(z: float) -> float:
    return max(-5.0, min(5.0, z))


def logistic(z: float) -> float:
    return round(100 / (1 + math.exp(-z / 2)), 2)


def expected_rows() -> pl.DataFrame:
    # A 2022 (primary, n 50): m1 = 2000 / 100 = 20, m2 = 100 / 50 = 2, m3 = 2000
    a_2022 = [
        clip((ln(21) - ln(11)) / (SCALE * 0.5)),
        clip((ln(3) - ln(3)) / (SCALE * 0.1)),
        clip((ln(2001) - ln(2001)) / (SCALE * 0.2)),
    ]
    # A 2023 (fallback, n 81): m1 30, m2 2, m3 3000
    a_2023 = [
        clip((ln(31) - ln(11)) / (SCALE * 1.0)),
        clip((ln(3) - ln(3)) / (SCALE * 1.0)),
        clip((ln(3001) - ln(1001)) / (SCALE * 0.25)),
    ]
    # B 2023 (fallback, n 81): m1 1000, m2 1, m3 100000 (z3 = 12.4 capped at 5)
    b_2023 = [
        clip((ln(1001) - ln(11)) / (SCALE * 1.0)),
        clip((ln(2) - ln(3)) / (SCALE * 1.0)),
        clip((ln(100001) - ln(1001)) / (SCALE * 0.25)),
    ]
    assert b_2023[2] == 5.0

    def year_score(zs: list[float]) -> float:
        return sum(max(z, 0.0) for z in zs) / 3

    raw_a = (1 * year_score(a_2023) + 0.7 * year_score(a_2022)) / (1 + 0.7)
    raw_b = year_score(b_2023)
    s_b = [logistic(raw_b), logistic(raw_a)]  # rows in npi order: "0000000007", "0000000042"
    # A's percentiles: 2022 rank 20 + (1 + 1) / 2 = 21 of 50 -> 20 / 49 -> 40.82;
    # 2023 rank 60 + 1 = 61 of 81 -> 60 / 80 -> 75.0; mean 57.91. B: 80 / 80 -> 100.
    pct = [100.0, round((40.82 + 75.0) / 2, 2)]
    # A's growth 0.5 against (T, CA, 2023): (0.5 - 0.1) / (1.4826 x 0.2); B: one year only
    z_t = max(0.0, clip((0.5 - 0.1) / (SCALE * 0.2)))
    s_t = [0.0, logistic(z_t)]
    zscore = [0.0, round(z_t, 4)]
    s_o = [0.0, 25.0]  # A: 100 x 1 / 4; B: no SNF
    s_e = [100.0, 50.0]  # B excluded itself; A: one excluded chain member
    s_p = [100.0, 40.0]  # B: one program; A: 700 / 1000 = 0.7 -> 200 x 0.2
    r_raw = [
        round(0.30 * s_b[i] + 0.25 * s_o[i] + 0.20 * s_t[i] + 0.15 * s_e[i] + 0.10 * s_p[i], 4)
        for i in range(2)
    ]
    assert s_b == [79.26, 60.32]
    assert s_t == [0.0, 66.25]
    assert pct == [100.0, 57.91]
    return pl.DataFrame(
        {
            "npi": ["0000000007", "0000000042"],
            "r_raw": r_raw,
            "billing_outlier_score": s_b,
            "billing_outlier_percentile": pct,
            "ownership_chain_risk": s_o,
            "payment_trajectory_score": s_t,
            "payment_trajectory_zscore": zscore,
            "exclusion_proximity_score": s_e,
            "program_concentration_score": s_p,
            "peer_taxonomy": ["T", "T"],
            "peer_state": ["NY", "CA"],
            "peer_count": pl.Series([81, 81], dtype=pl.Int32),  # the latest year's group
            "data_window_years": pl.Series([[2023], [2022, 2023]], dtype=pl.List(pl.Int32)),
            "flags": [
                # B: S_b 79.26 < 80, so no growth flag (and S_t is 0)
                [
                    BILLING_FLAG,
                    "Highly concentrated in a single payer program (Medicaid).",
                    EXCLUSION_FLAG,
                ],
                [],
            ],
            "top_program": ["Medicaid", "Medicare"],
            "snf_entity_id": [None, "E1"],
            "chain_provider_count": [0, 4],
            "chain_excluded_count": [0, 1],
            "owner_excluded": [False, False],
            "actively_excluded": [True, False],
        },
        schema_overrides={"flags": pl.List(pl.String), "snf_entity_id": pl.String},
    ).with_columns(pl.struct(COMPONENTS).alias("components"))


def test_score_providers_against_hand_worked_components() -> None:
    provider_years, providers = inputs()
    out = score_providers(provider_years, providers, peer_stats(), t=T, cfg=CFG).collect()
    assert out.columns == chunk_columns()
    assert_frame_equal(out, expected_rows().select(chunk_columns()))


def test_the_batch_does_not_change_a_provider_score() -> None:
    provider_years, providers = inputs()
    alone = score_providers(
        provider_years.filter(pl.col("npi") == 42),
        providers.filter(pl.col("npi") == 42),
        peer_stats(),
        t=T,
        cfg=CFG,
    ).collect()
    assert_frame_equal(alone, expected_rows().select(chunk_columns()).slice(1))
