"""Atomic publish (SPEC §6.7): COPY into a staging table, set-based update + insert.

Readers of provider_risk_scores see the previous run or the new one, never a mix.
A full run also removes NPIs it no longer scores; an incremental run touches
only its own NPIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from scoring.db.connection import DatabaseError
from scoring.db.copy import chunks, copy_in
from scoring.stages.merge import score_columns

STAGE = "claidex_stage"
TABLE = "provider_risk_scores"


def published_columns() -> list[str]:
    """scores.parquet's columns and the run id: the registered components' values included."""
    columns = score_columns()
    after = columns.index("components") + 1
    return [*columns[:after], "run_id", *columns[after:]]


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
    ).select(published_columns())


def _stage(published: list[str]) -> sql.Composed:
    """A staging table of exactly the published columns (none of the table's constraints)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, published))
    return sql.SQL(
        "CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
        "SELECT {columns} FROM provider_risk_scores WITH NO DATA"
    ).format(stage=sql.Identifier(STAGE), columns=columns)


def _update(published: list[str]) -> sql.Composed:
    """Rows of NPIs already published change in place: keys, other columns, FKs all stay."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in published[1:]
    )
    return sql.SQL(
        "UPDATE provider_risk_scores p SET {assignments}, updated_at = %(at)s "
        "FROM {stage} s WHERE p.npi = s.npi"
    ).format(assignments=assignments, stage=sql.Identifier(STAGE))


def _insert(published: list[str], *, only_new: bool = True) -> sql.Composed:
    """The staged rows (`only_new`: of NPIs the table does not hold yet)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, published))
    new = "WHERE NOT EXISTS (SELECT 1 FROM provider_risk_scores p WHERE p.npi = s.npi)"
    return sql.SQL(
        "INSERT INTO provider_risk_scores ({columns}, updated_at) "
        "SELECT {columns}, %(at)s FROM {stage} s {new}"
    ).format(columns=columns, stage=sql.Identifier(STAGE), new=sql.SQL(new if only_new else ""))


def _remove_unscored() -> sql.Composed:
    """A full run: the NPIs it no longer scores leave the table (rows without an NPI too)."""
    return sql.SQL(
        "DELETE FROM provider_risk_scores p "
        "WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.npi = p.npi)"
    ).format(sql.Identifier(STAGE))


class StalePublishError(DatabaseError):
    """A full run older than the one on the table: publishing it would roll the table back."""


def _replace_all() -> sql.Composed:
    """A full run over a table nothing else hangs on: one pass deletes every row; counts the
    rows of NPIs the run no longer scores."""
    return sql.SQL(
        "WITH gone AS (DELETE FROM provider_risk_scores RETURNING npi) "
        "SELECT count(*) FROM gone g WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE s.npi = g.npi)"
    ).format(sql.Identifier(STAGE))


def _refuse_missing_columns(conn: psycopg.Connection, published: list[str]) -> None:
    """A component registered since the table was made: its columns come with `db init`."""
    rows = conn.execute(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped",
        (TABLE,),
    ).fetchall()
    missing = [c for c in published if c not in {name for (name,) in rows}]
    if missing:
        msg = (
            f"{TABLE} has no column(s) {', '.join(missing)}: run `claidex db init` to add "
            "the registered components' columns"
        )
        raise DatabaseError(msg)


def _only_ours(conn: psycopg.Connection, published: list[str]) -> bool:
    """No foreign key points at the table, no trigger fires on it, and every column is one
    we publish: deleting and re-inserting its rows then loses nothing anyone else holds."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
        "        AND confrelid = 'provider_risk_scores'::regclass), "
        "       (SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal "
        "        AND tgrelid = 'provider_risk_scores'::regclass), "
        "       (SELECT array_agg(attname::text) FROM pg_attribute "
        "        WHERE attrelid = 'provider_risk_scores'::regclass AND attnum > 0 "
        "        AND NOT attisdropped)"
    ).fetchone()
    if row is None:
        return False
    references, triggers, columns = row
    return references == 0 and triggers == 0 and set(columns) <= {*published, "updated_at"}


def table_full_run(conn: psycopg.Connection, run_id: str = "") -> tuple[str, Any] | None:
    """(run id, prepared at) of the full run on the table: the last full publish (other than
    `run_id`'s, when given)."""
    return conn.execute(
        "SELECT run_id, run_created_at FROM claidex_runs WHERE kind = 'full' "
        "AND status = 'published' AND run_id <> %s ORDER BY published_at DESC NULLS LAST LIMIT 1",
        (run_id,),
    ).fetchone()


def _refuse_foreign_reference(conn: psycopg.Connection, run_id: str, reference: str) -> None:
    """Under the table lock: an incremental run publishes only over its own reference."""
    current = table_full_run(conn, run_id)
    if current is not None and current[0] != reference:
        msg = (
            f"incremental run {run_id} was scored against full run {reference}, but the table "
            f"holds full run {current[0]}: not published (its rows would mix two references); "
            "enqueue the NPIs again"
        )
        raise StalePublishError(msg)


def _refuse_stale(conn: psycopg.Connection, run_id: str, created_at: str | None) -> None:
    """Under the table lock: the full run on the table must not be newer than this one."""
    current = table_full_run(conn, run_id)
    if current is None or current[1] is None or created_at is None:
        return
    newer = conn.execute("SELECT %s::timestamptz < %s", (created_at, current[1])).fetchone()
    if newer and newer[0]:
        msg = (
            f"run {run_id} (prepared {created_at}) is older than the published full run "
            f"{current[0]} (prepared {current[1].isoformat()}): not published, it would roll "
            f"the table back; `claidex publish {run_id} --force` publishes it anyway"
        )
        raise StalePublishError(msg)


def publish_scores(
    conn: psycopg.Connection,
    scores: pl.DataFrame,
    *,
    run_id: str,
    kind: str,
    fingerprint: str,
    created_at: str | None = None,
    reference_run: str | None = None,
    force: bool = False,
    accepted: tuple[str, str] | None = None,
    checked_against: tuple[str | None] | None = None,
) -> PublishResult:
    """Publish one run's scores and record it in claidex_runs, all or nothing.
    `accepted`: (reason, who) for a run its checks blocked, kept in claidex_runs.
    `checked_against`: (the full run the checks compared with,): refused, under the lock,
    when the table's full run is another by now (ChecksOutdatedError).

    A full run prepared before the full run on the table is refused (StalePublishError)
    unless `force`: an old run resumed late must not roll the table back.

    UPDATE + INSERT rather than ON CONFLICT: a production provider_risk_scores may carry
    npi under a plain index, without the unique constraint an upsert needs; and rather
    than delete + insert, which would fire cascades and reset columns other jobs own.
    A full run over a table that only we use (no foreign key, trigger or foreign
    column) deletes and re-inserts instead: the same result, much faster.
    """
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        msg = "publish needs an idle connection: it must own its transaction"
        raise ValueError(msg)
    published = published_columns()
    frame = published_frame(scores, run_id)
    with conn.transaction():
        _refuse_missing_columns(conn, published)
        conn.execute(_stage(published))
        copy_in(conn, STAGE, chunks(frame))
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(STAGE)))
        # One publisher at a time (readers are not blocked): concurrent full runs, or a
        # redelivered merge, must not interleave their deletes and updates.
        conn.execute("LOCK TABLE provider_risk_scores IN SHARE ROW EXCLUSIVE MODE")
        if kind == "full" and not force:  # under the lock, so publish order is settled
            _refuse_stale(conn, run_id, created_at)
        if checked_against is not None:
            _refuse_unchecked(conn, run_id, checked_against[0])
        if kind != "full" and reference_run is not None and not force:
            _refuse_foreign_reference(conn, run_id, reference_run)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        at = {"at": row[0] if row else None}  # when this publish got the table: publish order
        if kind == "full" and _only_ours(conn, published):  # weekly: fastest, nothing to keep
            (removed,) = conn.execute(_replace_all()).fetchone() or (0,)
            rows = conn.execute(_insert(published, only_new=False), at).rowcount
        else:
            removed = conn.execute(_remove_unscored()).rowcount if kind == "full" else 0
            updated = conn.execute(_update(published), at).rowcount
            rows = updated + conn.execute(_insert(published), at).rowcount
        conn.execute(
            "INSERT INTO claidex_runs (run_id, kind, status, input_fingerprint, rows_published, "
            "rows_removed, published_at, run_created_at) "
            "VALUES (%s, %s, 'published', %s, %s, %s, %s, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET status = 'published', error = NULL, "
            "rows_published = EXCLUDED.rows_published, rows_removed = EXCLUDED.rows_removed, "
            "published_at = EXCLUDED.published_at, run_created_at = EXCLUDED.run_created_at, "
            "updated_at = now()",
            (run_id, kind, fingerprint, rows, removed, at["at"], created_at),
        )
        if accepted is not None:  # columns of `claidex db init` (RUNS_COLUMNS)
            conn.execute(
                "UPDATE claidex_runs SET accepted_reason = %s, accepted_by = %s, "
                "accepted_at = now() WHERE run_id = %s",
                (*accepted, run_id),
            )
    return PublishResult(rows_published=rows, rows_removed=removed)


class ChecksOutdatedError(StalePublishError):
    """Another full run reached the table after this run's checks: final, check it again."""


def _refuse_unchecked(conn: psycopg.Connection, run_id: str, checked: str | None) -> None:
    row = table_full_run(conn, run_id)
    current = None if row is None else str(row[0])
    if current != checked and checked != run_id:  # a re-publish of the run on the table: its own
        msg = (
            f"the table's run is {current} now, its checks compared with {checked}: run the "
            f"checks again with `claidex publish {run_id}`"
        )
        raise ChecksOutdatedError(msg)


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
