"""`claidex db load DIR`: a dataset directory into the source tables (replacing their rows)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import psycopg

from scoring.db.copy import chunks, copy_in
from scoring.inputs import dataset_file, scan_table

PROGRAM_TABLES = {
    "Medicare": "payments_medicare",
    "MedicarePartD": "medicare_part_d",
    "Medicaid": "payments_medicaid",
}
SOURCE_TABLES = (
    "providers",
    "exclusions",
    "payments_medicare",
    "medicare_part_d",
    "payments_medicaid",
    "payments_other",
    "corporate_entities",
    "entity_ownership",
    "entity_exclusions",
)
AMOUNTS = ["npi", "year", "payments", "claims", "beneficiaries"]


def _payment_frames(data_dir: Path) -> dict[str, pl.LazyFrame]:
    """payments_combined split into the per-program tables (Medicaid carries no type/state)."""
    rows = scan_table(data_dir, "payments_combined").with_columns(
        pl.col("taxonomy").alias("provider_type")
    )
    frames = {
        table: rows.filter(pl.col("program") == program).select(
            AMOUNTS if table == "payments_medicaid" else [*AMOUNTS, "provider_type", "state"]
        )
        for program, table in PROGRAM_TABLES.items()
    }
    frames["payments_other"] = rows.filter(~pl.col("program").is_in(list(PROGRAM_TABLES))).select(
        "program", *AMOUNTS, "provider_type", "state"
    )
    return frames


def load_dataset(conn: psycopg.Connection, data_dir: Path) -> dict[str, int]:
    """Replace the source tables' rows with the dataset's, in one transaction; rows per table."""
    tables: dict[str, pl.LazyFrame] = {
        "providers": scan_table(data_dir, "providers"),
        "exclusions": scan_table(data_dir, "exclusions"),
        **_payment_frames(data_dir),
    }
    if dataset_file(data_dir, "entities").exists():
        tables["corporate_entities"] = scan_table(data_dir, "entities")
        tables["entity_ownership"] = scan_table(data_dir, "ownership")
        tables["entity_exclusions"] = scan_table(data_dir, "entity_exclusions")
    counts = {}
    with conn.transaction():
        conn.execute("TRUNCATE " + ", ".join(SOURCE_TABLES))  # type: ignore[arg-type]
        for table, frame in tables.items():
            counts[table] = copy_in(conn, table, chunks(frame.collect()))
    conn.execute("ANALYZE")
    conn.commit()
    return counts
