"""The live provider_risk_scores table read back in scores.parquet's form (`compare --published`).

One COPY out as CSV, then typed by polars: NUMERIC to Float64 (the published values are the
2- and 4-decimal roundings, so they read back as the same doubles), INTEGER[] and JSONB to
lists and structs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from scoring.db.copy import copy_out_csv
from scoring.stages.merge import score_columns

TABLE = "provider_risk_scores"


def _typed(column: str, dtype: pl.DataType) -> pl.Expr:
    text = pl.col(column)
    if dtype == pl.Boolean:
        return (text == "t").alias(column)
    if isinstance(dtype, pl.List) and column == "data_window_years":  # {2019,2020}
        inner = text.str.strip_chars("{}")
        years = inner.str.split(",").cast(dtype)
        return pl.when(inner == "").then(pl.lit([], dtype=dtype)).otherwise(years).alias(column)
    if isinstance(dtype, pl.List | pl.Struct):  # JSONB
        return text.str.json_decode(dtype).alias(column)
    return text.cast(dtype).alias(column)


def read_published(conn: psycopg.Connection, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every published row, the columns of `schema` (scores.parquet's) the table has."""
    present = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = current_schema()",
            (TABLE,),
        )
    }
    columns = [c for c in score_columns() if c in present and c in schema]
    query = sql.SQL("SELECT {} FROM {} ORDER BY npi").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(TABLE)
    )
    with tempfile.TemporaryDirectory(prefix="claidex-published-") as folder:
        target = Path(folder) / "published.csv"
        copy_out_csv(conn, query, target)
        raw = pl.read_csv(target, infer_schema=False)
    return raw.select(_typed(c, schema[c]) for c in columns)
