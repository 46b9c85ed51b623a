"""`claidex export --to DIR`: the source tables as a dataset directory (legacy prepare_modal_data).

One repeatable-read snapshot; each table streams through COPY into a CSV file
and from there into Parquet with the dataset's column types.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from scoring.db.copy import copy_out_csv
from scoring.inputs import CANONICAL, SCHEMAS, dataset_file

EXPORT_QUERIES = {
    "providers": "SELECT npi, entity_type_code, display_name, taxonomy_1, state, "
    "is_excluded::text AS is_excluded FROM providers",
    "payments_combined": "SELECT npi, year, program, payments, claims, beneficiaries, taxonomy, "
    "state FROM payments_combined_v",
    "exclusions": "SELECT exclusion_id, npi, excldate, reinstated::text AS reinstated "
    "FROM exclusions",
    "entities": "SELECT entity_id, name, entity_type FROM corporate_entities",
    "ownership": "SELECT owner_id, owned_id FROM entity_ownership",
    "entity_exclusions": "SELECT entity_id FROM entity_exclusions",
}


def export_dataset(conn: psycopg.Connection, out_dir: Path) -> dict[str, int]:
    """Write the six dataset files from one consistent snapshot; rows per file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    with tempfile.TemporaryDirectory(prefix="claidex-export-") as scratch:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()  # the snapshot must be this export's own transaction
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL extra_float_digits = 3")  # floats round-trip exactly
        try:
            for name, query in EXPORT_QUERIES.items():
                csv = Path(scratch) / f"{name}.csv"
                copy_out_csv(conn, sql.SQL(query), csv)  # type: ignore[arg-type]
                schema = {column: CANONICAL[kind] for column, kind in SCHEMAS[name].items()}
                frame = pl.scan_csv(csv, schema=schema)
                frame.sink_parquet(dataset_file(out_dir, name), compression="zstd")
                counts[name] = (
                    pl.scan_parquet(dataset_file(out_dir, name)).select(pl.len()).collect().item()
                )
        finally:
            conn.rollback()
    return counts
