"""Apply the quarantine rules to every input table (SPEC §7 bad input)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from scoring.config import Settings
from scoring.inputs import SCHEMAS, RawInputs
from scoring.npi import npi_problem, npi_to_int
from scoring.ownership import OwnershipGraph
from scoring.quarantine import QUARANTINE_SCHEMA, payment_rules, split_rows


@dataclass(frozen=True)
class CleanInputs:
    """Validated tables with integer NPIs, plus every quarantined row."""

    providers: pl.DataFrame
    payments: pl.DataFrame
    exclusions: pl.DataFrame
    graph: OwnershipGraph | None
    quarantine: pl.DataFrame


def _missing(column: str) -> pl.Expr:
    value = pl.col(column)
    return pl.when(value.is_null() | (value.str.len_bytes() == 0)).then(pl.lit(f"{column} missing"))


def _optional_npi() -> pl.Expr:
    npi = pl.col("npi")
    return pl.when(npi.is_not_null() & (npi.str.len_bytes() > 0)).then(npi_problem(npi))


def validate(raw: RawInputs, cfg: Settings) -> CleanInputs:
    """Split each table into good rows and quarantined rows (with reasons), in one collect."""
    splits = {
        "providers": split_rows(
            raw.providers, source="providers", rules=[npi_problem(pl.col("npi"))],
            duplicates_on=["npi"], duplicate_label="duplicate npi",
        ),
        "payments_combined": split_rows(
            raw.payments, source="payments_combined", rules=payment_rules(cfg),
            duplicates_on=list(SCHEMAS["payments_combined"]),
        ),
        "exclusions": split_rows(
            raw.exclusions, source="exclusions", rules=[_missing("exclusion_id"), _optional_npi()],
        ),
    }
    if raw.entities is not None and raw.ownership is not None and raw.entity_exclusions is not None:
        splits["entities"] = split_rows(
            raw.entities, source="entities", rules=[_missing("entity_id")],
            duplicates_on=["entity_id"], duplicate_label="duplicate entity_id",
        )
        splits["ownership"] = split_rows(
            raw.ownership, source="ownership", rules=[_missing("owner_id"), _missing("owned_id")],
        )
        splits["entity_exclusions"] = split_rows(
            raw.entity_exclusions, source="entity_exclusions", rules=[_missing("entity_id")],
        )
    names = list(splits)
    frames = pl.collect_all([frame for name in names for frame in splits[name]])
    good = {name: frames[2 * i] for i, name in enumerate(names)}
    bad = [frames[2 * i + 1] for i in range(len(names))]
    graph = None
    if "entities" in good:
        graph = OwnershipGraph(
            entities=good["entities"].lazy(),
            ownership=good["ownership"].lazy(),
            entity_exclusions=good["entity_exclusions"].lazy(),
        )
    exclusions = good["exclusions"].with_columns(
        pl.when(pl.col("npi").str.len_bytes() > 0).then(npi_to_int(pl.col("npi"))).alias("npi")
    )
    return CleanInputs(
        providers=good["providers"].with_columns(npi_to_int(pl.col("npi"))),
        payments=good["payments_combined"].with_columns(
            npi_to_int(pl.col("npi")), pl.col("year").cast(pl.Int32)
        ),
        exclusions=exclusions,
        graph=graph,
        quarantine=pl.concat([b.cast(QUARANTINE_SCHEMA) for b in bad]),  # type: ignore[arg-type]
    )
