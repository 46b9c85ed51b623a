"""Composite r_raw, PERCENT_RANK calibration and labels (SPEC §4)."""

from __future__ import annotations

import polars as pl

from scoring.config import LABELS, Settings
from scoring.methodology.registry import weights


def r_raw_expr(cfg: Settings) -> pl.Expr:
    """Weighted sum of the registered components (missing count 0), rounded to 4.

    Summed in registry order from 0.0 (SPEC's 0.30 S_b + 0.25 S_o + 0.20 S_t + 0.15 S_e +
    0.10 S_p): a component registered after them with weight 0 adds exactly 0.0."""
    total = pl.lit(0.0)
    for column, weight in weights(cfg).items():
        total = total + weight * pl.col(column).fill_null(0.0)
    return total.round(4).alias("r_raw")


def calibrated_score(r_raw: pl.Expr, reference_size: pl.Expr) -> pl.Expr:
    """100 x (reference members with a strictly smaller r_raw) / (N - 1), rounded 2; N = 1 gives 0.

    SQL PERCENT_RANK: ties share a score, so the result never depends on row order.
    """
    smaller = r_raw.rank("min") - 1
    return (
        pl.when(reference_size > 1)
        .then(100.0 * smaller / (reference_size - 1))
        .otherwise(0.0)
        .round(2)
        .alias("risk_score")
    )


def reference_risk_score(r_raw: pl.Series, reference: pl.Series) -> pl.Series:
    """PERCENT_RANK of each r_raw within a reference population (incremental runs).

    An NPI whose inputs did not change gets exactly its full-run score: the count of
    strictly smaller reference values and N are the same as in the full run.
    """
    ordered = reference.sort()
    size = ordered.len()
    smaller = ordered.search_sorted(r_raw, side="left").cast(pl.Float64)
    if size <= 1:
        return pl.repeat(0.0, r_raw.len(), eager=True).alias("risk_score")
    return (100.0 * smaller / (size - 1)).round(2).alias("risk_score")


def label_expr(cfg: Settings) -> pl.Expr:
    """High / Elevated / Moderate / Low from risk_score."""
    score = pl.col("risk_score")
    high, elevated, moderate, low = LABELS
    return (
        pl.when(score >= cfg.label_high)
        .then(pl.lit(high))
        .when(score >= cfg.label_elevated)
        .then(pl.lit(elevated))
        .when(score >= cfg.label_moderate)
        .then(pl.lit(moderate))
        .otherwise(pl.lit(low))
        .alias("risk_label")
    )
