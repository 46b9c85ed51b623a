"""Component 3, payment trajectory (S_t) (SPEC §4)."""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.methodology.decay import decay_weighted_mean, logistic_score, robust_z
from scoring.methodology.peer_stats import GROWTH_KEYS


def trajectory_year_scores(py: pl.LazyFrame, growth: pl.LazyFrame, cfg: Settings) -> pl.LazyFrame:
    """Per provider-year with a growth value: max(z_g, 0) against its growth group."""
    z = robust_z(pl.col("g"), pl.col("med_g"), pl.col("mad_g"), cfg)
    return py.join(growth, on=GROWTH_KEYS, how="left").with_columns(
        pl.when(pl.col("g").is_not_null()).then(pl.max_horizontal(z, 0.0)).alias("growth_z")
    )


def trajectory_provider_exprs(cfg: Settings) -> list[pl.Expr]:
    """Decay-weighted zscore (rounded 4) and S_t; a provider without growth gets 0 and 0."""
    z = decay_weighted_mean("growth_z", cfg)
    return [
        z.fill_null(0.0).round(4).alias("payment_trajectory_zscore"),
        pl.when(z.is_not_null())
        .then(logistic_score(z, cfg))
        .otherwise(0.0)
        .alias("payment_trajectory_score"),
    ]
