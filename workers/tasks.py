"""Celery tasks of a full run: where each step executes (what they compute lives in scoring).
The step table says what comes next; these tasks interpret it as chords."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from celery import chord
from celery.utils.log import get_task_logger

from scoring.config import Settings, load_settings
from scoring.db.connection import database_url
from scoring.errors import InputError, RunStateError
from scoring.inputs.dataset import data_source
from scoring.runs.ledger import RunLedger, utc_now
from scoring.runs.manifest import RunManifest
from scoring.runs.plan import has_plan
from scoring.runs.store import REQUEST, RunPaths, read_json_or, run_store, writable_run
from scoring.stages.finish import (
    merge_and_publish,
    merge_done,
    published_outcome,
)
from scoring.stages.fused import FUSED
from scoring.stages.pipeline import Kind, next_work, record_progress, run_single, run_task
from scoring.stages.prepare import begin_prepare, begin_prepare_from_postgres
from scoring.stages.score_batch import score_batch
from workers.app import BATCH_QUEUE, RUN_QUEUE, app
from workers.reliability import (
    RELIABLE,
    retries_pending,
    retry_later,
    run_paths,
    take_lease,
)

log = get_task_logger(__name__)


MERGE_WAIT_SECONDS = 5


MERGE_WAIT_RETRIES = 120  # ten minutes of waiting for late batches, then the watchdog's turn


def dispatch_batches(run_id: str, batches: Iterable[int]) -> str:
    """The chord: one score_batch per batch, merged by merge_and_calibrate; errors fail the run."""
    header = [score_batch_task.si(run_id, index).set(queue=BATCH_QUEUE) for index in batches]
    if not header:  # nothing missing: go straight to merge
        return dispatch_merge(run_id)
    body = merge_task.s(run_id=run_id).set(queue=RUN_QUEUE)
    body.link_error(run_failed.s(run_id=run_id).set(queue=RUN_QUEUE))
    result = chord(header)(body)
    chord_id = str(result.id)
    forget_locally(result)
    return chord_id


def dispatch_merge(run_id: str) -> str:
    result = merge_task.apply_async(args=[[]], kwargs={"run_id": run_id}, queue=RUN_QUEUE)
    merge_id = str(result.id)
    forget_locally(result)
    return merge_id


def forget_locally(result: Any) -> None:
    """Unregister a result handle (and its parents) from the backend now: left to the
    interpreter's shutdown, its __del__ fails importing backend modules ('Exception ignored
    in AsyncResult.__del__'); the CLI also collects cycles before exiting."""
    while result is not None:
        parent = getattr(result, "parent", None)
        with contextlib.suppress(Exception):
            result.backend.remove_pending_result(result)
        result = parent


def save_request(
    paths: RunPaths,
    data_dir: str | None,
    overrides: dict[str, Any],
    publish_scores: bool,
    *,
    exclusive: bool = False,
) -> None:
    """request.json, kept as first written. `exclusive` (the CLI claiming a run id) raises
    FileExistsError when it exists, so of two `full --run-id X` at once one gets X."""
    request = {
        "run_id": paths.run_id,
        "data_dir": data_dir,
        "overrides": overrides,
        "publish": publish_scores,
        "requested_at": utc_now(),
    }
    store = run_store(paths)
    if exclusive:  # a conditional create on S3, a hard link on a filesystem
        if not store.claim(REQUEST, request):
            msg = f"{paths.where(REQUEST)} exists"
            raise FileExistsError(msg)
    elif not store.exists(REQUEST):
        store.write_json(REQUEST, request)


@app.task(name="claidex.start_full_run", bind=True, **RELIABLE)
def start_full_run(
    self: Any, run_id: str, data_dir: str | None, overrides: dict[str, Any], publish_scores: bool
) -> dict[str, Any]:
    """Prepare a full run (from a dataset directory or Postgres) and fan out its batches.

    Under the run's start lease: a redelivered start waits for a live holder, takes over
    from a dead one, and does nothing once the chord was dispatched.
    """
    paths = run_paths(run_id)
    writable_run(paths)
    save_request(paths, data_dir, overrides, publish_scores)
    lease = take_lease(self, run_id, "start")
    if isinstance(lease, str):
        return {"run_id": run_id, "skipped": f"another start holds the lease: {lease}"}
    cfg = load_settings(**overrides)
    ledger = RunLedger(paths)
    with lease, retries_pending(self):
        state = ledger.read()
        if RunManifest.exists(paths) and state.get("status") not in (None, "preparing", "failed"):
            # Prepared already (a redelivery, or a kill during dispatch): never prepare
            # again under batches that may be running; send what is missing, once.
            if state.get("dispatched"):
                return {"run_id": run_id, "skipped": "already dispatched"}
            total = RunManifest.load(paths).batches_total
            chord_id = dispatch_batches(run_id, ledger.missing_batches(total))
            ledger.update(dispatched=chord_id)
            return {"run_id": run_id, "redispatched": chord_id}
        worker = self.request.hostname or "?"
        planned = has_plan(paths) and state.get("status") in ("preparing", "failed")
        if planned:  # a re-sent start (resume, watchdog): carry on with the shards done
            ledger.set_status("preparing", error=None, failed_step=None)
        else:
            with ledger.heartbeat("prepare", worker=worker, every=cfg.heartbeat_seconds):
                if data_dir:
                    begin_prepare(paths, data_source(data_dir), cfg)
                else:  # the export stage's tasks read their own NPI ranges
                    url = database_url()
                    window = cfg.db_outage_window
                    begin_prepare_from_postgres(paths, url, cfg, outage_window=window)
        ledger.update(engine="celery", publish=publish_scores)
        return {"run_id": run_id, **advance_stages(run_id, worker)}


def advance_stages(run_id: str, worker: str, after: str | None = None) -> dict[str, Any]:
    """Interpret the step table up to the batches: single steps run here, inline; a fan-out
    stage goes out as a chord whose callback comes back here; once prepared, the batches
    go out as the chord that merge gathers.

    Idempotent: the table reads only the run's files, so a re-sent start or a late callback
    sends what is missing and never counts a shard twice (combine reads one file per shard).
    """
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    every = Settings().heartbeat_seconds
    ran: set[str] = set()
    while (work := next_work(paths)) is not None and work.kind is Kind.SINGLE:
        if work.step.phase != "prepare":
            break
        if work.name in ran:  # a step that ran and is still missing would loop forever
            msg = f"run {run_id}: step {work.name} ran but is still not done"
            raise RunStateError(msg)
        ran.add(work.name)
        with ledger.step("prepare"), ledger.heartbeat(work.name, worker=worker, every=every):
            run_single(paths, work.name)
    record_progress(paths)
    if work is None or work.kind is not Kind.SHARDS:  # prepared: the batches, then merge
        total = RunManifest.load(paths).batches_total
        batches = work.indices if work is not None and work.kind is Kind.BATCHES else []
        chord_id = dispatch_batches(run_id, batches)
        ledger.update(dispatched=chord_id)
        return {"batches": total, "chord": chord_id}
    sent = ledger.read().get("stages_dispatched") or []
    if after is not None and work.name in sent and work.name != after:
        # a late or duplicate callback: this stage's chord is out already (a re-sent start,
        # which is how resume and the watchdog come in, sends it again)
        return {"stage": work.name, "skipped": "already dispatched"}
    header = [
        stage_shard_task.si(run_id, work.name, index).set(queue=BATCH_QUEUE)
        for index in work.indices
    ]
    body = advance_stages_task.s(run_id=run_id, stage=work.name).set(queue=RUN_QUEUE)
    body.link_error(run_failed.s(run_id=run_id).set(queue=RUN_QUEUE))
    result = chord(header)(body)
    chord_id = str(result.id)
    forget_locally(result)
    ledger.update(stages_dispatched=sorted({*sent, work.name}))
    return {"stage": work.name, "shards": len(work.indices), "chord": chord_id}


@app.task(name="claidex.stage_shard", bind=True, **RELIABLE)
def stage_shard_task(self: Any, run_id: str, stage: str, index: int) -> dict[str, Any]:
    """One shard of one prepare stage; idempotent (its files are rewritten with the same bytes)."""
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    worker = self.request.hostname or "?"
    every = Settings().heartbeat_seconds
    beat = ledger.heartbeat(f"{stage}-{index:05d}", worker=worker, every=every)
    with retries_pending(self), beat:
        try:
            summary = run_task(paths, stage, index)
        except Exception as exc:
            # with a retry coming, `retrying`, not failed: the retry's success must leave
            # the run preparing, so its callback goes on
            # a fused run's bad input reads as the unfused stage's would (reduce's own words)
            plain = stage == FUSED and isinstance(exc, InputError)
            ledger.fail("prepare", exc, where="" if plain else f"{stage} shard {index}: ")
            raise
    return {"stage": stage, "shard": index, "rows": summary.get("payment_rows", 0)}


@app.task(name="claidex.advance_stages", bind=True, **RELIABLE)
def advance_stages_task(
    self: Any, results: list[Any], run_id: str, stage: str | None = None
) -> dict[str, Any]:
    """Chord callback of a stage: under the start lease, so one orchestrator at a time."""
    lease = take_lease(self, run_id, "start")
    if isinstance(lease, str):
        return {"run_id": run_id, "skipped": f"another start holds the lease: {lease}"}
    with lease, retries_pending(self):
        state = RunLedger(run_paths(run_id)).read()
        if state.get("status") != "preparing":  # failed, or prepared by an earlier callback
            return {"run_id": run_id, "skipped": f"status {state.get('status')}"}
        worker = self.request.hostname or "?"
        return {"run_id": run_id, **advance_stages(run_id, worker, after=stage)}


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

    Under the run's merge lease, so concurrent merges (a resume during a live chord)
    cannot both publish, and a merge whose worker died is taken over by its redelivery.
    """
    lease = take_lease(self, run_id, "merge")
    if isinstance(lease, str):
        return {"run_id": run_id, "skipped": f"another merge holds the lease: {lease}"}
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    every = Settings().heartbeat_seconds
    worker = self.request.hostname or "?"
    with lease, retries_pending(self), ledger.heartbeat("merge", worker=worker, every=every):
        return _merge_locked(self, results, run_id)


def _merge_locked(task: Any, results: list[Any], run_id: str) -> dict[str, Any]:
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    state = ledger.read()
    if (skipped := published_outcome(paths)) is not None:  # even if a chunk went missing since
        return skipped
    missing = ledger.missing_batches(RunManifest.load(paths).batches_total)
    if missing:
        # A redelivered batch (worker killed after finishing, before its ack) can complete the
        # chord early; the missing batches are still on their way, so wait for them. After
        # that the watchdog re-dispatches what has no live worker and no message.
        if task.request.retries >= MERGE_WAIT_RETRIES:
            ledger.update(stalled=f"merge gave up waiting for batch(es) {missing[:20]}")
            return {"run_id": run_id, "waiting_for": missing}
        raise retry_later(task, MERGE_WAIT_SECONDS, MERGE_WAIT_RETRIES)
    url = database_url() if publish_wanted(paths, state) else None
    reference = None
    if state.get("kind") == "incremental":  # calibrated against its reference full run
        reference = run_paths(state["reference_run"])
    outcome = merge_and_publish(paths, url, reference=reference)  # publishes a run only once
    ledger.update(stalled=None)
    return {**outcome, "batches": len(results)}


def publish_wanted(paths: RunPaths, state: dict[str, Any]) -> bool:
    """The run's publish flag: the ledger's, else how the run was requested; a run prepared
    outside the fleet (no request.json) publishes, as `resume` always has."""
    if state.get("publish") is not None:
        return bool(state["publish"])
    request = read_json_or(paths, REQUEST, None)
    if request is not None:
        return bool(request.get("publish", False))
    return True


@app.task(name="claidex.run_failed")
def run_failed(request: Any, exc: BaseException, traceback: Any, run_id: str) -> None:
    """Chord errback (Celery calls it inline, in the worker whose part failed the chord).

    A failed batch fails the run visibly. A chord broken by the broker or backend (a Redis
    restart, a lost connection) with no failed batch is no failure of the run: it is marked
    stalled, and the watchdog (or `resume`) finishes it.
    """
    ledger = RunLedger(run_paths(run_id))
    if ledger.read().get("status") in ("failed", "published", "blocked"):  # the precise outcome
        return
    failed = ledger.summary().get("batches_failed", [])
    if failed:
        ledger.fail("score", f"batch(es) {failed} failed: {exc}")
        return
    log.error("run %s: chord broken without a failed batch: %r", run_id, exc)
    ledger.update(stalled=f"chord broken: {type(exc).__name__}: {exc}", stalled_at=utc_now())


class ResumeError(RunStateError):
    """A run that resume cannot bring back (it was never started by the fleet)."""


def resume_run(run_id: str) -> str | None:
    """Re-dispatch only what is missing (SPEC §7): the start when prepare never finished,
    else the batches without a chunk, then merge. A run already published: returns None."""
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    if not RunManifest.exists(paths):
        request = read_json_or(paths, REQUEST, None)
        if request is None:
            msg = f"run {run_id}: no run.json and no request.json: not a fleet run; start it again"
            raise ResumeError(msg)
        args = [run_id, request["data_dir"], request["overrides"], request["publish"]]
        result = start_full_run.apply_async(args=args, queue=RUN_QUEUE)
        start_id = str(result.id)
        forget_locally(result)
        return start_id
    manifest = RunManifest.load(paths)
    if merge_done(paths):  # published, or held by its checks: nothing to re-run
        return None
    missing = ledger.missing_batches(manifest.batches_total)
    ledger.set_status("scoring", error=None, failed_step=None, stalled=None, retrying=None)
    return dispatch_batches(run_id, missing)
