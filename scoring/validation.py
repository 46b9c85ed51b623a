"""Apply the quarantine rules to every input table (SPEC §7 bad input)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from scoring.config import Settings
from scoring.inputs import SCHEMAS, RawInputs, dataset_file, iter_table_chunks, reading
from scoring.npi import npi_problems, npi_to_int
from scoring.ownership import OwnershipGraph
from scoring.quarantine import (
    QUARANTINE_SCHEMA,
    REASON,
    ROW,
    ROW_HASH,
    later_copies,
    missing_rule,
    npi_rule,
    nul_rule,
    payment_rules,
    quarantine_records,
    row_hash,
    split_rows,
    split_tagged,
    tag_rows,
)


@dataclass(frozen=True)
class CleanInputs:
    """Validated tables with integer NPIs, plus every quarantined row."""

    providers: pl.DataFrame
    payments: pl.DataFrame
    exclusions: pl.DataFrame
    graph: OwnershipGraph | None
    quarantine: pl.DataFrame


def _compact_payments(payments: pl.DataFrame) -> pl.DataFrame:
    """Integer NPIs and categorical codes: a seed-scale payments table fits in a few GB."""
    return payments.with_columns(
        npi_to_int(pl.col("npi")),
        pl.col("year").cast(pl.Int32),
        pl.col("program", "taxonomy", "state").cast(pl.Categorical),
    )


def _valid_payments(raw: RawInputs, cfg: Settings, quarantined: list[pl.DataFrame]) -> pl.DataFrame:
    """Payments are checked chunk by chunk and kept compact; duplicates are judged over all rows."""
    source, columns = "payments_combined", list(SCHEMAS["payments_combined"])
    rules = payment_rules(cfg)
    problems = npi_problems(raw.payments.select(pl.col("npi").unique()).collect().to_series())
    kept, first_row = [], 0
    for chunk in iter_table_chunks(raw.payments, cfg.validation_chunk_rows):
        tagged = tag_rows(chunk, rules, first_row=first_row, npi_problems=problems)
        tagged = tagged.with_columns(row_hash(columns))
        good, bad = split_tagged(tagged, [*columns, ROW_HASH], source)
        first_row += chunk.height
        kept.append(_compact_payments(good))
        quarantined.append(bad)
    if not kept:
        empty = raw.payments.head(0).collect().with_columns(row_hash(columns))
        kept.append(_compact_payments(empty).with_row_index(ROW))
    everything = pl.concat(kept, rechunk=False)
    copies = later_copies(everything, columns)
    duplicates = everything.filter(copies).with_columns(pl.lit("duplicate row").alias(REASON))
    quarantined.append(quarantine_records(duplicates, columns, source))
    del everything
    start = 0
    for i, chunk in enumerate(kept):  # drop copies chunk by chunk: never two full copies in memory
        keep = ~copies.slice(start, chunk.height)
        start += chunk.height
        kept[i] = chunk.filter(keep).select(columns)
    return pl.concat(kept, rechunk=False)


@dataclass(frozen=True)
class CleanReference:
    """Validated providers, LEIE rows and ownership graph (what the graph loader writes)."""

    providers: pl.DataFrame
    exclusions: pl.DataFrame
    graph: OwnershipGraph | None
    quarantined: list[pl.DataFrame]


def validate_reference(raw: RawInputs, cfg: Settings) -> CleanReference:
    """Quarantine rules for every table but payments."""
    quarantined: list[pl.DataFrame] = []

    def split(name: str, lf: pl.LazyFrame, rules: list[pl.Expr], **dup: object) -> pl.DataFrame:
        with reading(dataset_file(raw.data_dir, name)):
            rows = lf.collect()
        good, bad = split_rows(rows, source=name, rules=rules, **dup)  # type: ignore[arg-type]
        quarantined.append(bad.cast(QUARANTINE_SCHEMA))  # type: ignore[arg-type]
        return good

    providers = split(
        "providers",
        raw.providers,
        [
            npi_rule(),
            *nul_rule("display_name", "taxonomy_1", "state"),
        ],
        duplicates_on=["npi"],
        duplicate_label="duplicate npi",
    )
    exclusions = split(
        "exclusions", raw.exclusions, [missing_rule("exclusion_id"), npi_rule(optional=True)]
    )
    graph, graph_quarantined = validate_graph(raw)
    quarantined += graph_quarantined
    return CleanReference(
        providers=providers.with_columns(npi_to_int(pl.col("npi"))),
        exclusions=exclusions.with_columns(
            pl.when(pl.col("npi").str.len_bytes() > 0).then(npi_to_int(pl.col("npi"))).alias("npi")
        ),
        graph=graph,
        quarantined=quarantined,
    )


def validate(raw: RawInputs, cfg: Settings) -> CleanInputs:
    """Split each table into good rows and quarantined rows (with reasons)."""
    quarantined: list[pl.DataFrame] = []
    with reading(dataset_file(raw.data_dir, "payments_combined")):
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
        with reading(dataset_file(raw.data_dir, name)):
            rows = lf.collect()
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
