"""The one validation path (SPEC §7 bad input), for full and incremental runs alike.

The rules are :mod:`scoring.inputs.quarantine`'s; this module applies them, in two kinds:

- row rules judge each row on its own, so any slice of a table can be checked: a full
  run's ingest task checks its slice (:func:`check_slice`), an incremental run the whole
  table (:func:`validate`);
- copy rules (an exact copy of an earlier payment row, a repeated provider NPI) need
  every row of an NPI, so they run where NPIs are whole: a full run's NPI bucket
  (aggregate), an incremental run's table (:func:`drop_payment_copies`,
  :func:`drop_provider_copies`).

The ownership graph tables are small and checked whole in both (:func:`validate_graph`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import polars as pl

from scoring.config import Settings
from scoring.inputs.contract import SCHEMAS, RawInputs, TableRows, dataset_file, reading
from scoring.inputs.npi import npi_problems, npi_to_int
from scoring.inputs.quarantine import (
    QUARANTINE_SCHEMA,
    REASON,
    ROW,
    ROW_HASH,
    later_copies,
    missing_rule,
    nul_rule,
    payment_rules,
    quarantine_records,
    row_hash,
    split_duplicates,
    split_rows,
    split_tagged,
    table_rules,
    tag_rows,
)
from scoring.methodology.components.ownership import OwnershipGraph

PAYMENTS = "payments_combined"
PAYMENT_COLUMNS = list(SCHEMAS[PAYMENTS])
PROVIDER_COLUMNS = list(SCHEMAS["providers"])
# payment rows past the row rules: their source row, integer NPI, Int32 year and row hash
CHECKED_PAYMENT_SCHEMA: dict[str, pl.DataType] = {
    ROW: pl.UInt32(),
    "npi": pl.Int64(),
    "year": pl.Int32(),
    "program": pl.String(),
    "payments": pl.Float64(),
    "claims": pl.Float64(),
    "beneficiaries": pl.Float64(),
    "taxonomy": pl.String(),
    "state": pl.String(),
    ROW_HASH: pl.UInt64(),
}


@dataclass(frozen=True)
class CleanInputs:
    """Validated tables with integer NPIs, plus every quarantined row."""

    providers: pl.DataFrame
    payments: pl.DataFrame
    exclusions: pl.DataFrame
    graph: OwnershipGraph | None
    quarantine: pl.DataFrame


@dataclass(frozen=True)
class CleanReference:
    """Validated providers, LEIE rows and ownership graph (what the graph loader writes)."""

    providers: pl.DataFrame
    exclusions: pl.DataFrame
    graph: OwnershipGraph | None
    quarantined: list[pl.DataFrame]


# --- row rules: any slice ----------------------------------------------------------------
def check_payments(
    read: Callable[[int, int], pl.LazyFrame],
    lo: int,
    hi: int,
    cfg: Settings,
    *,
    guard: Callable[[int, int], AbstractContextManager[None]],
    problems: pl.DataFrame | None = None,
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """Payment rows [lo, hi) (`read(a, b)` gives rows [a, b)), `validation_chunk_rows` at a
    time: per chunk, (good rows as CHECKED_PAYMENT_SCHEMA, quarantine records). The row hash
    is taken here, on the rows as read, for the copy rule that runs where NPIs are whole.
    `problems`: the table's invalid NPIs, when known, spare re-checking them per chunk."""
    rules = payment_rules(cfg)
    for offset in range(lo, hi, cfg.validation_chunk_rows):
        end = min(hi, offset + cfg.validation_chunk_rows)
        with guard(offset, end):  # a read error names the file (the part) it came from
            chunk = read(offset, end).collect()
        tagged = tag_rows(chunk, rules, first_row=offset, npi_problems=problems)
        good, bad = split_tagged(
            tagged.with_columns(row_hash(PAYMENT_COLUMNS)), PAYMENT_COLUMNS, PAYMENTS, (ROW_HASH,)
        )
        yield good.with_columns(npi_to_int(pl.col("npi")), pl.col("year").cast(pl.Int32)), bad


def check_rows(
    rows: pl.DataFrame, source: str, cfg: Settings, *, first_row: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Providers or LEIE rows (whose first is source row `first_row`) through their row
    rules: (good rows, quarantine records). Providers keep their row number for the copy
    rule; LEIE rows, which have none, come out final, their NPI an integer (null if empty)."""
    good, bad = split_tagged(
        tag_rows(rows, table_rules(source, cfg), first_row=first_row), rows.columns, source
    )
    if source == "exclusions":
        npi = pl.when(pl.col("npi").str.len_bytes() > 0).then(npi_to_int(pl.col("npi")))
        good = good.drop(ROW).with_columns(npi.alias("npi"))
    return good, bad


def check_slice(
    table: TableRows, source: str, lo: int, hi: int, cfg: Settings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows [lo, hi) of one core table through its row rules: (good rows, quarantine
    records), as :func:`check_payments` / :func:`check_rows` give them."""
    if source == PAYMENTS:
        kept, bad = [], []
        for good, quarantined in check_payments(table.rows, lo, hi, cfg, guard=table.reading):
            kept.append(good)
            bad.append(quarantined)
        return (
            pl.concat(kept) if kept else pl.DataFrame(schema=CHECKED_PAYMENT_SCHEMA),
            pl.concat(bad) if bad else pl.DataFrame(schema=QUARANTINE_SCHEMA),
        )
    with table.reading(lo, hi):
        rows = table.rows(lo, hi).collect()
    return check_rows(rows, source, cfg, first_row=lo)


# --- copy rules: where every row of an NPI is at hand --------------------------------------
def drop_payment_copies(chunks: list[pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the rows minus exact copies of an earlier row, the copies' quarantine records).

    `chunks`: checked payment rows in source order, holding every row of their NPIs. They
    are consumed: each is replaced by its kept rows in turn, never two full copies at once.
    """
    everything = pl.concat(chunks, rechunk=False)
    copies = later_copies(everything, PAYMENT_COLUMNS)
    duplicates = everything.filter(copies).with_columns(pl.lit("duplicate row").alias(REASON))
    quarantined = quarantine_records(duplicates, PAYMENT_COLUMNS, PAYMENTS)
    del everything, duplicates
    start = 0
    for i, chunk in enumerate(chunks):
        keep = ~copies.slice(start, chunk.height)
        start += chunk.height
        chunks[i] = chunk.filter(keep).select(PAYMENT_COLUMNS)
    return pl.concat(chunks, rechunk=False), quarantined


def drop_provider_copies(good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One record per NPI (`good`: checked provider rows holding every row of their NPIs):
    (providers with integer NPIs, the other records' quarantine records)."""
    kept, copies = split_duplicates(good, PROVIDER_COLUMNS, ["npi"], "providers", "duplicate npi")
    return kept.with_columns(npi_to_int(pl.col("npi"))), copies


# --- whole tables: incremental runs, the graph loader -------------------------------------
def _valid_payments(raw: RawInputs, cfg: Settings, quarantined: list[pl.DataFrame]) -> pl.DataFrame:
    """Chunk by chunk, each kept compact (categorical codes): a seed-scale table fits in a
    few GB; copies are then judged over the whole table."""
    problems = npi_problems(raw.payments.select(pl.col("npi").unique()).collect().to_series())
    total = raw.payments.select(pl.len()).collect().item()
    compact = pl.col("program", "taxonomy", "state").cast(pl.Categorical)
    kept = []
    for good, bad in check_payments(
        lambda lo, hi: raw.payments.slice(lo, hi - lo),
        0,
        total,
        cfg,
        guard=lambda _lo, _hi: reading(dataset_file(raw.data_dir, PAYMENTS)),
        problems=problems,
    ):
        kept.append(good.with_columns(compact))
        quarantined.append(bad)
    if not kept:
        kept.append(pl.DataFrame(schema=CHECKED_PAYMENT_SCHEMA).with_columns(compact))
    payments, copies = drop_payment_copies(kept)
    quarantined.append(copies)
    return payments


def _collected(raw: RawInputs, name: str, lf: pl.LazyFrame) -> pl.DataFrame:
    with reading(dataset_file(raw.data_dir, name)):
        return lf.collect()


def validate_reference(raw: RawInputs, cfg: Settings) -> CleanReference:
    """Every table but payments, whole: providers, LEIE rows and the graph."""
    providers, bad = check_rows(_collected(raw, "providers", raw.providers), "providers", cfg)
    providers, copies = drop_provider_copies(providers)
    exclusions, bad_exclusions = check_rows(
        _collected(raw, "exclusions", raw.exclusions), "exclusions", cfg
    )
    graph, graph_quarantined = validate_graph(raw)
    return CleanReference(
        providers=providers,
        exclusions=exclusions,
        graph=graph,
        quarantined=[pl.concat([bad, copies]), bad_exclusions, *graph_quarantined],
    )


def validate(raw: RawInputs, cfg: Settings) -> CleanInputs:
    """Every table whole (an incremental run's): good rows, and every bad row with its reason
    in the order a full run's quarantine lists them."""
    quarantined: list[pl.DataFrame] = []
    with reading(dataset_file(raw.data_dir, PAYMENTS)):
        payments = _valid_payments(raw, cfg, quarantined)
    reference = validate_reference(raw, cfg)
    return CleanInputs(
        providers=reference.providers,
        payments=payments,
        exclusions=reference.exclusions,
        graph=reference.graph,
        quarantine=pl.concat([*quarantined, *reference.quarantined]),
    )


def validate_graph(raw: RawInputs) -> tuple[OwnershipGraph | None, list[pl.DataFrame]]:
    """Quarantine rules for the ownership graph tables (None when the dataset has none)."""
    quarantined: list[pl.DataFrame] = []
    graph = None

    def split(name: str, lf: pl.LazyFrame, rules: list[pl.Expr], **dup: object) -> pl.DataFrame:
        rows = _collected(raw, name, lf)
        good, bad = split_rows(rows, source=name, rules=rules, **dup)  # type: ignore[arg-type]
        quarantined.append(bad.cast(QUARANTINE_SCHEMA))  # type: ignore[arg-type]
        return good

    if raw.entities is not None and raw.ownership is not None and raw.entity_exclusions is not None:
        entities = split(
            "entities",
            raw.entities,
            [missing_rule("entity_id"), *nul_rule("entity_id", "name")],
            duplicates_on=["entity_id"],
            duplicate_label="duplicate entity_id",
        )
        known = entities["entity_id"].implode()

        def known_rule(column: str) -> pl.Expr:  # a link to no entity is a bad row, in every mode
            unknown = ~pl.col(column).is_in(known)
            return pl.when(unknown).then(pl.lit(f"{column} not in entities"))

        graph = OwnershipGraph(
            entities=entities.lazy(),
            ownership=split(
                "ownership",
                raw.ownership,
                [
                    missing_rule("owner_id"),
                    missing_rule("owned_id"),
                    known_rule("owner_id"),
                    known_rule("owned_id"),
                ],
            ).lazy(),
            entity_exclusions=split(
                "entity_exclusions",
                raw.entity_exclusions,
                [missing_rule("entity_id"), known_rule("entity_id")],
            ).lazy(),
        )
    return graph, quarantined
