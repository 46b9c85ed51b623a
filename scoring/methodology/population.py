"""Scoring window, provider-year aggregate and peer attributes (SPEC §4 'Population and window')."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import polars as pl

from scoring.config import Settings
from scoring.errors import InputError
from scoring.methodology.amounts import AMOUNTS, from_micros, micros

PROVIDER_YEAR_KEYS = ("npi", "year")


@dataclass(frozen=True)
class WindowEnd:
    year: int
    reason: str


def npis_per_year(payments: pl.LazyFrame) -> pl.LazyFrame:
    """Distinct billing NPIs per year (of valid payment rows)."""
    return payments.group_by("year").agg(pl.col("npi").n_unique().alias("npis")).sort("year")


def window_end(per_year: pl.DataFrame, cfg: Settings) -> WindowEnd:
    """T: the configured as_of_year, else the latest year in which at least
    `window_end_min_share` as many distinct NPIs bill as in the busiest year (SPEC §4)."""
    if cfg.as_of_year is not None:
        return WindowEnd(cfg.as_of_year, "as_of_year is set")
    if per_year.is_empty():
        msg = "no valid payment rows: cannot determine the scoring window"
        raise InputError(msg)
    busiest = per_year.sort("npis", "year", descending=[True, False]).row(0, named=True)
    # Exact: 0.55 * 100 is 55.00000000000001 in floats; the share as the decimal it was written.
    # Compared in Python integers over the years (a few dozen rows): a share written with
    # many digits (0.3333333333333333: denominator 10**16) times millions of NPIs would
    # overflow Int64 and silently move the window.
    share = Fraction(repr(cfg.window_end_min_share))
    enough = [
        int(year)
        for year, npis in per_year.select("year", "npis").iter_rows()
        if int(npis) * share.denominator >= share.numerator * int(busiest["npis"])
    ]
    t = max(enough)
    later = per_year.filter(pl.col("year") > t)
    reason = (
        f"the latest year in which at least {cfg.window_end_min_share:.0%} as many NPIs bill "
        f"as in the busiest year ({busiest['year']}: {busiest['npis']:,} NPIs)"
    )
    if not later.is_empty():
        listed = ", ".join(f"{y}: {n:,} NPI{'' if n == 1 else 's'}" for y, n in later.iter_rows())
        reason += f"; later years have too few to end the window ({listed})"
    return WindowEnd(t, reason)


def in_window(t: int, cfg: Settings) -> pl.Expr:
    """Years T-(window-1)..T."""
    return pl.col("year").is_between(t - cfg.window_years + 1, t)


def provider_years(payments: pl.LazyFrame, cfg: Settings) -> pl.LazyFrame:
    """Sum payments, claims, beneficiaries over programs per (npi, year), exactly."""
    return (
        payments.group_by(PROVIDER_YEAR_KEYS)
        .agg(micros(column, cfg).sum() for column in AMOUNTS)
        .with_columns(from_micros(column, cfg) for column in AMOUNTS)
        .sort(PROVIDER_YEAR_KEYS)
    )


def with_growth(py: pl.LazyFrame) -> pl.LazyFrame:
    """Growth g vs the provider's previous year with data (null for its first year)."""
    prev = pl.col("payments").shift(1).over("npi", order_by="year")
    return py.with_columns(((pl.col("payments") - prev) / pl.max_horizontal(prev, 1.0)).alias("g"))


def _non_empty(column: str) -> pl.Expr:
    """The value as stored when it is not null and not the empty string."""
    value = pl.col(column).cast(pl.String)
    return pl.when(value.str.len_bytes() > 0).then(value)


def _first_in_order(column: str) -> pl.Expr:
    """The first non-null value by (program, year, value): a total order over the rows."""
    return pl.col(column).sort_by("program", "year", column).drop_nulls().first()


def peer_attributes(
    population: pl.LazyFrame, providers: pl.LazyFrame, payments: pl.LazyFrame, cfg: Settings
) -> pl.LazyFrame:
    """Per NPI: taxonomy_10 and state, each from providers, then payment rows, then 'Unknown'.

    The payment-row fallback takes the first non-empty value ordered by program name, then
    year, then the value itself (plain string order): never the order the rows came in.
    """
    from_providers = providers.select(
        "npi", _non_empty("taxonomy_1").alias("p_tax"), _non_empty("state").alias("p_state")
    )
    base = population.join(from_providers, on="npi", how="left")
    needing = base.filter(pl.col("p_tax").is_null() | pl.col("p_state").is_null()).select("npi")
    from_payments = (
        payments.join(needing, on="npi", how="semi")
        .select(
            "npi",
            pl.col("program").cast(pl.String),
            "year",
            _non_empty("taxonomy").alias("r_tax"),
            _non_empty("state").alias("r_state"),
        )
        .group_by("npi")
        .agg(_first_in_order("r_tax"), _first_in_order("r_state"))
    )
    unknown = pl.lit(cfg.unknown_value)
    return base.join(from_payments, on="npi", how="left").select(
        "npi",
        pl.coalesce("p_tax", "r_tax", unknown)
        .str.slice(0, cfg.taxonomy_prefix_len)
        .alias("peer_taxonomy"),
        pl.coalesce("p_state", "r_state", unknown).alias("peer_state"),
    )
