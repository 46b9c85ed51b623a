"""Celery tasks: where each run step executes. What they compute lives in scoring.steps."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from celery import chord
from celery.utils.log import get_task_logger

from scoring.config import Settings, load_settings
from scoring.db.connection import connect, database_url
from scoring.db.export import export_dataset
from scoring.errors import RETRYABLE_EXCEPTIONS
from scoring.ledger import RunLedger
from scoring.manifest import RunManifest
from scoring.rundir import RunPaths, checked_run_id, new_run_id
from scoring.steps import merge_and_calibrate, prepare, score_batch
from scoring.steps.finish import (
    already_published,
    export_source,
    merge_and_publish,
    published_outcome,
)
from scoring.steps.incremental import (
    changed_npis,
    checked_npis,
    latest_full_run,
    prepare_incremental,
)
from scoring.steps.publish import publish
from workers.app import BATCH_QUEUE, RUN_QUEUE, app, backend_url

log = get_task_logger(__name__)
_CFG = Settings()
RELIABLE: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": RETRYABLE_EXCEPTIONS,
    "retry_backoff": True,
    "retry_backoff_max": _CFG.retry_backoff_max,
    "retry_jitter": True,
    "max_retries": _CFG.task_max_retries,
}


MERGE_WAIT_SECONDS = 5
MERGE_WAIT_RETRIES = 120  # ten minutes of waiting for late batches, then the run fails


def run_lock(run_id: str, purpose: str) -> Any:
    """A Redis lock per run and purpose: one start and one merge/publish at a time."""
    client = redis.Redis.from_url(backend_url())
    return client.lock(f"claidex:{purpose}:{run_id}", timeout=Settings().task_time_limit)


def run_paths(run_id: str) -> RunPaths:
    """Every worker resolves a run id under the shared run root (CLAIDEX_RUN_ROOT); a run id
    from a message is checked first, so no message can point a task outside it."""
    return RunPaths(Settings().run_root / checked_run_id(run_id))


def dispatch_batches(run_id: str, batches: Iterable[int]) -> str:
    """The chord: one score_batch per batch, merged by merge_and_calibrate; errors fail the run."""
    header = [score_batch_task.si(run_id, index).set(queue=BATCH_QUEUE) for index in batches]
    body = merge_task.s(run_id=run_id).set(queue=RUN_QUEUE)
    body.link_error(run_failed.s(run_id=run_id).set(queue=RUN_QUEUE))
    if not header:  # nothing missing: go straight to merge
        return merge_task.apply_async(args=[[]], kwargs={"run_id": run_id}, queue=RUN_QUEUE).id
    return chord(header)(body).id


@app.task(name="claidex.start_full_run", bind=True, **RELIABLE)
def start_full_run(
    self: Any, run_id: str, data_dir: str | None, overrides: dict[str, Any], publish_scores: bool
) -> dict[str, Any]:
    """Prepare a full run (from a dataset directory or Postgres) and fan out its batches.

    Held under the run's start lock; a start whose chord was already dispatched (a
    redelivered message) does nothing, so a run is never prepared under a running chord.
    """
    lock = run_lock(run_id, "start")
    if not lock.acquire(blocking=False):
        return {"run_id": run_id, "skipped": "another start of this run is in progress"}
    try:
        paths = run_paths(run_id)
        ledger = RunLedger(paths)
        if paths.manifest.exists() and ledger.read().get("dispatched"):
            return {"run_id": run_id, "skipped": "already dispatched"}
        cfg = load_settings(**overrides)
        embedded = cfg.graph_mode == "embedded"
        data = (
            Path(data_dir)
            if data_dir
            else export_source(paths, database_url(), with_graph=embedded)
        )
        manifest = prepare(paths, data, cfg)
        ledger.update(engine="celery", publish=publish_scores)
        chord_id = dispatch_batches(run_id, range(manifest.batches_total))
        ledger.update(dispatched=chord_id)
        return {"run_id": run_id, "batches": manifest.batches_total, "chord": chord_id}
    finally:
        lock.release()


@app.task(name="claidex.score_batch", bind=True, **RELIABLE)
def score_batch_task(self: Any, run_id: str, batch_index: int) -> dict[str, Any]:
    """One batch; idempotent, so a redelivered message rewrites the same chunk."""
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    result = score_batch(
        run_paths(run_id), batch_index, worker=self.request.hostname, redelivered=redelivered
    )
    return {"batch": result.batch_index, "rows": result.rows, "seconds": round(result.seconds, 3)}


@app.task(name="claidex.merge_and_calibrate", bind=True, **RELIABLE)
def merge_task(self: Any, results: list[Any], run_id: str) -> dict[str, Any]:
    """Chord callback (a list, even of one): merge, calibrate, then publish once.

    Under the run's merge lock, so concurrent merges (a resume during a live chord)
    cannot both publish.
    """
    lock = run_lock(run_id, "merge")
    if not lock.acquire(blocking=False):
        raise self.retry(countdown=MERGE_WAIT_SECONDS, max_retries=MERGE_WAIT_RETRIES)
    try:
        return _merge_locked(self, results, run_id)
    finally:
        lock.release()


def _merge_locked(task: Any, results: list[Any], run_id: str) -> dict[str, Any]:
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    state = ledger.read()
    if (skipped := published_outcome(paths)) is not None:  # even if a chunk went missing since
        return skipped
    missing = ledger.missing_batches(RunManifest.load(paths).batches_total)
    if missing:
        # A redelivered batch (worker killed after finishing, before its ack) can complete the
        # chord early; the missing batches are still on their way, so wait for them.
        raise task.retry(countdown=MERGE_WAIT_SECONDS, max_retries=MERGE_WAIT_RETRIES)
    url = database_url() if state.get("publish", True) else None
    reference = None
    if state.get("kind") == "incremental":  # calibrated against its reference full run
        reference = run_paths(state["reference_run"])
    outcome = merge_and_publish(paths, url, reference=reference)  # publishes a run only once
    return {**outcome, "batches": len(results)}


@app.task(name="claidex.run_failed")
def run_failed(request: Any, exc: BaseException, traceback: Any, run_id: str) -> None:
    """Chord errback: the run fails visibly; nothing is merged or published."""
    ledger = RunLedger(run_paths(run_id))
    if ledger.read().get("status") == "failed":  # keep the more precise failure already recorded
        return
    failed = ledger.summary().get("batches_failed", [])
    detail = f"batch(es) {failed} failed: {exc}" if failed else str(exc)
    ledger.fail("score", detail)


def resume_run(run_id: str) -> str | None:
    """Re-dispatch only the batches without a chunk, then merge (SPEC §7).

    A run already published needs nothing: returns None.
    """
    paths = run_paths(run_id)
    manifest = RunManifest.load(paths)
    ledger = RunLedger(paths)
    if already_published(paths):
        return None
    missing = ledger.missing_batches(manifest.batches_total)
    ledger.set_status("scoring", error=None, failed_step=None)
    return dispatch_batches(run_id, missing)


def _incremental_source(
    paths: RunPaths, reference: RunPaths, npis: list[str], data_dir: str | None
) -> Path:
    """The NPIs' current rows: a dataset directory, or Postgres when one is configured."""
    if data_dir:
        return Path(data_dir)
    url = database_url()
    if url is None:
        return Path(RunManifest.load(reference).source)
    source = paths.root / "source"
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
    scores = merge_and_calibrate(paths, reference)
    if publish_scores and url is not None:
        publish(paths, url)
    columns = ["npi", "risk_score", "risk_label", "r_raw", "flags"]
    return {
        "run_id": paths.run_id,
        "reference_run": reference.run_id,
        "status": RunLedger(paths).read()["status"],
        "unknown_npis": RunLedger(paths).read().get("unknown_npis", []),
        "scores": scores.select(columns).to_dicts(),
    }


@app.task(name="claidex.score_incremental", bind=True, **RELIABLE)
def score_incremental(
    self: Any, npis: list[str], data_dir: str | None, publish_scores: bool
) -> dict[str, Any]:
    """Ad-hoc NPIs on their own queue, so they never wait behind a full recompute."""
    return run_incremental(npis, data_dir, publish_scores)


def _scheduled_source() -> tuple[str | None, Path | None]:
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
        from modal_burst.credentials import ModalNotConfiguredError
        from modal_burst.handoff import spawn_full_run

        run_id = new_run_id("-weekly-burst")
        try:
            return {"run_id": run_id, "engine": "modal", "call": spawn_full_run(run_id, cfg)}
        except ModalNotConfiguredError as exc:
            modal_error = f"Modal not usable, running on the Celery fleet instead: {exc}"
            log.error(modal_error)
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
        data = run_paths(new_run_id("-refresh-source")).root
        with connect(url or "") as conn:
            export_dataset(conn, data, with_graph=cfg.graph_mode == "embedded")
    try:
        changed = changed_npis(reference, data)
        if not changed:
            return {"changed": 0, "reference_run": reference.run_id}
        outcome = run_incremental(changed, str(data), publish_scores=True)
    finally:
        if cfg.scheduled_data is None:  # the day's snapshot is not kept
            shutil.rmtree(data, ignore_errors=True)
    return {"changed": len(changed), "run_id": outcome["run_id"], "reference_run": reference.run_id}
