"""Global peer statistics (SPEC §4, §6.1): computed once per run over the whole population.

Billing groups are (taxonomy_10, state, year) with a (taxonomy_10, year) fallback,
over eligible provider-years only; growth groups are (taxonomy_10, state, year)
over provider-years having a growth value. Percent ranks of m1 are answered
from per-group cumulative counts, so a batch never needs the other providers' rows.
"""

from __future__ import annotations

import polars as pl

from scoring.config import Settings

PRIMARY_KEYS = ["peer_taxonomy", "peer_state", "year"]
FALLBACK_KEYS = ["peer_taxonomy", "year"]
GROWTH_KEYS = ["peer_taxonomy", "peer_state", "year"]
METRICS = ["x1", "x2", "x3"]


def billing_metrics(py: pl.LazyFrame, cfg: Settings) -> pl.LazyFrame:
    """m1 payments/claim, m2 claims/beneficiary, m3 payments; x_k = ln(m_k + EPS); eligibility."""
    m1 = pl.col("payments") / pl.max_horizontal("claims", 1.0)
    m2 = pl.col("claims") / pl.max_horizontal("beneficiaries", 1.0)
    m3 = pl.col("payments")
    return py.with_columns(
        m1.alias("m1"),
        (m1 + cfg.eps).log().alias("x1"),
        (m2 + cfg.eps).log().alias("x2"),
        (m3 + cfg.eps).log().alias("x3"),
        eligible_expr(cfg).alias("eligible"),
    )


def eligible_expr(cfg: Settings) -> pl.Expr:
    """A provider-year is a peer-group member with at least `peer_min_claims` claims."""
    return pl.col("claims") >= cfg.peer_min_claims


def _median_and_mad(column: str) -> list[pl.Expr]:
    median = pl.col(column).median()
    return [
        median.alias(f"med_{column}"),
        (pl.col(column) - median).abs().median().alias(f"mad_{column}"),
    ]


def billing_group_stats(eligible_py: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Member count, median and MAD of each x_k per peer group, numbered by group_id."""
    aggs = [pl.len().cast(pl.Int64).alias("n")]
    for metric in METRICS:
        aggs += _median_and_mad(metric)
    return eligible_py.group_by(keys).agg(aggs).sort(keys).with_row_index("group_id")


def growth_group_stats(py_with_growth: pl.LazyFrame) -> pl.LazyFrame:
    """Median and MAD of growth g per (taxonomy_10, state, year), any group size."""
    return (
        py_with_growth.filter(pl.col("g").is_not_null())
        .group_by(GROWTH_KEYS)
        .agg(_median_and_mad("g"))
        .sort(GROWTH_KEYS)
    )


def m1_rank_table(
    eligible_py: pl.LazyFrame, group_stats: pl.LazyFrame, keys: list[str]
) -> pl.LazyFrame:
    """Per group_id and distinct m1: how many eligible members have m1 equal and <= it."""
    return (
        eligible_py.join(group_stats.select(*keys, "group_id"), on=keys)
        .group_by("group_id", "m1")
        .agg(pl.len().cast(pl.Int64).alias("n_eq"))
        .sort("group_id", "m1")
        .with_columns(pl.col("n_eq").cum_sum().over("group_id").alias("n_le"))
        .sort("m1")
    )


def member_rank_counts(
    eligible_py: pl.LazyFrame,
    group_stats: pl.LazyFrame,
    rank_table: pl.LazyFrame,
    keys: list[str],
    suffix: str,
) -> pl.LazyFrame:
    """Per member provider-year (npi, year): members of its group strictly below and equal
    to its m1. What m1_percent_rank_counts answers for a member (its m1 is in its group's
    table), computed once where the group is whole, so a batch reads its own rows only."""
    return (
        eligible_py.join(group_stats.select(*keys, "group_id"), on=keys)
        .join(rank_table, on=["group_id", "m1"])
        .select(
            "npi",
            "year",
            (pl.col("n_le") - pl.col("n_eq")).alias(f"{suffix}_n_lt"),
            pl.col("n_eq").alias(f"{suffix}_n_eq"),
        )
    )


def m1_percent_rank_counts(
    rows: pl.LazyFrame, rank_table: pl.LazyFrame, suffix: str
) -> pl.LazyFrame:
    """Members of the row's group (column group_id) strictly below and equal to its m1."""
    matched = rows.sort("m1").join_asof(
        rank_table.rename({"m1": "ref_m1"}),
        left_on="m1",
        right_on="ref_m1",
        by="group_id",
        strategy="backward",
        allow_exact_matches=True,
        check_sortedness=False,  # both sides are sorted by m1 just above
    )
    exact = pl.col("ref_m1") == pl.col("m1")
    n_le = pl.col("n_le").fill_null(0)
    n_eq = pl.when(exact).then(pl.col("n_eq")).otherwise(0)
    return matched.select(
        "npi",
        "year",
        (n_le - n_eq).alias(f"{suffix}_n_lt"),
        n_eq.alias(f"{suffix}_n_eq"),
    )
