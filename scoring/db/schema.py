"""Apply the idempotent schema of ops/sql/schema.sql."""

from __future__ import annotations

from pathlib import Path

import psycopg

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "ops" / "sql" / "schema.sql"


def init_schema(conn: psycopg.Connection) -> None:
    """Create (or keep) every table, view and index; safe to run again."""
    with conn.transaction():
        conn.execute(SCHEMA_FILE.read_text())  # type: ignore[arg-type]
