"""COPY in and out of Postgres as CSV, frame by frame (never row by row)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

COPY_CHUNK_ROWS = 1_000_000


def copy_in(conn: psycopg.Connection, table: str, frames: Iterator[pl.DataFrame]) -> int:
    """COPY the frames (columns named like the table's) into `table`; returns rows copied."""
    rows = 0
    columns: list[str] | None = None
    statement: sql.Composed | None = None
    with conn.cursor() as cur:
        for frame in frames:
            if columns is None:
                columns = frame.columns
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
            buffer = io.BytesIO()
            frame.select(columns).write_csv(buffer, include_header=False)
            with cur.copy(statement) as copy:  # type: ignore[arg-type]
                copy.write(buffer.getvalue())
            rows += frame.height
    return rows


def chunks(frame: pl.DataFrame, rows: int = COPY_CHUNK_ROWS) -> Iterator[pl.DataFrame]:
    for offset in range(0, frame.height, rows):
        yield frame.slice(offset, rows)


def copy_out_csv(
    conn: psycopg.Connection, query: sql.Composable, target: Path, params: tuple = ()
) -> None:
    """Stream `COPY (query) TO STDOUT` into a CSV file with a header."""
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    with (
        conn.cursor() as cur,
        cur.copy(statement, params or None) as copy,
        target.open("wb") as out,
    ):
        for block in copy:
            out.write(block)
