"""billing.py: component 1, billing outlier S_b, and its percentile (SPEC §4).

z_k = clip((x_k - median) / (1.4826 * max(MAD, 1e-9)), -5, 5) against the primary group
(taxonomy_10, state, year) when it has >= 50 eligible members, else the fallback
(taxonomy_10, year); year score = mean of max(z_k, 0); percentile (rank - 1) / (n - 1) with
average ranks, 0.5 when not eligible or n = 1; S_b = round(100 / (1 + exp(-raw_z / 2)), 2).
"""

from __future__ import annotations

import math

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.components.billing import billing_provider_exprs, billing_year_scores
from scoring.methodology.decay import slot_aggs
from scoring.methodology.peer_stats import (
    FALLBACK_KEYS,
    PRIMARY_KEYS,
    billing_group_stats,
    billing_metrics,
    m1_rank_table,
)

CFG = Settings()
MAD_SCALE = 1.4826
MAD_FLOOR = 1e-9
KEY_SCHEMA = {"peer_taxonomy": pl.String, "peer_state": pl.String, "year": pl.Int32}
STAT_NAMES = ["n", "med_x1", "mad_x1", "med_x2", "mad_x2", "med_x3", "mad_x3"]


def stats(rows: list[tuple], keys: list[str]) -> pl.LazyFrame:
    schema = {"group_id": pl.UInt32, **{k: KEY_SCHEMA[k] for k in keys}, "n": pl.Int64}
    schema.update(dict.fromkeys(STAT_NAMES[1:], pl.Float64))
    return pl.LazyFrame(rows, schema=schema, orient="row")


def ranks(rows: list[tuple]) -> pl.LazyFrame:
    schema = {"group_id": pl.UInt32, "m1": pl.Float64, "n_eq": pl.Int64, "n_le": pl.Int64}
    return pl.LazyFrame(rows, schema=schema, orient="row").sort("m1")


def z(x: float, median: float, mad: float) -> float:
    """SPEC's robust z, by hand."""
    return max(-5.0, min(5.0, (x - median) / (MAD_SCALE * max(mad, MAD_FLOOR))))


# Hand-made peer statistics for year 2022 (group ids number the sorted keys).
PRIMARY = stats(
    [
        (0, "T", "CA", 2022, 50, 2.0, 0.5, 1.0, 0.0, 5.0, 1.0),  # exactly 50: used
        (1, "T", "NY", 2022, 49, 4.0, 1.0, 0.0, 1.0, 5.0, 1.0),  # 49: fallback instead
        (2, "V", "WA", 2022, 1, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0),
    ],
    PRIMARY_KEYS,
)
FALLBACK = stats(
    [
        (0, "T", 2022, 99, 1.0, 2.0, 0.0, 1.0, 4.0, 0.5),
        (1, "V", 2022, 1, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0),
    ],
    FALLBACK_KEYS,
)
RANK_PRIMARY = ranks(
    [
        (0, 5.0, 20, 20),
        (0, 10.0, 9, 29),
        (0, 20.0, 21, 50),
        (1, 5.0, 48, 48),
        (1, 7.0, 1, 49),
        (2, 3.0, 1, 1),
    ]
)
RANK_FALLBACK = ranks([(0, 5.0, 40, 40), (0, 7.0, 1, 41), (0, 9.0, 58, 99), (1, 3.0, 1, 1)])

# npi, taxonomy, state, m1, x1, x2, x3, eligible (metrics given directly: billing_metrics
# has its own test)
ROWS = [
    (1, "T", "CA", 10.0, 3.0, 1.0, 4.0, True),  # primary group
    (2, "T", "CA", 20.0, -100.0, 1.000001, 5.0, True),  # z clipped both ways; MAD floor
    (3, "T", "NY", 7.0, 4.0, 0.0, 5.0, True),  # primary has 49: fallback
    (4, "U", "TX", 1.0, 1.0, 1.0, 1.0, True),  # no group at all
    (5, "T", "CA", 50.0, 2.5, 1.0, 6.0, False),  # not eligible: z all the same, pct 0.5
    (6, "V", "WA", 3.0, 1.0, 1.0, 1.0, True),  # fallback of one member: pct 0.5
]


def provider_years() -> pl.LazyFrame:
    schema = {
        "npi": pl.Int64,
        "peer_taxonomy": pl.String,
        "peer_state": pl.String,
        **dict.fromkeys(["m1", "x1", "x2", "x3"], pl.Float64),
        "eligible": pl.Boolean,
    }
    rows = pl.LazyFrame(ROWS, schema=schema, orient="row")
    return rows.with_columns(pl.lit(2022, dtype=pl.Int32).alias("year"))


def expected_year_scores() -> pl.DataFrame:
    z_a = [z(3.0, 2.0, 0.5), z(1.0, 1.0, 0.0), z(4.0, 5.0, 1.0)]  # 1.349, 0, -0.674
    z_b = [z(-100.0, 2.0, 0.5), z(1.000001, 1.0, 0.0), z(5.0, 5.0, 1.0)]  # -5, 5, 0
    z_c = [z(4.0, 1.0, 2.0), z(0.0, 0.0, 1.0), z(5.0, 4.0, 0.5)]  # fallback medians/MADs
    z_d = [0.0, 0.0, 0.0]
    z_e = [z(2.5, 2.0, 0.5), z(1.0, 1.0, 0.0), z(6.0, 5.0, 1.0)]
    z_f = [z(1.0, 1.0, 0.0)] * 3
    assert z_b[:2] == [-5.0, 5.0]
    zs = [z_a, z_b, z_c, z_d, z_e, z_f]
    return pl.DataFrame(
        {
            "npi": [1, 2, 3, 4, 5, 6],
            "z_x1": [row[0] for row in zs],
            "z_x2": [row[1] for row in zs],
            "z_x3": [row[2] for row in zs],
            "peer_count": [50, 50, 99, 0, 50, 1],
            "billing_year_score": [sum(max(v, 0.0) for v in row) / 3 for row in zs],
        }
    )


# percentiles: A m1 10 in primary 0: 20 below, 9 equal -> avg rank 20 + (9 + 1) / 2 = 25,
# (25 - 1) / 49 = 48.979... -> 48.98; B m1 20: 29 below, 21 equal -> rank 40, 39 / 49 ->
# 79.59; C m1 7 in fallback 0 (not primary 1, which would give 100): 40 below, 1 equal ->
# rank 41, 40 / 98 -> 40.82; D no group, E not eligible, F n = 1 -> 50
EXPECTED_PCT = [48.98, 79.59, 40.82, 50.0, 50.0, 50.0]


def year_scores(**kwargs: object) -> pl.DataFrame:
    out = billing_year_scores(
        provider_years(),
        primary=PRIMARY,
        fallback=FALLBACK,
        rank_primary=RANK_PRIMARY,
        rank_fallback=RANK_FALLBACK,
        cfg=CFG,
        **kwargs,  # type: ignore[arg-type]
    )
    return out.collect().sort("npi")


def test_year_scores_choose_the_group_and_clip() -> None:
    out = year_scores()
    got = out.select("npi", "z_x1", "z_x2", "z_x3", "peer_count", "billing_year_score")
    assert_frame_equal(got, expected_year_scores(), check_exact=False, rel_tol=0, abs_tol=1e-12)
    pct = pl.DataFrame({"npi": [1, 2, 3, 4, 5, 6], "billing_pct_year": EXPECTED_PCT})
    assert_frame_equal(out.select("npi", "billing_pct_year"), pct)


def test_year_scores_from_precomputed_member_counts_are_the_same() -> None:
    # what peer_stats.member_rank_counts gives the eligible members A, B, C, F
    counts = pl.LazyFrame(
        [
            (1, 2022, 20, 9, 0, 0),
            (2, 2022, 29, 21, 0, 0),
            (3, 2022, 48, 1, 40, 1),
            (6, 2022, 0, 1, 0, 1),
        ],
        schema={
            "npi": pl.Int64,
            "year": pl.Int32,
            "p_n_lt": pl.Int64,
            "p_n_eq": pl.Int64,
            "f_n_lt": pl.Int64,
            "f_n_eq": pl.Int64,
        },
        orient="row",
    )
    out = year_scores(member_counts=counts)
    pct = pl.DataFrame({"npi": [1, 2, 3, 4, 5, 6], "billing_pct_year": EXPECTED_PCT})
    assert_frame_equal(out.select("npi", "billing_pct_year"), pct)


def test_provider_score_decays_years_and_percentile_is_a_plain_mean() -> None:
    t = 2022
    years = pl.LazyFrame(
        {
            "npi": [1, 1, 1, 2, 3],
            "year": [2022, 2021, 2019, 2022, 2022],
            "billing_year_score": [1.0, 2.0, 0.0, 0.0, 5.0],
            "billing_pct_year": [48.98, 50.0, 79.59, 50.0, 100.0],
        }
    )
    slots = years.group_by("npi").agg(slot_aggs(["billing_year_score", "billing_pct_year"], t, CFG))
    out = slots.with_columns(billing_provider_exprs(CFG)).collect().sort("npi")
    # npi 1: w = 0.7 ** (T - year): 1, 0.7, 0.343 -> raw_z = (1 + 1.4 + 0) / 2.043
    raw_1 = (1 * 1.0 + 0.7 * 2.0 + 0.7**3 * 0.0) / (1 + 0.7 + 0.7**3)
    s_b = [
        round(100 / (1 + math.exp(-raw_1 / 2)), 2),  # 64.28
        50.0,  # raw_z 0: S_b = 100 / (1 + 1)
        round(100 / (1 + math.exp(-5 / 2)), 2),  # 92.41
    ]
    assert s_b == [64.28, 50.0, 92.41]
    expected = pl.DataFrame(
        {
            "npi": [1, 2, 3],
            "billing_outlier_score": s_b,
            # (48.98 + 50 + 79.59) / 3 = 59.5233 -> 59.52 (unweighted)
            "billing_outlier_percentile": [59.52, 50.0, 100.0],
        }
    )
    assert_frame_equal(out.select(expected.columns), expected)


def filler(npi: int, year: int, state: str = "CA", payments: float = 1000.0) -> dict:
    return {
        "npi": npi,
        "year": year,
        "peer_taxonomy": "T",
        "peer_state": state,
        "payments": payments,
        "claims": 100.0,
        "beneficiaries": 50.0,
    }


def test_fifty_eligible_members_make_the_primary_group() -> None:
    """Peer statistics computed by peer_stats on a population of 50+: A (npi 1) is in a CA
    group of 50 eligible in 2022 (primary) and of 49 in 2023 (fallback: CA + 3 NY = 52)."""
    rows = [filler(1, 2022, payments=2000.0), filler(1, 2023)]  # A: m1 20, then 10
    rows += [filler(100 + i, 2022) for i in range(49)]  # 49 + A = 50 eligible
    rows += [filler(200 + i, 2023) for i in range(48)]  # 48 + A = 49 eligible
    rows += [{**filler(300, 2023), "claims": 99.0}]  # in CA 2023 but not eligible
    rows += [filler(400 + i, 2023, "NY", payments=500.0) for i in range(3)]  # m1 5
    py = billing_metrics(pl.LazyFrame(rows, schema_overrides={"year": pl.Int32}), CFG)
    eligible = py.filter("eligible")
    primary = billing_group_stats(eligible, PRIMARY_KEYS).collect().lazy()
    fallback = billing_group_stats(eligible, FALLBACK_KEYS).collect().lazy()
    out = billing_year_scores(
        py,
        primary=primary,
        fallback=fallback,
        rank_primary=m1_rank_table(eligible, primary, PRIMARY_KEYS),
        rank_fallback=m1_rank_table(eligible, fallback, FALLBACK_KEYS),
        cfg=CFG,
    )
    got = out.filter(pl.col("npi").is_in([1, 400])).collect().sort("npi", "year")
    # 2022, A in CA (primary, 50): every filler has x1 = ln 11, x3 = ln 1001 -> medians ln 11,
    # ln 1001, MAD 0 -> floor 1e-9: A's ln 21 and ln 2001 clip to 5; x2 = ln 3 for all -> 0.
    # m1 20 is the top of 50: (50 - 1) / 49 -> 100.
    # 2023, A in the fallback (T, 2023) of 52: x1 [3 x ln 6, 49 x ln 11] -> median ln 11 =
    # A's own, MAD 0 -> z 0; m1: 3 below (NY at 5), 49 equal (A and 48 fillers at 10) ->
    # avg rank 3 + (49 + 1) / 2 = 28, (28 - 1) / 51 = 52.94 (the CA primary of 49 would give
    # all tied: (25 - 1) / 48 = 50).
    # 2023, NY member 400: primary NY has 3 -> fallback: 0 below, 3 equal -> rank 2,
    # 1 / 51 = 1.96; x1 ln 6 < ln 11 -> z clipped at -5 -> max(z, 0) = 0.
    expected = pl.DataFrame(
        {
            "npi": [1, 1, 400],
            "year": [2022, 2023, 2023],
            "peer_count": [50, 52, 52],
            "z_x1": [5.0, 0.0, -5.0],
            "z_x2": [0.0, 0.0, 0.0],
            "z_x3": [5.0, 0.0, -5.0],
            "billing_year_score": [10 / 3, 0.0, 0.0],
            "billing_pct_year": [100.0, round(27 / 51 * 100, 2), round(1 / 51 * 100, 2)],
        },
        schema_overrides={"year": pl.Int32},
    )
    assert expected["billing_pct_year"].to_list() == [100.0, 52.94, 1.96]
    assert_frame_equal(got.select(expected.columns), expected)
    slots = out.group_by("npi").agg(
        slot_aggs(["billing_year_score", "billing_pct_year"], 2023, CFG)
    )
    provider = slots.filter(pl.col("npi") == 1).with_columns(billing_provider_exprs(CFG)).collect()
    raw_z = (1 * 0.0 + 0.7 * (10 / 3)) / (1 + 0.7)  # 2023 weight 1, 2022 weight 0.7
    assert provider["billing_outlier_score"].to_list() == [
        round(100 / (1 + math.exp(-raw_z / 2)), 2)
    ]
    assert provider["billing_outlier_percentile"].to_list() == [round((100 + 52.94) / 2, 2)]
