"""Component 5, program concentration (S_p) (SPEC §4)."""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.methodology.amounts import from_micros, micros


def program_amounts(payments: pl.LazyFrame, t: int, cfg: Settings) -> pl.LazyFrame:
    """Per NPI and program over years T-2..T: the total in exact micro-units (`amount`)."""
    recent = payments.filter(pl.col("year").is_between(t - cfg.concentration_years + 1, t))
    amount = micros("payments", cfg).sum().alias("amount")  # exact, order-independent
    per_program = recent.group_by("npi", "program").agg(amount)
    return per_program.with_columns(pl.col("program").cast(pl.String))  # name order for ties


def program_shares(per_program: pl.LazyFrame, cfg: Settings) -> pl.LazyFrame:
    """program_amounts as floats, sorted: what `explain` shows of a provider's programs."""
    return per_program.with_columns(from_micros("amount", cfg)).sort("npi", "program")


def program_totals(per_program: pl.LazyFrame, cfg: Settings) -> pl.LazyFrame:
    """Per NPI, from its program_amounts: the largest program (ties alphabetical), its total,
    the total."""
    totals = per_program.group_by("npi").agg(
        pl.col("program")
        .sort_by("amount", "program", descending=[True, False])
        .first()
        .alias("top_program"),
        pl.col("amount").max().alias("top_program_total"),
        pl.col("amount").sum().alias("recent_total"),
    )
    return totals.with_columns(
        from_micros("top_program_total", cfg), from_micros("recent_total", cfg)
    )


def concentration_exprs(cfg: Settings) -> list[pl.Expr]:
    """S_p = 0 if share <= 0.5 else min(100, 200 * (share - 0.5)); no payments: 0 and no program."""
    total = pl.col("recent_total").fill_null(0.0)
    share = pl.col("top_program_total").fill_null(0.0) / pl.max_horizontal(total, 1.0)
    threshold = cfg.concentration_threshold
    score = (
        pl.when(share <= threshold)
        .then(0.0)
        .otherwise(pl.min_horizontal(100.0, (share - threshold) * (100.0 / (1.0 - threshold))))
    )
    return [
        score.round(2).alias("program_concentration_score"),
        pl.when(total > 0).then(pl.col("top_program")).alias("top_program"),
    ]
