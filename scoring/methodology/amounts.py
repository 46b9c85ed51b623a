"""Exact totals: amounts are summed as integer micro-units.

Floating-point addition is not associative, and polars' multi-threaded group-by
does not promise an order, so plain float sums can differ in the last bit from
run to run — enough to move a score across a rounding edge. Summing integers
is exact in any order; one division turns the total back into a float.

Totals are Int128: one row is at most `max_amount` (1e12, 1e18 micro-units, which Int64
holds), but ten such rows of one provider-year already pass Int64's 9.2e18 and would
wrap to a negative total that looks like any other number. Int128 holds the sum of
more rows than any input can have.
"""

from __future__ import annotations

import polars as pl

from scoring.config import Settings

AMOUNTS = ("payments", "claims", "beneficiaries")  # payments_combined's amounts (SPEC §3)


def micros(column: str, cfg: Settings) -> pl.Expr:
    """The amount in integer micro-units (exact for values with up to 6 decimals), as Int128
    so that sums of them never wrap."""
    return (pl.col(column) * cfg.amount_scale).round().cast(pl.Int128)


def from_micros(column: str, cfg: Settings) -> pl.Expr:
    """Back to a float amount, correctly rounded (IEEE division of the exact total).

    numpy divides element by element; polars rewrites division by a constant as a
    multiplication with its reciprocal, which is off by an ulp (0.06999999999999999).
    The Int128 total becomes the nearest float first: exact up to 2**53 micro-units
    (9e9 dollars), correctly rounded above, the same in any order either way.
    """
    scale = float(cfg.amount_scale)
    return (
        pl.col(column)
        .cast(pl.Float64)
        .map_batches(
            lambda totals: pl.Series(
                totals.name, totals.to_numpy() / scale, dtype=pl.Float64, nan_to_null=True
            ),
            return_dtype=pl.Float64,
        )
    )
