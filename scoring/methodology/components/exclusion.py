"""LEIE status and component 4, exclusion proximity (S_e) (SPEC §4)."""

from __future__ import annotations

import polars as pl

from scoring.config import Settings


def active_exclusions(exclusions: pl.LazyFrame) -> pl.LazyFrame:
    """NPIs with an LEIE row not reinstated (false or null); `is_excluded` is never used."""
    return (
        exclusions.filter(pl.col("npi").is_not_null() & ~pl.col("reinstated").fill_null(False))
        .select("npi")
        .unique()
        .with_columns(pl.lit(True).alias("actively_excluded"))
    )


def exclusion_proximity_expr(cfg: Settings) -> pl.Expr:
    """100 own exclusion, else 80 owner-level exclusion, else 50 excluded chain member, else 0"""
    return (
        pl.when(pl.col("actively_excluded").fill_null(False))
        .then(cfg.exclusion_direct_score)
        .when(pl.col("owner_excluded").fill_null(False))
        .then(cfg.exclusion_owner_score)
        .when(pl.col("chain_excluded_count").fill_null(0) > 0)
        .then(cfg.exclusion_chain_score)
        .otherwise(0.0)
        .alias("exclusion_proximity_score")
    )
