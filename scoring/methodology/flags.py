"""Human-readable flags: the SPEC §4 rules with their exact texts, and how they combine.

Each rule belongs to a component (scoring.methodology.registry says which, and where it sorts);
`flags_expr` lists the texts of the rules that hold, in their order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl

from scoring.config import Settings

BILLING_FLAG = "Billing > 95th percentile vs. state/taxonomy peers (payments per claim)."
GROWTH_FLAG = "Rapid growth and high billing intensity vs. peers."
EXCLUSION_FLAG = "Direct or owner-level exclusion on record."


@dataclass(frozen=True)
class Flag:
    """One flag rule: `order` places it in the flags list (SPEC §4: 10, 20, ... 50);
    `text` is the flag's text where the rule holds, else null."""

    order: int
    text: Callable[[Settings], pl.Expr]


def billing_flag(cfg: Settings) -> pl.Expr:
    high = pl.col("billing_outlier_percentile") >= cfg.flag_billing_percentile
    return pl.when(high).then(pl.lit(BILLING_FLAG))


def growth_flag(cfg: Settings) -> pl.Expr:
    both = (pl.col("billing_outlier_score") >= cfg.flag_growth_billing_score) & (
        pl.col("payment_trajectory_score") >= cfg.flag_growth_trajectory_score
    )
    return pl.when(both).then(pl.lit(GROWTH_FLAG))


def ownership_flag(cfg: Settings) -> pl.Expr:
    excluded_n = pl.col("chain_excluded_count").fill_null(0)
    text = pl.format(
        "Ownership chain includes {} excluded {}.",
        excluded_n,
        pl.when(excluded_n == 1).then(pl.lit("provider")).otherwise(pl.lit("providers")),
    )
    return pl.when(pl.col("ownership_chain_risk") >= cfg.flag_ownership_score).then(text)


def concentration_flag(cfg: Settings) -> pl.Expr:
    text = pl.format("Highly concentrated in a single payer program ({}).", pl.col("top_program"))
    return pl.when(pl.col("program_concentration_score") >= cfg.flag_concentration_score).then(text)


def exclusion_flag(cfg: Settings) -> pl.Expr:
    high = pl.col("exclusion_proximity_score") >= cfg.flag_exclusion_score
    return pl.when(high).then(pl.lit(EXCLUSION_FLAG))


def flags_expr(flags: Iterable[Flag], cfg: Settings) -> pl.Expr:
    """List of flag texts for each provider, in the rules' order (empty list when none apply)."""
    ordered = sorted(flags, key=lambda flag: flag.order)
    return pl.concat_list([flag.text(cfg) for flag in ordered]).list.drop_nulls().alias("flags")
