"""Publish a merged run's scores.parquet to Postgres; failures leave the scores in the run dir."""

from __future__ import annotations

import contextlib

import psycopg

from scoring.db.connection import DatabaseError, connect, error_class, scrub
from scoring.db.publish import PublishResult, StalePublishError, publish_scores, record_failure
from scoring.errors import RunStateError
from scoring.runs.ledger import RunLedger, StepTimer, utc_now
from scoring.runs.manifest import RunManifest
from scoring.runs.outage import through_outage
from scoring.runs.store import SCORES, RunPaths, run_store
from scoring.stages.merge import restamp_report


def publish(
    paths: RunPaths,
    database_url: str,
    *,
    force: bool = False,
    outage_window: float | None = None,
    accepted: tuple[str, str] | None = None,
    checked_against: tuple[str | None] | None = None,
) -> PublishResult:
    """Publish (or re-publish) the run; the ledger ends 'published' or 'failed' at 'publish'.

    An unreachable database is retried for `db_outage_window` s (the ledger says so
    meanwhile); after that the run fails at publish, and is not retried again.
    `outage_window` 0 is for interactive commands: a person sees the error at once and
    runs `claidex publish` again; unattended engines ride the outage out.
    """
    manifest = RunManifest.load(paths)
    store = run_store(paths)
    if not store.exists(SCORES):
        msg = f"run {manifest.run_id}: no scores.parquet to publish (merge has not finished)"
        raise RunStateError(msg)
    ledger = RunLedger(paths)
    ledger.set_status("publishing")
    scores = store.read_frame(SCORES)
    state = ledger.read()

    def publish_once() -> PublishResult:
        with connect(database_url) as conn:
            return publish_scores(
                conn,
                scores,
                run_id=manifest.run_id,
                kind=manifest.kind,
                fingerprint=manifest.input_fingerprint,
                created_at=state.get("created_at"),
                reference_run=state.get("reference_run"),
                force=force,
                accepted=accepted,
                checked_against=checked_against,
            )

    window = manifest.cfg.db_outage_window if outage_window is None else outage_window
    try:
        with StepTimer(ledger, "publish"):
            result = through_outage(publish_once, ledger=ledger, step="publish", window=window)
    except BaseException as exc:
        if not isinstance(exc, psycopg.Error | DatabaseError):
            ledger.fail("publish", f"publish interrupted: {type(exc).__name__}: {exc}")
            raise
        reason = exc if isinstance(exc, DatabaseError) else scrub(str(exc), database_url)
        retry = (
            ""
            if isinstance(exc, StalePublishError)
            else f" (retry with `claidex publish {manifest.run_id}`)"
        )
        msg = (
            f"publish of run {manifest.run_id} failed: {reason}; "
            f"the scores stay in {paths.where(SCORES)}{retry}"
        )
        final = error_class(exc)(msg)  # transient or not, as the retry policy judges `exc`
        ledger.fail("publish", final)  # 'retrying', not 'failed', when a task retry is coming
        with contextlib.suppress(psycopg.Error, DatabaseError), connect(database_url) as conn:
            record_failure(conn, run_id=manifest.run_id, kind=manifest.kind, error=msg)
        raise final from None
    ledger.set_status_counted(
        "published",
        "publish_count",
        published_at=utc_now(),
        published_prepare=manifest.prepare_id,
        rows_published=result.rows_published,
        rows_removed=result.rows_removed,
        error=None,
        failed_step=None,
    )
    restamp_report(paths)
    return result
