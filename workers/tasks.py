"""Celery tasks: where each run step executes. What they compute lives in scoring.steps."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu.exceptions
import redis
from celery import chord
from celery.utils.log import get_task_logger

from scoring.config import Settings, load_settings
from scoring.db.connection import connect, database_url
from scoring.db.export import export_dataset
from scoring.errors import RETRYABLE_EXCEPTIONS, RunStateError
from scoring.ledger import RETRY_PENDING, RunLedger, read_record, utc_now
from scoring.manifest import RunManifest
from scoring.rundir import (
    RunPaths,
    checked_run_id,
    new_run_id,
    writable_run_dir,
    write_json_atomic,
)
from scoring.steps import merge_and_calibrate, score_batch
from scoring.steps.finish import (
    already_published,
    merge_and_publish,
    published_outcome,
)
from scoring.steps.incremental import (
    changed_npis,
    checked_npis,
    latest_full_run,
    prepare_incremental,
)
from scoring.steps.prepare import begin_prepare, begin_prepare_from_postgres, combine_and_finish
from scoring.steps.publish import publish
from scoring.steps.stages import (
    has_plan,
    has_window,
    missing_shards,
    plan_stages,
    read_plan,
    reduce,
    run_stage_task,
    stage_progress,
)
from workers.app import BATCH_QUEUE, RUN_QUEUE, app, backend_url, broker_url
from workers.broker import pending_messages, run_messages
from workers.lease import Lease, lease_key
from workers.watchdog import Verdict, check_run, unfinished_runs

log = get_task_logger(__name__)
_CFG = Settings()
# Redis and kombu connection errors are not the builtin ConnectionError: a blip is transient.
FLEET_RETRYABLE = (
    *RETRYABLE_EXCEPTIONS,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
RELIABLE: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": FLEET_RETRYABLE,
    "retry_backoff": True,
    "retry_backoff_max": _CFG.retry_backoff_max,
    "retry_jitter": True,
    "max_retries": _CFG.task_max_retries,
}


MERGE_WAIT_SECONDS = 5
MERGE_WAIT_RETRIES = 120  # ten minutes of waiting for late batches, then the watchdog's turn
LEASE_WAITS = 120  # retries of a start/merge whose lease a live holder keeps renewing


def redis_client() -> redis.Redis:
    """Where leases live (the result backend's Redis)."""
    return redis.Redis.from_url(backend_url(), socket_timeout=10)


def broker_client() -> redis.Redis:
    """Where the task messages are (the broker's Redis, which may be another server)."""
    return redis.Redis.from_url(broker_url(), socket_timeout=10)


def retry_later(task: Any, countdown: float, limit: int) -> Exception:
    """task.retry with its own limit, without leaking it: Celery 5.7 stores max_retries on
    the task object (Task.retry sets override_max_retries) and autoretry removes it only
    after an autoretry, so the next task in this process would inherit the limit."""
    try:
        return task.retry(countdown=countdown, max_retries=limit)
    finally:
        if hasattr(task, "override_max_retries"):
            delattr(task, "override_max_retries")


def run_lease(run_id: str, purpose: str) -> Lease:
    """The run's lease for `purpose`: one start and one merge/publish at a time, and a
    holder that dies gives it up within `lease_seconds` (workers.lease)."""
    return Lease(redis_client(), run_id, purpose, Settings().lease_seconds)


def take_lease(task: Any, run_id: str, purpose: str) -> Lease | str:
    """The run's lease for `purpose`, or a retry of `task` while a holder renews it (a dead
    holder's lease lapses meanwhile); after LEASE_WAITS, the live holder's name."""
    lease = run_lease(run_id, purpose)
    if lease.acquire():
        return lease
    if task.request.retries < LEASE_WAITS:
        raise retry_later(task, lease.seconds / 2, LEASE_WAITS)
    return Lease.holder(lease.client, lease.key) or "?"


def lease_holders(client: redis.Redis, run_id: str) -> dict[str, str | None]:
    """Who holds the run's start and merge leases (None: nobody)."""
    return {p: Lease.holder(client, lease_key(run_id, p)) for p in ("start", "merge")}


@contextmanager
def retries_pending(task: Any) -> Iterator[None]:
    """While this task will be retried, a retryable failure is not yet the run's failure."""
    token = RETRY_PENDING.set(task.request.retries < (task.max_retries or 0))
    try:
        yield
    finally:
        RETRY_PENDING.reset(token)


def run_paths(run_id: str) -> RunPaths:
    """Every worker resolves a run id under the shared run root (CLAIDEX_RUN_ROOT); a run id
    from a message is checked first, so no message can point a task outside it."""
    return RunPaths(Settings().run_root / checked_run_id(run_id))


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
    if exclusive:
        paths.root.mkdir(parents=True, exist_ok=True)
        with open(paths.request, "x") as handle:
            json.dump(request, handle)
    elif not paths.request.exists():
        write_json_atomic(request, paths.request)


@app.task(name="claidex.start_full_run", bind=True, **RELIABLE)
def start_full_run(
    self: Any, run_id: str, data_dir: str | None, overrides: dict[str, Any], publish_scores: bool
) -> dict[str, Any]:
    """Prepare a full run (from a dataset directory or Postgres) and fan out its batches.

    Under the run's start lease: a redelivered start waits for a live holder, takes over
    from a dead one, and does nothing once the chord was dispatched.
    """
    paths = run_paths(run_id)
    writable_run_dir(paths.root)
    save_request(paths, data_dir, overrides, publish_scores)
    lease = take_lease(self, run_id, "start")
    if isinstance(lease, str):
        return {"run_id": run_id, "skipped": f"another start holds the lease: {lease}"}
    cfg = load_settings(**overrides)
    ledger = RunLedger(paths)
    with lease, retries_pending(self):
        state = ledger.read()
        if paths.manifest.exists() and state.get("status") not in (None, "preparing", "failed"):
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
                    begin_prepare(paths, Path(data_dir), cfg)
                else:  # the export stage's tasks read their own NPI ranges
                    url = database_url()
                    window = cfg.db_outage_window
                    begin_prepare_from_postgres(paths, url, cfg, outage_window=window)
        ledger.update(engine="celery", publish=publish_scores)
        return {"run_id": run_id, **advance_stages(run_id, worker)}


def advance_stages(run_id: str, worker: str, after: str | None = None) -> dict[str, Any]:
    """Dispatch the earliest unfinished stage's missing shards as a chord whose callback
    comes back here; reduce and combine run inline; after the last stage, the batches.

    Idempotent: it reads only the done markers, so a re-sent start or a late callback
    sends what is missing and never counts a shard twice (combine reads one file per shard).
    """
    paths = run_paths(run_id)
    ledger = RunLedger(paths)
    shards = read_plan(paths)[2]
    every = Settings().heartbeat_seconds
    for stage in plan_stages(paths):
        if stage == "aggregate" and not has_window(paths):
            with ledger.step("prepare"), ledger.heartbeat("reduce", worker=worker, every=every):
                reduce(paths, ledger)
        missing = missing_shards(paths, stage, shards)
        ledger.update(stages=stage_progress(paths))
        if missing:
            sent = ledger.read().get("stages_dispatched") or []
            if after is not None and stage in sent and stage != after:
                # a late or duplicate callback: this stage's chord is out already (a re-sent
                # start, which is how resume and the watchdog come in, sends it again)
                return {"stage": stage, "skipped": "already dispatched"}
            header = [
                stage_shard_task.si(run_id, stage, index).set(queue=BATCH_QUEUE)
                for index in missing
            ]
            body = advance_stages_task.s(run_id=run_id, stage=stage).set(queue=RUN_QUEUE)
            body.link_error(run_failed.s(run_id=run_id).set(queue=RUN_QUEUE))
            result = chord(header)(body)
            chord_id = str(result.id)
            forget_locally(result)
            ledger.update(stages_dispatched=sorted({*sent, stage}))
            return {"stage": stage, "shards": len(missing), "chord": chord_id}
    with ledger.step("prepare"), ledger.heartbeat("combine", worker=worker, every=every):
        manifest = combine_and_finish(paths)
    chord_id = dispatch_batches(run_id, range(manifest.batches_total))
    ledger.update(dispatched=chord_id)
    return {"batches": manifest.batches_total, "chord": chord_id}


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
            summary = run_stage_task(paths, stage, index)
        except Exception as exc:
            # with a retry coming, `retrying`, not failed: the retry's success must leave
            # the run preparing, so its callback goes on
            ledger.fail("prepare", exc, where=f"{stage} shard {index}: ")
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
    if paths.request.exists():
        return bool(read_record(paths.request).get("publish", False))
    return True


@app.task(name="claidex.run_failed")
def run_failed(request: Any, exc: BaseException, traceback: Any, run_id: str) -> None:
    """Chord errback (Celery calls it inline, in the worker whose part failed the chord).

    A failed batch fails the run visibly. A chord broken by the broker or backend (a Redis
    restart, a lost connection) with no failed batch is no failure of the run: it is marked
    stalled, and the watchdog (or `resume`) finishes it.
    """
    ledger = RunLedger(run_paths(run_id))
    if ledger.read().get("status") in ("failed", "published"):  # keep the precise outcome
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
    if not paths.manifest.exists():
        if not paths.request.exists():
            msg = f"run {run_id}: no run.json and no request.json: not a fleet run; start it again"
            raise ResumeError(msg)
        request = read_record(paths.request)
        args = [run_id, request["data_dir"], request["overrides"], request["publish"]]
        result = start_full_run.apply_async(args=args, queue=RUN_QUEUE)
        start_id = str(result.id)
        forget_locally(result)
        return start_id
    manifest = RunManifest.load(paths)
    if already_published(paths):
        return None
    missing = ledger.missing_batches(manifest.batches_total)
    ledger.set_status("scoring", error=None, failed_step=None, stalled=None, retrying=None)
    return dispatch_batches(run_id, missing)


def act_on(verdict: Verdict, cfg: Settings) -> str | None:
    """Bring a stuck run back (bounded by watchdog_max_resumes); returns what was done."""
    paths = run_paths(verdict.run_id)
    ledger = RunLedger(paths)
    state = ledger.read()
    # Kept beside the ledger, which a re-prepare clears: the count of resumes must survive it.
    record = read_record(paths.watchdog) if paths.watchdog.exists() else {}
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
    write_json_atomic(record, paths.watchdog)
    ledger.update(watchdog=record)
    log.warning("watchdog: run %s: %s: %s", verdict.run_id, verdict.action, verdict.reason)
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
        from modal_burst.handoff import ModalNotConfiguredError, spawn_full_run

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
