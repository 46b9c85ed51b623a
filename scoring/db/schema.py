"""`claidex db init`: safe on a production database (issue 10).

It never drops, replaces or alters a source table or view. The production source
objects (ops/sql/source_schema.sql) are laid down only where they are absent, so an
empty development database looks like production. Claidex's own objects
(ops/sql/schema.sql) are created when missing; an existing provider_risk_scores gains
only the additive columns and indexes it lacks.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from psycopg import sql

from scoring.errors import ClaidexError

SQL_DIRS = (
    Path(__file__).resolve().parents[2] / "ops" / "sql",  # source checkout
    Path.cwd() / "ops" / "sql",  # installed package run from the project dir
)
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
# Index name -> indexed key; created only when no index of the table starts with that key.
SCORE_INDEXES = {
    "provider_risk_scores_score_idx": "risk_score DESC",
    "provider_risk_scores_label_idx": "risk_label",
    "provider_risk_scores_npi_idx": "npi",
    "provider_risk_scores_billing_idx": "billing_outlier_score DESC",  # the API sorts on it
    "provider_risk_scores_updated_idx": "updated_at DESC",
}
LOCK_TIMEOUT = "10s"  # never queue behind the API's readers for long


def sql_file(name: str) -> str:
    for directory in SQL_DIRS:
        candidate = directory / name
        if candidate.is_file():
            return candidate.read_text()
    looked = ", ".join(str(d / name) for d in SQL_DIRS)
    msg = f"schema file not found (looked for {looked})"
    raise ClaidexError(msg)


def _leading_keys(conn: psycopg.Connection, table: str) -> set[str]:
    """The first key of each index on `table`, as 'column' or 'column DESC'."""
    rows = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s",
        (table,),
    ).fetchall()
    keys = set()
    for (indexdef,) in rows:
        match = re.search(r"\(([^,)]+)", indexdef)
        if match:
            key = re.sub(r"\s+(ASC|NULLS (FIRST|LAST))\b", "", match.group(1).strip('" '))
            keys.add(" ".join(key.replace('"', "").split()))
    return keys


def _missing_columns(conn: psycopg.Connection, table: str) -> dict[str, str]:
    present = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
    }
    return {name: kind for name, kind in ADDITIVE_COLUMNS.items() if name not in present}


def _complete_scores_table(conn: psycopg.Connection) -> None:
    table = sql.Identifier(SCORES_TABLE)
    for name, kind in _missing_columns(conn, SCORES_TABLE).items():
        conn.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(name), sql.SQL(kind)
            )
        )
    present = _leading_keys(conn, SCORES_TABLE)
    for name, key in SCORE_INDEXES.items():
        if key not in present:
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                    sql.Identifier(name), table, sql.SQL(key)
                )
            )


def init_schema(conn: psycopg.Connection) -> None:
    """Create what is missing, change nothing that exists; safe to run again."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
        conn.execute(sql_file("source_schema.sql"))  # type: ignore[arg-type]
        conn.execute(sql_file("schema.sql"))  # type: ignore[arg-type]
        _complete_scores_table(conn)
