"""Row-level validation: every bad row is kept, with its reason, in quarantine.parquet.

Each rule is an expression giving a reason string (null = fine); the first rule
that fires names the row's reason. Rows are never dropped without a record.
"""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.npi import npi_problem

ROW = "source_row"
REASON = "reason"
QUARANTINE_SCHEMA = pl.Schema(
    {"source": pl.String(), ROW: pl.UInt32(), "npi": pl.String(), REASON: pl.String(),
     "record": pl.String()}
)
AMOUNTS = ("payments", "claims", "beneficiaries")


def first_reason(rules: list[pl.Expr]) -> pl.Expr:
    """The first non-null reason among the rules."""
    return pl.coalesce(rules).alias(REASON)


def payment_rules(cfg: Settings) -> list[pl.Expr]:
    """Why a payment row cannot be scored."""
    year = pl.col("year")
    rules = [
        npi_problem(pl.col("npi")),
        pl.when(year.is_null()).then(pl.lit("year missing")),
        pl.when((year < cfg.min_valid_year) | (year > cfg.max_valid_year)).then(
            pl.lit(f"year outside {cfg.min_valid_year}-{cfg.max_valid_year}")
        ),
        pl.when(pl.col("program").is_null() | (pl.col("program").str.len_bytes() == 0)).then(
            pl.lit("program missing")
        ),
    ]
    for column in AMOUNTS:
        amount = pl.col(column)
        rules += [
            pl.when(amount.is_null()).then(pl.lit(f"{column} missing")),
            pl.when(~amount.is_finite()).then(pl.lit(f"{column} not finite")),
            pl.when(amount < 0).then(pl.lit(f"{column} negative")),
        ]
    return rules


def duplicate_rule(columns: list[str], label: str) -> pl.Expr:
    """Later copies of a row whose columns repeat an earlier row exactly."""
    return pl.when(~pl.struct(columns).is_first_distinct()).then(pl.lit(label))


def split_rows(
    lf: pl.LazyFrame,
    *,
    source: str,
    rules: list[pl.Expr],
    duplicates_on: list[str] | None = None,
    duplicate_label: str = "duplicate row",
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(good rows, quarantined rows) of one table; duplicates are judged among rows passing the rules."""
    columns = lf.collect_schema().names()
    tagged = lf.with_row_index(ROW).with_columns(first_reason(rules))
    if duplicates_on:
        passed = tagged.filter(pl.col(REASON).is_null())
        dup = passed.with_columns(duplicate_rule(duplicates_on, duplicate_label).alias(REASON))
        failed = tagged.filter(pl.col(REASON).is_not_null())
        tagged = pl.concat([failed, dup])
    good = tagged.filter(pl.col(REASON).is_null()).drop(ROW, REASON)
    bad = tagged.filter(pl.col(REASON).is_not_null()).select(
        pl.lit(source).alias("source"),
        pl.col(ROW),
        pl.col("npi").cast(pl.String) if "npi" in columns else pl.lit(None, pl.String).alias("npi"),
        pl.col(REASON),
        pl.struct(columns).struct.json_encode().alias("record"),
    )
    return good, bad
