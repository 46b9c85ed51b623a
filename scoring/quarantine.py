"""Row-level validation: every bad row is kept, with its reason, in quarantine.parquet.

Each rule is an expression giving a reason string (null = fine); the first rule
that fires names the row's reason. Rows are never dropped without a record.
"""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.npi import npi_reasons

ROW = "source_row"
REASON = "reason"
NPI_REASON = "__npi_reason"
QUARANTINE_SCHEMA = pl.Schema(
    {"source": pl.String(), ROW: pl.UInt32(), "npi": pl.String(), REASON: pl.String(),
     "record": pl.String()}
)
AMOUNTS = ("payments", "claims", "beneficiaries")


def npi_rule(*, optional: bool = False) -> pl.Expr:
    """The NPI column's problem (precomputed per distinct NPI); optional NPIs may be empty."""
    reason = pl.col(NPI_REASON)
    if optional:
        npi = pl.col("npi")
        return pl.when(npi.is_not_null() & (npi.str.len_bytes() > 0)).then(reason)
    return reason


def missing_rule(column: str) -> pl.Expr:
    value = pl.col(column)
    return pl.when(value.is_null() | (value.str.len_bytes() == 0)).then(pl.lit(f"{column} missing"))


def payment_rules(cfg: Settings) -> list[pl.Expr]:
    """Why a payment row cannot be scored."""
    year = pl.col("year")
    rules = [
        npi_rule(),
        pl.when(year.is_null()).then(pl.lit("year missing")),
        pl.when((year < cfg.min_valid_year) | (year > cfg.max_valid_year)).then(
            pl.lit(f"year outside {cfg.min_valid_year}-{cfg.max_valid_year}")
        ),
        missing_rule("program"),
    ]
    for column in AMOUNTS:
        amount = pl.col(column)
        rules += [
            pl.when(amount.is_null()).then(pl.lit(f"{column} missing")),
            pl.when(~amount.is_finite()).then(pl.lit(f"{column} not finite")),
            pl.when(amount < 0).then(pl.lit(f"{column} negative")),
        ]
    return rules


def later_copies(df: pl.DataFrame, columns: list[str]) -> pl.Series:
    """True for rows repeating an earlier row exactly on `columns`.

    A per-row hash sorted once finds candidate collisions cheaply; exact equality
    is then checked on the (few) candidates only.
    """
    hashed = pl.lit(0, dtype=pl.UInt64)
    for seed, column in enumerate(columns):
        hashed = hashed.xor(pl.col(column).hash(seed=seed))
    hashes = df.select(hashed.alias("h"))["h"]
    ordered = hashes.sort()
    colliding = ordered.filter(ordered == ordered.shift(1)).unique()
    flags = pl.Series("later_copy", [False] * 0, dtype=pl.Boolean)
    if colliding.is_empty():
        return pl.repeat(False, df.height, eager=True).alias("later_copy")
    candidate = hashes.is_in(colliding.implode())
    positions = candidate.arg_true()
    repeats = ~df.filter(candidate).select(pl.struct(columns).is_first_distinct()).to_series()
    flags = pl.repeat(False, df.height, eager=True)
    return flags.scatter(positions.filter(repeats), True).alias("later_copy")


def split_rows(
    df: pl.DataFrame,
    *,
    source: str,
    rules: list[pl.Expr],
    duplicates_on: list[str] | None = None,
    duplicate_label: str = "duplicate row",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows, quarantined rows) of one table; duplicates are judged among rows passing the rules."""
    columns = df.columns
    tagged = df.with_row_index(ROW)
    if "npi" in columns:
        tagged = tagged.with_columns(npi_reasons(tagged["npi"]).alias(NPI_REASON))
    tagged = tagged.with_columns(pl.coalesce(rules).alias(REASON) if rules else pl.lit(None, pl.String).alias(REASON))
    if duplicates_on:
        passing = tagged[REASON].is_null()
        copies = later_copies(tagged.filter(passing), duplicates_on)
        if copies.any():
            positions = passing.arg_true().filter(copies)
            reason = tagged[REASON].scatter(positions, duplicate_label)
            tagged = tagged.with_columns(reason.alias(REASON))
    good = tagged.filter(pl.col(REASON).is_null()).select(columns)
    bad = tagged.filter(pl.col(REASON).is_not_null()).select(
        pl.lit(source).alias("source"),
        pl.col(ROW),
        pl.col("npi").cast(pl.String) if "npi" in columns else pl.lit(None, pl.String).alias("npi"),
        pl.col(REASON),
        pl.struct(columns).struct.json_encode().alias("record"),
    )
    return good, bad
