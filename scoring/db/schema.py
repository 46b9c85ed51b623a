"""Apply the idempotent schema of ops/sql/schema.sql."""

from __future__ import annotations

from pathlib import Path

import psycopg

from scoring.errors import ClaidexError

SCHEMA_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "ops" / "sql" / "schema.sql",  # source checkout
    Path.cwd() / "ops" / "sql" / "schema.sql",  # installed package run from the project dir
)


def schema_sql() -> str:
    for candidate in SCHEMA_CANDIDATES:
        if candidate.is_file():
            return candidate.read_text()
    msg = f"schema file not found (looked for {', '.join(map(str, SCHEMA_CANDIDATES))})"
    raise ClaidexError(msg)


def init_schema(conn: psycopg.Connection) -> None:
    """Create (or keep) every table, view and index; safe to run again."""
    with conn.transaction():
        conn.execute(schema_sql())  # type: ignore[arg-type]
