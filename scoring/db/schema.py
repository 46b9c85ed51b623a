"""`claidex db init`: safe on a production database (issue 10).

It never drops, replaces or alters a source table or view. Every object is looked up
through the search_path first (to_regclass), and only a missing one is created: the
production source objects (ops/sql/source_schema.sql) on an empty development
database, Claidex's own tables (ops/sql/schema.sql) anywhere. An existing
provider_risk_scores gains only the additive columns it lacks, the registered components'
columns among them (one short lock each), and the indexes it lacks (built CONCURRENTLY).
A database that has everything gets catalog reads only: no DDL, no table lock, no CREATE
privilege needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from psycopg import sql

from scoring.db.connection import DatabaseError
from scoring.errors import ClaidexError
from scoring.methodology.registry import sql_columns

SQL_DIRS = (
    Path(__file__).resolve().parents[2] / "ops" / "sql",  # source checkout
    Path.cwd() / "ops" / "sql",  # installed package run from the project dir
)
OBJECT_MARKER = re.compile(r"^-- object: (\w+)[ \t]*$", re.MULTILINE)
SCORES_TABLE = "provider_risk_scores"
# Columns Claidex adds to the SPEC §3 table (never renames or retypes one).
ADDITIVE_COLUMNS = {
    "updated_at": "TIMESTAMPTZ NOT NULL DEFAULT now()",
    "run_id": "TEXT",
    "top_program": "TEXT",
    "snf_entity_id": "TEXT",
    "chain_provider_count": "INTEGER",
    "chain_excluded_count": "INTEGER",
    "owner_excluded": "BOOLEAN",
    "actively_excluded": "BOOLEAN",
}
# Columns added to Claidex's own run table after its first version.
RUNS_COLUMNS = {
    "run_created_at": "TIMESTAMPTZ",  # when the run was prepared (read its input)
    "accepted_reason": "TEXT",  # a run its checks blocked, published by `publish --accept`
    "accepted_by": "TEXT",
    "accepted_at": "TIMESTAMPTZ",
}
# Indexed key -> its definition; built only when no valid, whole-table btree index of the
# table leads with that column in an order it can serve (a DESC key is also served by an
# ascending index read backwards).
SCORE_INDEXES = {
    "risk_score": "risk_score DESC",
    "risk_label": "risk_label",
    "npi": "npi",
    "billing_outlier_score": "billing_outlier_score DESC",  # the API sorts on it
    "updated_at": "updated_at DESC",
}


def sql_file(name: str) -> str:
    for directory in SQL_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return candidate.read_text()
    looked = ", ".join(str(d / name) for d in SQL_DIRS)
    msg = f"schema file not found (looked for {looked})"
    raise ClaidexError(msg)


def sql_sections(name: str) -> list[tuple[str, str]]:
    """(object name, statement) for each `-- object: NAME` section of an ops/sql file."""
    parts = OBJECT_MARKER.split(sql_file(name))
    return list(zip(parts[1::2], parts[2::2], strict=True))


def resolved(conn: psycopg.Connection, name: str) -> str | None:
    """The object `name` resolves to on the search_path (schema-qualified when needed)."""
    row = conn.execute("SELECT to_regclass(%s)::text", (name,)).fetchone()
    return row[0] if row else None


def _columns(conn: psycopg.Connection, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped",
        (table,),
    ).fetchall()
    return {name for (name,) in rows}


def _indexed_columns(conn: psycopg.Connection, table: str) -> set[str]:
    """Leading columns of the table's valid, non-partial btree indexes in a default order."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = %s::regclass AND i.indisvalid AND i.indpred IS NULL "
        "AND am.amname = 'btree' "
        "AND ((i.indoption[0] & 1) <> 0) = ((i.indoption[0] & 2) <> 0)",  # DESC <=> NULLS FIRST
        (table,),
    ).fetchall()
    return {name for (name,) in rows}


def _refuse_earlier_layout(conn: psycopg.Connection) -> None:
    """An earlier Claidex version's own source tables: not production, never migrated here."""
    medicare = resolved(conn, "payments_medicare")
    old_payments = medicare is not None and "medicare_paid" not in _columns(conn, medicare)
    old_graph = resolved(conn, "entity_ownership") and not resolved(conn, "ownership_snf")
    if old_payments or old_graph:
        msg = (
            "this database holds the source tables of an earlier Claidex version "
            "(payments_medicare without medicare_paid, or entity_ownership without "
            "ownership_snf); db init never alters source tables: load the data into a new "
            "database with `claidex db init` and `claidex db load DIR`"
        )
        raise DatabaseError(msg)


def _lock_timeout(seconds: float) -> sql.Composed:
    return sql.SQL("SET LOCAL lock_timeout = {}").format(f"{max(1, int(seconds * 1000))}ms")


def _create_missing(conn: psycopg.Connection, lock_timeout_s: float) -> list[str]:
    created = []
    with conn.transaction():
        conn.execute(_lock_timeout(lock_timeout_s))
        for file in ("source_schema.sql", "schema.sql"):
            for name, statement in sql_sections(file):
                if resolved(conn, name) is None:
                    conn.execute(statement)  # type: ignore[arg-type]
                    created.append(name)
    return created


def _add_columns(
    conn: psycopg.Connection, name: str, columns: dict[str, str], lock_timeout_s: float
) -> list[str]:
    """Add the columns `name` lacks, one short lock each."""
    table = resolved(conn, name)
    assert table is not None  # created above when missing
    added = []
    present = _columns(conn, table)
    for column, kind in columns.items():
        if column in present:
            continue
        with conn.transaction():
            conn.execute(_lock_timeout(lock_timeout_s))
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    sql.SQL(table), sql.Identifier(column), sql.SQL(kind)
                )
            )
        added.append(f"{name}.{column}")
    return added


def _complete_scores_table(conn: psycopg.Connection, lock_timeout_s: float) -> list[str]:
    """Add the missing additive columns (one short lock each) and indexes (CONCURRENTLY).

    The registered components' columns are additive too: a component registered after the
    table was made (scoring.methodology.registry) gets its columns here, its migration."""
    columns = {**ADDITIVE_COLUMNS, **sql_columns()}
    added = _add_columns(conn, SCORES_TABLE, columns, lock_timeout_s)
    table = resolved(conn, SCORES_TABLE)
    assert table is not None
    missing = [
        key for column, key in SCORE_INDEXES.items() if column not in _indexed_columns(conn, table)
    ]
    if missing:
        conn.commit()
        conn.autocommit = True  # CREATE INDEX CONCURRENTLY: readers and writers carry on
        try:
            for key in missing:
                conn.execute(
                    sql.SQL("CREATE INDEX CONCURRENTLY ON {} ({})").format(
                        sql.SQL(table), sql.SQL(key)
                    )
                )
                added.append(f"index on {SCORES_TABLE} ({key})")
        finally:
            conn.autocommit = False
    return added


def init_schema(conn: psycopg.Connection, *, lock_timeout_s: float = 3.0) -> list[str]:
    """Create what is missing, change nothing that exists; returns what it created."""
    try:
        _refuse_earlier_layout(conn)
        created = _create_missing(conn, lock_timeout_s)
        created += _add_columns(conn, "claidex_runs", RUNS_COLUMNS, lock_timeout_s)
        created += _complete_scores_table(conn, lock_timeout_s)
        conn.commit()
        return created
    except psycopg.errors.LockNotAvailable:
        conn.rollback()
        msg = (
            f"db init could not lock {SCORES_TABLE} within {lock_timeout_s:g} s: a long query "
            "or transaction holds it; run `claidex db init` again when it has finished"
        )
        raise DatabaseError(msg) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        conn.rollback()
        msg = f"db init needs to create or change an object and may not: {str(exc).strip()}"
        raise DatabaseError(msg) from None
