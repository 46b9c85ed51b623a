"""Row-level validation: every bad row is kept, with its reason, in quarantine.parquet.

Each rule is an expression giving a reason string (null = fine); the first rule
that fires names the row's reason. Rows are never dropped without a record.
"""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.inputs.npi import npi_reasons, npi_to_str
from scoring.methodology.amounts import AMOUNTS

ROW = "source_row"
REASON = "reason"
NPI_REASON = "__npi_reason"
QUARANTINE_SCHEMA = pl.Schema(
    {
        "source": pl.String(),
        ROW: pl.UInt32(),
        "npi": pl.String(),
        REASON: pl.String(),
        "record": pl.String(),
    }
)


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


def nul_rule(*columns: str) -> list[pl.Expr]:
    """Text holding a NUL byte: Postgres text cannot store it, so the publish would fail."""
    return [
        pl.when(pl.col(c).str.contains("\x00", literal=True)).then(pl.lit(f"{c} holds a NUL byte"))
        for c in columns
    ]


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
        *nul_rule("program", "taxonomy", "state"),
    ]
    for column in AMOUNTS:
        amount = pl.col(column)
        rules += [
            pl.when(amount.is_null()).then(pl.lit(f"{column} missing")),
            pl.when(~amount.is_finite()).then(pl.lit(f"{column} not finite")),
            pl.when(amount < 0).then(pl.lit(f"{column} negative")),
            pl.when(amount > cfg.max_amount).then(pl.lit(f"{column} above {cfg.max_amount:g}")),
        ]
    return rules


def provider_rules() -> list[pl.Expr]:
    """Why a provider record cannot be used (a repeated NPI is judged where the NPI is whole)."""
    return [npi_rule(), *nul_rule("display_name", "taxonomy_1", "state")]


def exclusion_rules() -> list[pl.Expr]:
    """Why a LEIE row cannot be used (its NPI may be empty: not every exclusion has one)."""
    return [missing_rule("exclusion_id"), npi_rule(optional=True)]


def table_rules(source: str, cfg: Settings) -> list[pl.Expr]:
    """The row rules of one core input table (the graph's rules depend on its entities)."""
    if source == "payments_combined":
        return payment_rules(cfg)
    if source == "providers":
        return provider_rules()
    if source == "exclusions":
        return exclusion_rules()
    msg = f"no row rules for table {source!r}"
    raise ValueError(msg)


ROW_HASH = "__row_hash"


def row_hash(columns: list[str]) -> pl.Expr:
    """A 64-bit hash of the row's values on `columns` (equal rows, equal hashes)."""
    hashed = pl.lit(0, dtype=pl.UInt64)
    for seed, column in enumerate(columns):
        hashed = hashed.xor(pl.col(column).hash(seed=seed))
    return hashed.alias(ROW_HASH)


def later_copies(df: pl.DataFrame, columns: list[str]) -> pl.Series:
    """True for rows repeating an earlier row exactly on `columns`.

    Row hashes (precomputed in ROW_HASH when present) are sorted once to find
    collisions cheaply; exact equality is then checked on the few candidates.
    """
    hashes = df[ROW_HASH] if ROW_HASH in df.columns else df.select(row_hash(columns)).to_series()
    ordered = hashes.sort()
    colliding = ordered.filter(ordered == ordered.shift(1)).unique()
    flags = pl.repeat(False, df.height, eager=True).alias("later_copy")
    if colliding.is_empty():
        return flags
    candidate = hashes.is_in(colliding.implode())
    positions = candidate.arg_true()
    repeats = ~df.filter(candidate).select(pl.struct(columns).is_first_distinct()).to_series()
    return flags.scatter(positions.filter(repeats), True)


def quarantine_records(tagged: pl.DataFrame, columns: list[str], source: str) -> pl.DataFrame:
    """Quarantine rows: source, row number in the source, NPI, reason and the whole row as JSON."""
    npi_text = pl.col("npi").cast(pl.String)
    if "npi" in columns and tagged.schema["npi"].is_integer():
        npi_text = npi_to_str(pl.col("npi"))
    return tagged.select(
        pl.lit(source).alias("source"),
        pl.col(ROW).cast(pl.UInt32),
        npi_text.alias("npi") if "npi" in columns else pl.lit(None, pl.String).alias("npi"),
        pl.col(REASON),
        pl.struct([npi_text.alias("npi") if c == "npi" else pl.col(c) for c in columns])
        .struct.json_encode()
        .alias("record"),
    ).cast(QUARANTINE_SCHEMA)  # type: ignore[arg-type]


def tag_rows(
    df: pl.DataFrame,
    rules: list[pl.Expr],
    *,
    first_row: int = 0,
    npi_problems: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add the source row number and the first failing rule's reason (null = row is fine).

    `npi_problems` (invalid NPIs of the whole table) saves re-checking them chunk by chunk.
    """
    tagged = df.with_row_index(ROW, offset=first_row)
    if "npi" in df.columns:
        tagged = tagged.with_columns(npi_reasons(tagged["npi"], npi_problems).alias(NPI_REASON))
    reason = pl.coalesce(rules) if rules else pl.lit(None, pl.String)
    return tagged.with_columns(reason.alias(REASON)).drop(NPI_REASON, strict=False)


def split_tagged(
    tagged: pl.DataFrame, columns: list[str], source: str, carried: tuple[str, ...] = ()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good rows with their row numbers, quarantine records). `carried`: columns of ours
    (a row hash) the good rows keep and a quarantine record never shows."""
    failed = tagged[REASON].is_not_null()
    if not failed.any():  # the common case: no copy of a clean chunk
        good = tagged.select(ROW, *columns, *carried)
        return good, quarantine_records(tagged.head(0), columns, source)
    good = tagged.filter(~failed).select(ROW, *columns, *carried)
    return good, quarantine_records(tagged.filter(failed), columns, source)


def split_duplicates(
    good: pl.DataFrame, columns: list[str], keys: list[str], source: str, label: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Quarantine all but one of the rows sharing `keys`: the one whose whole record sorts
    first (plain order, nulls last), so which record wins never depends on row order."""
    repeated = good.select(pl.struct(keys).is_duplicated()).to_series()
    copies = repeated
    if repeated.any():
        others = [c for c in columns if c not in keys]
        ranked = good.filter(repeated).sort([*keys, *others, ROW], nulls_last=True)
        winners = ranked.unique(keys, keep="first", maintain_order=True)[ROW]
        copies = repeated & ~good[ROW].is_in(winners.implode())
    marked = good.head(0) if not copies.any() else good.filter(copies)
    bad = quarantine_records(marked.with_columns(pl.lit(label).alias(REASON)), columns, source)
    kept = good if bad.is_empty() else good.filter(~copies)
    return kept.select(columns), bad


def split_rows(
    df: pl.DataFrame,
    *,
    source: str,
    rules: list[pl.Expr],
    duplicates_on: list[str] | None = None,
    duplicate_label: str = "duplicate row",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(good, quarantined) rows of a table; duplicates judged among rows that pass the rules."""
    columns = df.columns
    good, bad = split_tagged(tag_rows(df, rules), columns, source)
    if not duplicates_on:
        return good.select(columns), bad
    good, copies = split_duplicates(good, columns, duplicates_on, source, duplicate_label)
    return good.select(columns), pl.concat([bad, copies])
