"""`claidex export --to DIR`: the source tables as a dataset directory (legacy prepare_modal_data).

One repeatable-read snapshot; each table streams through COPY into a CSV file
and from there into Parquet with the dataset's column types.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from scoring.db.connection import error_class
from scoring.db.copy import copy_out_csv
from scoring.db.load import ENTITY_EXCLUSIONS_TABLE
from scoring.errors import ClaidexError, InputError
from scoring.inputs.contract import canonical_schema, dataset_file, first_line
from scoring.inputs.dataset import DataFile, DataSource, child, put_file
from scoring.location import is_url

EXPORT_QUERIES = {
    "providers": "SELECT npi, entity_type_code, display_name, taxonomy_1, state, "
    "is_excluded::text AS is_excluded FROM providers",
    # NUMERIC travels as its exact decimal text; the CSV reader rounds it once, correctly.
    "payments_combined": "SELECT npi, year, program, payments, claims, beneficiaries, taxonomy, "
    "state FROM payments_combined_v",
    "exclusions": "SELECT exclusion_id, npi, excldate, reinstated::text AS reinstated "
    "FROM exclusions",
    # The production graph: one SNF per enrolled provider_associate_id (its name the first
    # in plain string order when enrollments differ), the organisation owners, and one OWNS
    # edge per organisation owner row. Individual owners ('I') are people, never entities.
    "entities": "SELECT provider_associate_id AS entity_id, "
    "min(provider_org_name COLLATE \"C\") AS name, 'SNF' AS entity_type FROM ownership_snf "
    "WHERE provider_associate_id IS NOT NULL GROUP BY provider_associate_id "
    "UNION ALL SELECT entity_id, name, 'Organization' FROM corporate_entities c "
    "WHERE NOT EXISTS (SELECT 1 FROM ownership_snf s "
    "WHERE s.provider_associate_id = c.entity_id)",
    "ownership": "SELECT DISTINCT owner_associate_id AS owner_id, provider_associate_id AS "
    "owned_id FROM ownership_snf WHERE owner_type = 'O'",
    "entity_exclusions": f"SELECT entity_id FROM {ENTITY_EXCLUSIONS_TABLE}",
}
NO_ENTITY_EXCLUSIONS = "SELECT NULL::text AS entity_id WHERE false"
GRAPH_QUERIES = ("entities", "ownership", "entity_exclusions")


PER_NPI = ("providers", "payments_combined", "exclusions")


def _queries(conn: psycopg.Connection, *, with_graph: bool) -> dict[str, str]:
    """The export queries for this database: no graph tables in the neo4j-* modes."""
    if not with_graph:
        return {name: q for name, q in EXPORT_QUERIES.items() if name not in GRAPH_QUERIES}
    queries = dict(EXPORT_QUERIES)
    present = conn.execute("SELECT to_regclass(%s)", (ENTITY_EXCLUSIONS_TABLE,)).fetchone()
    if present is None or present[0] is None:
        queries["entity_exclusions"] = NO_ENTITY_EXCLUSIONS  # optional: absent means none
    return queries


SOURCE_OF = {
    "providers": "providers",
    "payments_combined": "payments_combined_v",
    "exclusions": "exclusions",
    "entities": "ownership_snf + corporate_entities",
    "ownership": "ownership_snf",
    "entity_exclusions": ENTITY_EXCLUSIONS_TABLE,
}


def _export_error(exc: Exception, name: str) -> ClaidexError:
    """One line naming the source object, whatever failed (the query or parsing its text)."""
    msg = f"export of {SOURCE_OF[name]} (for {name}.parquet) failed: {first_line(exc)}"
    return error_class(exc)(msg) if isinstance(exc, psycopg.Error) else InputError(msg)


def export_dataset(
    conn: psycopg.Connection,
    out_dir: DataSource,
    npis: list[str] | None = None,
    *,
    with_graph: bool,
    tables: Collection[str] | None = None,
) -> dict[str, int]:
    """Write the dataset files from one consistent snapshot; rows per file.

    With `npis`, only those NPIs' provider, payment and LEIE rows (an incremental run).
    Without `with_graph` (the neo4j-* modes) no Postgres graph table is read at all;
    `tables` limits the export to those dataset files.
    """
    if not is_url(out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    counts = {}
    with _snapshot(conn) as scratch:
        for name, query in _queries(conn, with_graph=with_graph).items():
            if (npis is not None and name not in PER_NPI) or (
                tables is not None and name not in tables
            ):
                continue
            text, params = query, ()
            if npis is not None:
                text, params = f"SELECT * FROM ({query}) q WHERE npi = ANY(%s)", (npis,)
            target = dataset_file(out_dir, name)
            counts[name] = _copy_to_parquet(conn, name, text, params, scratch, target)
    return counts


@contextmanager
def _snapshot(conn: psycopg.Connection) -> Iterator[Path]:
    """One repeatable-read, read-only transaction of this export's own (rolled back at the
    end), with floats and dates in the text the readers parse exactly; a scratch dir."""
    with tempfile.TemporaryDirectory(prefix="claidex-export-") as scratch:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.commit()  # the snapshot must be this export's own transaction
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL extra_float_digits = 3")  # floats round-trip exactly
        conn.execute("SET LOCAL datestyle = 'ISO, YMD'")  # dates as the reader parses them
        try:
            yield Path(scratch)
        finally:
            conn.rollback()


def _copy_to_parquet(
    conn: psycopg.Connection,
    name: str,
    text: str,
    params: tuple[Any, ...],
    scratch: Path,
    target: DataFile,
) -> int:
    """COPY one table's query out as CSV, then into `target` (a path or an s3:// URL, whole
    or absent) with the dataset's column types; its rows. Any failure is one line naming
    the source object."""
    csv = scratch / f"{name}.csv"
    part = scratch / f"{name}.parquet"
    try:
        copy_out_csv(conn, sql.SQL(text), csv, params)  # type: ignore[arg-type]
        pl.scan_csv(csv, schema=canonical_schema(name)).sink_parquet(part, compression="zstd")
        rows = pl.scan_parquet(part).select(pl.len()).collect().item()
    except (psycopg.Error, pl.exceptions.PolarsError) as exc:
        raise _export_error(exc, name) from exc
    put_file(target, part)
    csv.unlink(missing_ok=True)
    part.unlink(missing_ok=True)  # (moved already, when the target is on this filesystem)
    return rows


# A total order of each per-NPI table's rows (ties are identical rows): an NPI range's rows
# in this order, ranges in NPI order, are the whole table in this order, whatever the count.
RANGE_ORDER = {
    "providers": "npi NULLS FIRST, entity_type_code, display_name, taxonomy_1, state, is_excluded",
    "payments_combined": "npi NULLS FIRST, year, program, payments, claims, beneficiaries, "
    "taxonomy, state",
    "exclusions": "npi NULLS FIRST, exclusion_id, excldate, reinstated",
}
NPI_LOW, NPI_SPAN = 1_000_000_000, 2_000_000_000  # NPIs are ten digits starting with 1 or 2


def npi_range(index: int, shards: int) -> tuple[str | None, str | None]:
    """[lower, upper) of NPI range `index` of `shards`, compared as text: the ranges cover
    every value exactly once, a malformed one ('123', 'abc') too; NULL is in range 0."""
    bounds = [f"{NPI_LOW + k * NPI_SPAN // shards:010d}" for k in range(1, shards)]
    lower = bounds[index - 1] if index > 0 else None
    upper = bounds[index] if index < shards - 1 else None
    return lower, upper


def _range_filter(index: int, shards: int) -> tuple[str, tuple[str, ...]]:
    lower, upper = npi_range(index, shards)
    if lower is None and upper is None:
        return "TRUE", ()
    if lower is None:
        return "(npi IS NULL OR npi < %s)", (str(upper),)
    if upper is None:
        return "npi >= %s", (lower,)
    return "npi >= %s AND npi < %s", (lower, upper)


def export_npi_range(
    conn: psycopg.Connection, out_dir: DataSource, index: int, shards: int
) -> dict[str, int]:
    """NPI range `index` of the per-NPI tables, read through the production objects in one
    repeatable-read snapshot, as `<table>/part-<index>.parquet` parts of `out_dir` (each
    written whole, then renamed); rows per table."""
    where, params = _range_filter(index, shards)
    counts: dict[str, int] = {}
    with _snapshot(conn) as scratch:
        for name in PER_NPI:
            text = (
                f"SELECT * FROM ({EXPORT_QUERIES[name]}) q WHERE {where} "
                f"ORDER BY {RANGE_ORDER[name]}"
            )
            target = child(child(out_dir, name), f"part-{index:05d}.parquet")
            counts[name] = _copy_to_parquet(conn, name, text, params, scratch, target)
    return counts


PROGRAM_TABLES = ("payments_medicaid", "payments_medicare", "medicare_part_d")  # the view's


def estimated_payment_rows(conn: psycopg.Connection) -> int | None:
    """payments_combined_v's rows as the planner estimates them (pg_class.reltuples of the
    program tables behind it), enough to size shards; None when a table has no estimate
    (never analysed, or not visible to this role): counting would scan the whole table."""
    total = 0
    for table in PROGRAM_TABLES:
        row = conn.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", (table,)
        ).fetchone()
        if row is None or row[0] is None or int(row[0]) < 0:
            conn.rollback()
            return None
        total += int(row[0])
    conn.rollback()
    return total
