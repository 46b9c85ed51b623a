"""Human-readable flags, in SPEC §4 order with the exact texts."""

from __future__ import annotations

import polars as pl

from scoring.config import Settings

BILLING_FLAG = "Billing > 95th percentile vs. state/taxonomy peers (payments per claim)."
GROWTH_FLAG = "Rapid growth and high billing intensity vs. peers."
EXCLUSION_FLAG = "Direct or owner-level exclusion on record."


def flags_expr(cfg: Settings) -> pl.Expr:
    """List of flag texts for each provider (empty list when none apply)."""
    excluded_n = pl.col("chain_excluded_count").fill_null(0)
    ownership_text = pl.format(
        "Ownership chain includes {} excluded {}.",
        excluded_n,
        pl.when(excluded_n == 1).then(pl.lit("provider")).otherwise(pl.lit("providers")),
    )
    concentration_text = pl.format(
        "Highly concentrated in a single payer program ({}).", pl.col("top_program")
    )
    candidates = [
        (pl.col("billing_outlier_percentile") >= cfg.flag_billing_percentile, pl.lit(BILLING_FLAG)),
        (
            (pl.col("billing_outlier_score") >= cfg.flag_growth_billing_score)
            & (pl.col("payment_trajectory_score") >= cfg.flag_growth_trajectory_score),
            pl.lit(GROWTH_FLAG),
        ),
        (pl.col("ownership_chain_risk") >= cfg.flag_ownership_score, ownership_text),
        (pl.col("program_concentration_score") >= cfg.flag_concentration_score, concentration_text),
        (pl.col("exclusion_proximity_score") >= cfg.flag_exclusion_score, pl.lit(EXCLUSION_FLAG)),
    ]
    return (
        pl.concat_list([pl.when(cond).then(text) for cond, text in candidates])
        .list.drop_nulls()
        .alias("flags")
    )
