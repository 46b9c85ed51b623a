"""Beat's periodic tasks (the watchdog, the weekly full run, the daily refresh) and ad-hoc
incremental NPIs: each decides what to start, the run tasks do the work."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import redis
from celery.utils.log import get_task_logger

from scoring.config import Settings
from scoring.db.connection import connect, database_url
from scoring.db.export import export_dataset
from scoring.errors import ClaidexError
from scoring.inputs.dataset import DataSource, data_source
from scoring.inputs.npi import checked_npis
from scoring.location import is_url
from scoring.runs.alerts import send_alert
from scoring.runs.ledger import RunLedger, utc_now
from scoring.runs.manifest import RunManifest
from scoring.runs.store import (
    SOURCE,
    WATCHDOG,
    RunPaths,
    new_run_id,
    read_json_or,
    run_store,
    source_dataset,
)
from scoring.stages.finish import publish_checked
from scoring.stages.incremental import (
    changed_npis,
    latest_full_run,
    prepare_incremental,
)
from scoring.stages.merge import draw_run_report, merge_and_calibrate
from scoring.stages.score_batch import score_batch
from workers.app import RUN_QUEUE, app
from workers.broker import pending_messages, run_messages
from workers.reliability import (
    RELIABLE,
    broker_client,
    lease_holders,
    redis_client,
    run_lease,
    run_paths,
)
from workers.tasks import dispatch_batches, resume_run, start_full_run
from workers.watchdog import Verdict, check_run, unfinished_runs

log = get_task_logger(__name__)


def act_on(verdict: Verdict, cfg: Settings) -> str | None:
    """Bring a stuck run back (bounded by watchdog_max_resumes); returns what was done."""
    paths = run_paths(verdict.run_id)
    ledger = RunLedger(paths)
    state = ledger.read()
    # Kept beside the ledger, which a re-prepare clears: the count of resumes must survive it.
    record = dict(read_json_or(paths, WATCHDOG, {}))
    if time.time() - float(record.get("last_epoch", 0)) < cfg.stall_seconds:
        return None  # the last action needs time to show progress
    if int(record.get("actions", 0)) >= cfg.watchdog_max_resumes:
        reason = (
            f"stalled: {verdict.reason}; the watchdog resumed it {record.get('actions')} times "
            f"(CLAIDEX_WATCHDOG_MAX_RESUMES); fix the cause, then run "
            f"`python -m workers resume {verdict.run_id}`"
        )
        ledger.fail(verdict.status, reason)
        return "failed"
    record.update(
        actions=int(record.get("actions", 0)) + 1,
        last_epoch=time.time(),
        last_at=utc_now(),
        last=f"{verdict.action}: {verdict.reason}",
    )
    run_store(paths).write_json(WATCHDOG, record)
    ledger.update(watchdog=record)
    log.warning("watchdog: run %s: %s: %s", verdict.run_id, verdict.action, verdict.reason)
    send_alert(
        verdict.run_id,
        "stalled",
        f"{verdict.reason}; the watchdog resumes it ({verdict.action}, "
        f"{record['actions']} of {cfg.watchdog_max_resumes})",
        f"if it stays stuck: python -m workers resume {verdict.run_id}",
    )
    if verdict.action == "batches" and state.get("status") == "scoring":
        dispatch_batches(verdict.run_id, verdict.batches)
    else:
        resume_run(verdict.run_id)
    return str(verdict.action)


def check_fleet_run(run_id: str, client: redis.Redis | None = None) -> Verdict:
    client = client or redis_client()
    paths = run_paths(run_id)
    holders = lease_holders(client, run_id)
    return check_run(paths, run_messages(broker_client(), run_id), holders, Settings())


@app.task(name="claidex.watchdog", bind=True)
def watchdog(self: Any) -> dict[str, Any]:
    """Beat's watchdog: every unfinished fleet run with nobody working on it is resumed
    (or, after watchdog_max_resumes, failed with the reason and the command to run)."""
    cfg = Settings()
    guard = run_lease("fleet", "watchdog")
    if not guard.acquire():
        return {"skipped": "another watchdog is running"}
    acted: dict[str, str] = {}
    with guard:
        client = redis_client()
        messages = pending_messages(broker_client())
        for paths in unfinished_runs(cfg.run_root):
            try:  # one damaged run directory never stops the watchdog for the others
                holders = lease_holders(client, paths.run_id)
                mine = [m for m in messages if m.run_id == paths.run_id]
                verdict = check_run(paths, mine, holders, cfg)
                if verdict.action and (done := act_on(verdict, cfg)):
                    acted[paths.run_id] = done
            except Exception as exc:  # a full disk, a torn file: logged, tried next tick
                log.error("watchdog: run %s: %s: %s", paths.run_id, type(exc).__name__, exc)
    return {"acted": acted}


def _incremental_source(
    paths: RunPaths, reference: RunPaths, npis: list[str], data_dir: str | None
) -> DataSource:
    """The NPIs' current rows: a dataset directory, or Postgres when one is configured."""
    if data_dir:
        return data_source(data_dir)
    url = database_url()
    if url is None:
        return data_source(RunManifest.load(reference).source)
    source = source_dataset(paths)
    with connect(url) as conn:
        export_dataset(conn, source, npis=npis, with_graph=False)
    return source


def run_incremental(npis: list[str], data_dir: str | None, publish_scores: bool) -> dict[str, Any]:
    """An incremental run end to end in this process (the steps, never new logic)."""
    cfg = Settings()
    url = database_url()
    wanted = checked_npis(npis)
    reference = latest_full_run(cfg.run_root, published_only=url is not None and publish_scores)
    paths = run_paths(new_run_id("-incremental"))
    source = _incremental_source(paths, reference, wanted, data_dir)
    prepare_incremental(paths, reference, source, wanted)
    score_batch(paths, 0)
    scores = merge_and_calibrate(paths, reference, draw=False)
    if publish_scores and url is not None:  # its checks first: quarantine and movers
        publish_checked(paths, url, scores=scores, reference=reference)
    if RunManifest.load(paths).cfg.report_html:  # the page: after the scores, on the runs
        # queue (ad-hoc NPIs never wait behind it); a failed send is no reason to re-run
        try:
            draw_report.apply_async(args=[paths.run_id], queue=RUN_QUEUE)
        except Exception as exc:
            RunLedger(paths).update(report_error=f"report.html not requested: {exc}"[:2000])
    columns = ["npi", "risk_score", "risk_label", "r_raw", "flags"]
    state = RunLedger(paths).read()
    return {
        "run_id": paths.run_id,
        "reference_run": reference.run_id,
        "status": state["status"],
        "unknown_npis": state.get("unknown_npis", []),
        "blocked": state.get("blocked"),  # the checks' line, when held
        "scores": scores.select(columns).to_dicts(),
    }


@app.task(name="claidex.draw_report", **RELIABLE)
def draw_report(run_id: str) -> None:
    """report.html of an incremental run whose scores are out already."""
    draw_run_report(run_paths(run_id))


@app.task(name="claidex.score_incremental", bind=True, **RELIABLE)
def score_incremental(
    self: Any, npis: list[str], data_dir: str | None, publish_scores: bool
) -> dict[str, Any]:
    """Ad-hoc NPIs on their own queue, so they never wait behind a full recompute."""
    return run_incremental(npis, data_dir, publish_scores)


def _drop_snapshot(data: DataSource) -> None:
    """Remove a refresh's Postgres snapshot (`<run root>/<id>-refresh-source/source`), the
    folder or prefix of its id included."""
    if is_url(data):
        holder = RunPaths(str(data).rsplit("/", 1)[0])
        with contextlib.suppress(ClaidexError):
            run_store(holder).delete(SOURCE)
        return
    shutil.rmtree(Path(data).parent, ignore_errors=True)


def _scheduled_source() -> tuple[str | None, DataSource | None]:
    """(dataset dir for start_full_run, directory to read current rows from)."""
    cfg = Settings()
    if cfg.scheduled_data is not None:
        return str(cfg.scheduled_data), cfg.scheduled_data
    if database_url() is None:
        msg = "scheduled runs need CLAIDEX_SCHEDULED_DATA or a database (DATABASE_URL)"
        raise ValueError(msg)
    return None, None


@app.task(name="claidex.scheduled_full_run", bind=True, **RELIABLE)
def scheduled_full_run(self: Any) -> dict[str, Any]:
    """Beat's weekly full recompute, published: on Modal when CLAIDEX_FULL_ENGINE=modal (falling
    back to this fleet, with the reason in the result and the log, when Modal is unusable)."""
    cfg = Settings()
    modal_error = None
    if cfg.full_engine == "modal":
        from modal_burst.handoff import ModalNotConfiguredError, StaysOnFleetError, spawn_full_run

        run_id = new_run_id("-weekly-burst")
        try:
            return {"run_id": run_id, "engine": "modal", "call": spawn_full_run(run_id, cfg)}
        except ModalNotConfiguredError as exc:
            modal_error = f"Modal not usable, running on the Celery fleet instead: {exc}"
            # a fleet path is the configuration's choice, said once a week, not an alarm
            (log.info if isinstance(exc, StaysOnFleetError) else log.error)(modal_error)
    data_dir, _ = _scheduled_source()
    run_id = new_run_id("-weekly")
    start_full_run.apply_async(args=[run_id, data_dir, {}, True], queue=RUN_QUEUE)
    return {"run_id": run_id, "engine": "celery", "modal_error": modal_error}


@app.task(name="claidex.refresh_changed", bind=True, **RELIABLE)
def refresh_changed(self: Any) -> dict[str, Any]:
    """Beat's daily refresh: rescore the NPIs whose source rows changed since the last full run."""
    cfg = Settings()
    url = database_url()
    reference = latest_full_run(cfg.run_root, published_only=url is not None)
    _, data = _scheduled_source()
    if data is None:  # Postgres: a consistent snapshot of the sources first
        data = source_dataset(run_paths(new_run_id("-refresh-source")))
        with connect(url or "") as conn:
            export_dataset(conn, data, with_graph=cfg.graph_mode == "embedded")
    try:
        changed = changed_npis(reference, data)
        if not changed:
            return {"changed": 0, "reference_run": reference.run_id}
        outcome = run_incremental(changed, str(data), publish_scores=True)
    finally:
        if cfg.scheduled_data is None:  # the day's snapshot is not kept: its whole run root
            _drop_snapshot(data)
    return {"changed": len(changed), "run_id": outcome["run_id"], "reference_run": reference.run_id}
