"""Shared by the engines after the batches: merge, and publish once."""

from __future__ import annotations

import getpass
import os
from typing import Any

import polars as pl
import psycopg

from scoring.checks.gate import add_checks_to_report, blocked_line, run_checks
from scoring.config import Settings, load_settings
from scoring.db.connection import DatabaseError, error_class, scrub
from scoring.db.publish import PublishResult
from scoring.errors import InputError, RunStateError
from scoring.runs.alerts import send_alert
from scoring.runs.ledger import RunLedger, utc_now
from scoring.runs.manifest import RunManifest
from scoring.runs.metrics import push_run_metrics
from scoring.runs.store import REPORT_HTML, SCORES, RunPaths, run_store
from scoring.stages.merge import draw_run_report, merge_and_calibrate, restamp_report
from scoring.stages.publish import publish


def already_published(paths: RunPaths) -> bool:
    """This prepare of the run was published already: merging again must not publish twice."""
    return RunLedger(paths).read().get("published_prepare") == RunManifest.load(paths).prepare_id


def is_blocked(paths: RunPaths) -> bool:
    """This prepare of the run was held by its checks: no engine merges it again (only
    `claidex publish RUN --accept` moves it on)."""
    state = RunLedger(paths).read()
    prepare = RunManifest.load(paths).prepare_id
    return state.get("status") == "blocked" and state.get("blocked_prepare") == prepare


def merge_done(paths: RunPaths) -> bool:
    """The merge step has nothing left: published, or blocked by its checks."""
    return already_published(paths) or is_blocked(paths)


def accepted_by(cfg: Settings) -> str:
    """Who accepts a blocked run: CLAIDEX_ACCEPTED_BY, else the OS user."""
    if cfg.accepted_by:
        return cfg.accepted_by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's numeric user)
        return f"uid {os.getuid()}"


def publish_checked(
    paths: RunPaths,
    database_url: str,
    *,
    scores: pl.DataFrame | None = None,
    reference: RunPaths | None = None,
    accept: str | None = None,
    force: bool = False,
    outage_window: float | None = None,
) -> dict[str, Any]:
    """The checks, then publish unless they block. A blocked run: status `blocked`, the
    table untouched, an alert; `accept` (a reason) publishes a blocked run anyway, on record.
    The publish refuses, under the table's lock, a table whose run is no longer the one the
    checks compared with (two runs checked at once: the second must be checked again)."""
    ledger = RunLedger(paths)
    manifest = RunManifest.load(paths)
    if accept is not None:
        return _accept(paths, database_url, accept, force=force, outage_window=outage_window)
    scores = run_store(paths).read_frame(SCORES) if scores is None else scores
    try:
        outcome = run_checks(
            paths, scores, database_url, reference=reference, outage_window=outage_window
        )
    except (psycopg.Error, DatabaseError) as exc:  # as a publish that cannot reach it
        why = scrub(str(exc), database_url)
        final = error_class(exc)(  # read as a publish's: the checks are its first part
            f"publish of run {paths.run_id} failed: {why} (checks before publish); the scores "
            f"stay in {paths.where(SCORES)} (retry with `claidex publish {paths.run_id}`)"
        )
        ledger.fail("publish", final)  # the checks are its first part; 'retrying' when a
        # task retry is coming
        raise final from None
    except Exception as exc:
        ledger.fail("checks", exc, where="checks before publish: ")
        raise
    add_checks_to_report(paths, outcome)
    if outcome["verdict"] == "block":
        line = blocked_line(paths, outcome)
        ledger.set_status("blocked", blocked=line, blocked_prepare=manifest.prepare_id)
        restamp_report(paths, status="blocked")  # its header says so (a drawn page too)
        send_alert(paths.run_id, "blocked", line)
        return {"run_id": paths.run_id, "status": "blocked", "blocked": line}
    checked = (
        (outcome["reference_run"],) if manifest.kind == "full" and manifest.cfg.checks else None
    )
    result = publish(
        paths, database_url, force=force, outage_window=outage_window, checked_against=checked
    )
    return _published(paths, result)


def _published(paths: RunPaths, result: PublishResult) -> dict[str, Any]:
    return {
        "run_id": paths.run_id,
        "status": "published",
        "rows": result.rows_published,
        "removed": result.rows_removed,
    }


def _accept(
    paths: RunPaths, database_url: str, reason: str, *, force: bool, outage_window: float | None
) -> dict[str, Any]:
    """Publish a run its checks blocked; the reason, who and when go to claidex_runs with
    the publish (one transaction) and to the ledger once it is done."""
    if not is_blocked(paths):
        state = RunLedger(paths).read().get("status")
        msg = (
            f"run {paths.run_id} is {state}, not blocked by its checks: --accept is for a held "
            f"run (publish it without --accept, and its checks run)"
        )
        raise RunStateError(msg)
    if not reason.strip():
        msg = "--accept needs a reason (what changed, and why it may go live)"
        raise InputError(msg)
    who = accepted_by(load_settings())
    result = publish(
        paths,
        database_url,
        force=force,
        outage_window=outage_window,
        accepted=(reason.strip(), who),
    )
    accepted = {"reason": reason.strip(), "by": who, "at": utc_now()}
    RunLedger(paths).update(accepted=accepted, blocked=None)
    return _published(paths, result)


def published_outcome(paths: RunPaths) -> dict[str, Any] | None:
    """For a run published already: its status restored and a 'skipped' outcome; for a run
    its checks blocked: that outcome again (merging anew would not change it); else None."""
    if is_blocked(paths):
        if not run_store(paths).exists(REPORT_HTML):  # killed before its page: drawn now
            draw_run_report(paths)
        RunLedger(paths).update(page_pending=False)
        line = RunLedger(paths).read().get("blocked")
        return {"run_id": paths.run_id, "status": "blocked", "blocked": line, "skipped": True}
    if not already_published(paths):
        return None
    if not run_store(paths).exists(REPORT_HTML):  # killed between publish and drawing
        draw_run_report(paths)
    RunLedger(paths).set_status("published", page_pending=False)
    return {"run_id": paths.run_id, "status": "published", "skipped": True}


def merge_and_publish(
    paths: RunPaths,
    database_url: str | None,
    *,
    reference: RunPaths | None = None,
    outage_window: float | None = None,
) -> dict[str, Any]:
    """Step 3, then publish when a database is given; a run published before is left alone.
    `outage_window` 0: an interactive command, which reports an unreachable database at once.
    report.html is drawn last: the scores do not wait for it."""
    if (skipped := published_outcome(paths)) is not None:
        return skipped
    ledger = RunLedger(paths)
    # followers wait for 'published', and for the page, drawn last (`page_pending`)
    ledger.update(will_publish=database_url is not None, page_pending=True)
    scores = merge_and_calibrate(paths, reference, draw=False)
    try:
        if database_url is not None:
            checked = publish_checked(
                paths, database_url, scores=scores, reference=reference, outage_window=outage_window
            )
            if checked["status"] == "blocked":
                return {**checked, "rows": scores.height}
    finally:  # a failed publish still leaves the run's page
        try:
            draw_run_report(paths)
        finally:
            ledger.update(page_pending=False)
        push_run_metrics(ledger.read())  # when CLAIDEX_PUSHGATEWAY is set
    return {"run_id": paths.run_id, "status": ledger.read()["status"], "rows": scores.height}
