"""Per-provider aggregation over the window's year slots, in a fixed order.

Providers have at most ``window_years`` rows; pivoting them into one column per
slot (slot k = year T-k) and combining the slots left to right makes every sum
independent of how rows were batched or threaded: byte-identical output.
"""

from __future__ import annotations

import polars as pl

from scoring.config import Settings


def slot_name(column: str, k: int) -> str:
    """Column holding `column` for year T-k."""
    return f"{column}__t{k}"


def slot_aggs(columns: list[str], t: int, cfg: Settings) -> list[pl.Expr]:
    """group_by('npi') aggregations spreading each column over the year slots."""
    return [
        pl.col(column).filter(pl.col("year") == t - k).first().alias(slot_name(column, k))
        for column in columns
        for k in range(cfg.window_years)
    ]


def decay_weighted_mean(column: str, cfg: Settings) -> pl.Expr:
    """sum w_t v_t / sum w_t over slots where v is present, w_t = ALPHA^(T - year); else null."""
    numerator = pl.lit(0.0)
    denominator = pl.lit(0.0)
    for k in range(cfg.window_years):
        value = pl.col(slot_name(column, k))
        weight = cfg.alpha**k
        numerator = numerator + (value * weight).fill_null(0.0)
        denominator = denominator + pl.when(value.is_not_null()).then(weight).otherwise(0.0)
    return pl.when(denominator > 0).then(numerator / denominator)


def plain_mean(column: str, cfg: Settings) -> pl.Expr:
    """Unweighted mean over slots where the value is present; null if none."""
    total = pl.lit(0.0)
    count = pl.lit(0)
    for k in range(cfg.window_years):
        value = pl.col(slot_name(column, k))
        total = total + value.fill_null(0.0)
        count = count + value.is_not_null().cast(pl.Int32)
    return pl.when(count > 0).then(total / count)


def logistic_score(z: pl.Expr, cfg: Settings) -> pl.Expr:
    """100 / (1 + exp(-z / 2)), rounded to 2 (from the unrounded z)."""
    return (100.0 / (1.0 + (-z / cfg.logistic_scale).exp())).round(2)


def robust_z(x: pl.Expr, median: pl.Expr, mad: pl.Expr, cfg: Settings) -> pl.Expr:
    """clip((x - median) / (1.4826 * max(MAD, 1e-9)), -cap, cap)."""
    scale = cfg.mad_scale * pl.max_horizontal(mad, pl.lit(cfg.mad_floor))
    return ((x - median) / scale).clip(-cfg.z_cap, cfg.z_cap)
