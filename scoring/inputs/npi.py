"""NPI validation: ten digits with a Luhn check digit over the prefix 80840 (CMS rule)."""

from __future__ import annotations

import polars as pl

from scoring.errors import InputError

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


def npi_problems(distinct: pl.Series) -> pl.DataFrame:
    """(npi, reason) for each distinct non-empty NPI string that is invalid."""
    frame = distinct.drop_nulls().unique().to_frame("npi").filter(pl.col("npi").str.len_bytes() > 0)
    return frame.select("npi", npi_problem(pl.col("npi")).alias("reason")).drop_nulls("reason")


def npi_reasons(npi: pl.Series, problems: pl.DataFrame | None = None) -> pl.Series:
    """npi_problem for a large column: looked up from `problems` (the invalid distinct
    values of the whole table) when given, else checked here, the check digit once per
    distinct integer (hashing integers, not strings: a third of the time of a lookup)."""
    missing = npi.is_null() | (npi.str.len_bytes() == 0)
    if problems is None:
        digits = npi.str.contains(_NPI_PATTERN).fill_null(False)
        as_int = npi.cast(pl.Int64, strict=False)
        distinct = as_int.filter(digits).unique().to_frame("n")
        wrong = distinct.filter(luhn_check_digit(pl.col("n") // 10) != pl.col("n") % 10)
        reason = pl.when(missing).then(pl.lit("npi missing")).when(~digits)
        reason = reason.then(pl.lit("npi not 10 digits"))
        if not wrong.is_empty():  # the common case has none: no lookup
            bad_digit = as_int.is_in(wrong["n"].implode())
            reason = reason.when(bad_digit).then(pl.lit("npi check digit invalid"))
        return pl.select(reason.alias("npi_reason")).to_series()
    if problems.is_empty():
        return pl.select(
            pl.when(missing).then(pl.lit("npi missing")).alias("npi_reason")
        ).to_series()
    looked_up = npi.replace_strict(problems["npi"], problems["reason"], default=None)
    return pl.select(
        pl.when(missing).then(pl.lit("npi missing")).otherwise(looked_up).alias("npi_reason")
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


def checked_npis(npis: list[str]) -> list[str]:
    """Distinct, well-formed NPIs; malformed ones are refused with their problem named."""
    frame = pl.DataFrame({"npi": npis}, schema={"npi": pl.String}).with_columns(
        npi_problem(pl.col("npi")).alias("problem")
    )
    bad = frame.filter(pl.col("problem").is_not_null())
    if not bad.is_empty():
        listed = ", ".join(f"{n!r} ({p})" for n, p in bad.rows()[:20])
        msg = f"malformed NPI(s): {listed}"
        raise InputError(msg)
    if frame.is_empty():
        msg = "no NPIs given"
        raise InputError(msg)
    return sorted(set(npis))
