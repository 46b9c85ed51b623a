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


PER_NPI = ("providers", "payments_combined", "exclusions")


def export_dataset(
    conn: psycopg.Connection, out_dir: Path, npis: list[str] | None = None
) -> dict[str, int]:
    """Write the dataset files from one consistent snapshot; rows per file.

    With `npis`, only those NPIs' provider, payment and LEIE rows (an incremental run).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    with tempfile.TemporaryDirectory(prefix="claidex-export-") as scratch:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()  # the snapshot must be this export's own transaction
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL extra_float_digits = 3")  # floats round-trip exactly
        try:
            for name, query in EXPORT_QUERIES.items():
                if npis is not None and name not in PER_NPI:
                    continue
                csv = Path(scratch) / f"{name}.csv"
                text, params = query, ()
                if npis is not None:
                    text, params = f"SELECT * FROM ({query}) q WHERE npi = ANY(%s)", (npis,)
                copy_out_csv(conn, sql.SQL(text), csv, params)  # type: ignore[arg-type]
                schema = {column: CANONICAL[kind] for column, kind in SCHEMAS[name].items()}
                frame = pl.scan_csv(csv, schema=schema)
                frame.sink_parquet(dataset_file(out_dir, name), compression="zstd")
                counts[name] = (
                    pl.scan_parquet(dataset_file(out_dir, name)).select(pl.len()).collect().item()
                )
        finally:
            conn.rollback()
    return counts
