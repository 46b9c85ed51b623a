"""Atomic publish (SPEC §6.7): COPY into a staging table, set-based replace, one transaction.

Readers of provider_risk_scores see the previous run or the new one, never a mix.
A full run also removes NPIs it no longer scores; an incremental run touches
only its own NPIs.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import psycopg
from psycopg import sql

from scoring.db.copy import chunks, copy_in

STAGE = "claidex_stage"
PUBLISHED_COLUMNS = [
    "npi", "risk_score", "risk_label", "r_raw",
    "billing_outlier_score", "billing_outlier_percentile", "ownership_chain_risk",
    "payment_trajectory_score", "payment_trajectory_zscore", "exclusion_proximity_score",
    "program_concentration_score", "peer_taxonomy", "peer_state", "peer_count",
    "data_window_years", "flags", "components", "run_id", "top_program", "snf_entity_id",
    "chain_provider_count", "chain_excluded_count", "owner_excluded", "actively_excluded",
]  # fmt: skip


@dataclass(frozen=True)
class PublishResult:
    rows_published: int
    rows_removed: int


def _json_list(column: str) -> pl.Expr:
    """A list of strings as JSON text: polars encodes {"f": [...]}, we keep the [...] part."""
    wrapped = pl.struct(pl.col(column).fill_null([]).alias("f")).struct.json_encode()
    return wrapped.str.strip_prefix('{"f":').str.strip_suffix("}").alias(column)


def published_frame(scores: pl.DataFrame, run_id: str) -> pl.DataFrame:
    """scores.parquet in the table's text forms: JSONB, INTEGER[] and the run id."""
    years = pl.col("data_window_years").cast(pl.List(pl.String)).list.join(",")
    return scores.with_columns(
        pl.concat_str(pl.lit("{"), years, pl.lit("}")).alias("data_window_years"),
        _json_list("flags"),
        pl.col("components").struct.json_encode().alias("components"),
        pl.lit(run_id).alias("run_id"),
    ).select(PUBLISHED_COLUMNS)


def _insert() -> sql.Composed:
    columns = sql.SQL(", ").join(map(sql.Identifier, PUBLISHED_COLUMNS))
    return sql.SQL(
        "INSERT INTO provider_risk_scores ({columns}, updated_at) "
        "SELECT {columns}, now() FROM {stage}"
    ).format(columns=columns, stage=sql.Identifier(STAGE))


def _replace_all() -> sql.Composed:
    """A full run: one pass deletes every row; counts the NPIs the run no longer scores."""
    return sql.SQL(
        "WITH gone AS (DELETE FROM provider_risk_scores RETURNING npi) "
        "SELECT count(DISTINCT npi) FROM gone g "
        "WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.npi = g.npi)"
    ).format(sql.Identifier(STAGE))


def _replace_own() -> sql.Composed:
    """An incremental run: delete only its own NPIs' rows."""
    return sql.SQL(
        "DELETE FROM provider_risk_scores p WHERE EXISTS (SELECT 1 FROM {} s WHERE s.npi = p.npi)"
    ).format(sql.Identifier(STAGE))


def publish_scores(
    conn: psycopg.Connection, scores: pl.DataFrame, *, run_id: str, kind: str, fingerprint: str
) -> PublishResult:
    """Publish one run's scores and record it in claidex_runs, all or nothing."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        msg = "publish needs an idle connection: it must own its transaction"
        raise ValueError(msg)
    frame = published_frame(scores, run_id)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {} (LIKE provider_risk_scores INCLUDING DEFAULTS) ON COMMIT DROP"
            ).format(sql.Identifier(STAGE))
        )
        copy_in(conn, STAGE, chunks(frame))
        # One publisher at a time (readers are not blocked): concurrent full runs, or a
        # redelivered merge, must not interleave their deletes and upserts.
        conn.execute("LOCK TABLE provider_risk_scores IN SHARE ROW EXCLUSIVE MODE")
        # Delete-then-insert, not ON CONFLICT: a production provider_risk_scores may carry
        # npi under a plain index, without the unique constraint an upsert needs.
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGE)))
        removed = 0
        if kind == "full":
            (removed,) = conn.execute(_replace_all()).fetchone() or (0,)
        else:
            conn.execute(_replace_own())
        published = conn.execute(_insert()).rowcount
        conn.execute(
            "INSERT INTO claidex_runs (run_id, kind, status, input_fingerprint, rows_published, "
            "rows_removed, published_at) VALUES (%s, %s, 'published', %s, %s, %s, now()) "
            "ON CONFLICT (run_id) DO UPDATE SET status = 'published', error = NULL, "
            "rows_published = EXCLUDED.rows_published, rows_removed = EXCLUDED.rows_removed, "
            "published_at = now(), updated_at = now()",
            (run_id, kind, fingerprint, published, removed),
        )
    return PublishResult(rows_published=published, rows_removed=removed)


def record_failure(conn: psycopg.Connection, *, run_id: str, kind: str, error: str) -> None:
    """Note a failed publish in claidex_runs (best effort, own transaction, short lock wait)."""
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '5s'")
        conn.execute(
            "INSERT INTO claidex_runs (run_id, kind, status, error) VALUES (%s, %s, 'failed', %s) "
            "ON CONFLICT (run_id) DO UPDATE SET status = 'failed', error = EXCLUDED.error, "
            "updated_at = now() WHERE claidex_runs.status <> 'published'",
            (run_id, kind, error),
        )
