"""Component 1, billing outlier (S_b), and its percentile (SPEC §4)."""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.methodology.decay import decay_weighted_mean, logistic_score, plain_mean, robust_z
from scoring.methodology.peer_stats import (
    FALLBACK_KEYS,
    METRICS,
    PRIMARY_KEYS,
    m1_percent_rank_counts,
)


def _prefixed(stats: pl.LazyFrame, keys: list[str], prefix: str) -> pl.LazyFrame:
    return stats.rename(
        {c: f"{prefix}{c}" for c in stats.collect_schema().names() if c not in keys}
    )


def billing_year_scores(
    py: pl.LazyFrame,
    *,
    primary: pl.LazyFrame,
    fallback: pl.LazyFrame,
    rank_primary: pl.LazyFrame,
    rank_fallback: pl.LazyFrame,
    cfg: Settings,
    member_counts: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Per provider-year: chosen peer group, z_k, year score and m1 percentile (x100, rounded 2).

    Expects billing metrics and peer attributes on `py`. `member_counts`: the rank counts
    of the rows' own (member) provider-years, precomputed (a full run); without it they
    are looked up in the rank tables (an incremental run's NPIs are not members).
    """
    with_groups = py.join(_prefixed(primary, PRIMARY_KEYS, "p_"), on=PRIMARY_KEYS, how="left").join(
        _prefixed(fallback, FALLBACK_KEYS, "f_"), on=FALLBACK_KEYS, how="left"
    )
    eligible = with_groups.filter("eligible")

    def rank_counts(prefix: str, table: pl.LazyFrame) -> pl.LazyFrame:
        rows = eligible.select("npi", "year", "m1", pl.col(f"{prefix}_group_id").alias("group_id"))
        return m1_percent_rank_counts(rows, table, prefix)

    if member_counts is None:
        joined = with_groups.join(
            rank_counts("p", rank_primary), on=["npi", "year"], how="left"
        ).join(rank_counts("f", rank_fallback), on=["npi", "year"], how="left")
    else:
        joined = with_groups.join(member_counts, on=["npi", "year"], how="left")
    use_primary = pl.col("p_n").fill_null(0) >= cfg.peer_min_group_size

    def chosen(name: str) -> pl.Expr:
        return pl.when(use_primary).then(pl.col(f"p_{name}")).otherwise(pl.col(f"f_{name}"))

    z_exprs = [
        pl.when(chosen("n").is_not_null())
        .then(robust_z(pl.col(m), chosen(f"med_{m}"), chosen(f"mad_{m}"), cfg))
        .otherwise(0.0)
        .alias(f"z_{m}")
        for m in METRICS
    ]
    n = chosen("n")
    avg_rank = chosen("n_lt") + (chosen("n_eq") + 1) / 2
    percent_rank = (
        pl.when(pl.col("eligible") & (n > 1)).then((avg_rank - 1) / (n - 1)).otherwise(0.5)
    )
    positive = [pl.max_horizontal(pl.col(f"z_{m}"), 0.0) for m in METRICS]
    year_score = positive[0]
    for term in positive[1:]:
        year_score = year_score + term
    return joined.with_columns(*z_exprs, n.fill_null(0).alias("peer_count")).with_columns(
        (year_score / len(METRICS)).alias("billing_year_score"),
        (percent_rank * 100).round(2).alias("billing_pct_year"),
    )


def billing_provider_exprs(cfg: Settings) -> list[pl.Expr]:
    """S_b and the provider percentile from the year-slot columns."""
    raw_z = decay_weighted_mean("billing_year_score", cfg).fill_null(0.0)
    return [
        logistic_score(raw_z, cfg).alias("billing_outlier_score"),
        plain_mean("billing_pct_year", cfg).round(2).alias("billing_outlier_percentile"),
    ]
