"""NPI validation: ten digits with a Luhn check digit over the prefix 80840 (CMS rule)."""

from __future__ import annotations

import polars as pl

# Luhn over "80840" + the first nine digits: the prefix always contributes 24.
_PREFIX_SUM = 24
_NPI_PATTERN = r"^[0-9]{10}$"


def luhn_check_digit(base9: pl.Expr) -> pl.Expr:
    """Check digit for a nine-digit NPI base given as an integer expression."""
    total = pl.lit(_PREFIX_SUM, dtype=pl.Int64)
    for position in range(9):  # position 0 is the rightmost digit of the base
        digit = (base9 // (10**position)) % 10
        if position % 2 == 0:
            doubled = digit * 2
            digit = doubled // 10 + doubled % 10
        total = total + digit
    return (10 - total % 10) % 10


def npi_problem(npi: pl.Expr) -> pl.Expr:
    """Why an NPI string is invalid (null when it is valid)."""
    as_int = npi.cast(pl.Int64, strict=False)
    return (
        pl.when(npi.is_null() | (npi.str.len_bytes() == 0))
        .then(pl.lit("npi missing"))
        .when(~npi.str.contains(_NPI_PATTERN))
        .then(pl.lit("npi not 10 digits"))
        .when(luhn_check_digit(as_int // 10) != as_int % 10)
        .then(pl.lit("npi check digit invalid"))
    )


def npi_reasons(npi: pl.Series) -> pl.Series:
    """npi_problem for a large column: the check digit is verified once per distinct NPI."""
    well_formed = npi.str.contains(_NPI_PATTERN).fill_null(False)
    as_int = pl.select(pl.when(well_formed).then(npi.cast(pl.Int64, strict=False))).to_series()
    distinct = as_int.unique().drop_nulls().to_frame("n")
    failing = distinct.filter(luhn_check_digit(pl.col("n") // 10) != pl.col("n") % 10)["n"]
    return pl.select(
        pl.when(npi.is_null() | (npi.str.len_bytes() == 0))
        .then(pl.lit("npi missing"))
        .when(~well_formed)
        .then(pl.lit("npi not 10 digits"))
        .when(as_int.is_in(failing.implode()))
        .then(pl.lit("npi check digit invalid"))
        .alias("npi_reason")
    ).to_series()


def npi_to_int(npi: pl.Expr) -> pl.Expr:
    """Internal NPI key: validated NPIs are joined and sorted as integers."""
    return npi.cast(pl.Int64)


def npi_to_str(npi: pl.Expr) -> pl.Expr:
    """Back to the published 10-character form."""
    return npi.cast(pl.String).str.zfill(10)


def make_npi(base9: pl.Expr) -> pl.Expr:
    """A valid integer NPI from a nine-digit base (used by the sample-data generator)."""
    return base9 * 10 + luhn_check_digit(base9)
