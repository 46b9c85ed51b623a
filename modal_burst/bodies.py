"""What each Modal function does: the run steps over the volume layout, nothing more.

Plain functions of a `VolumeLayout`, so they run unchanged in a container (volume at
/data) and in tests (a temporary directory laid out like the volume).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from modal_burst.layout import PRUNED, VolumeLayout
from scoring.config import load_settings
from scoring.db.connection import DatabaseError, connect, database_url
from scoring.db.publish import table_full_run
from scoring.errors import ClaidexError, InputError, RunFileError
from scoring.inputs import dataset
from scoring.location import is_url
from scoring.runs.attempts import MERGE, PREPARE, StepAttempts, attempt_key, step_attempt
from scoring.runs.ledger import RunLedger, read_record
from scoring.runs.manifest import RunManifest
from scoring.runs.plan import has_plan, plan_source, read_plan
from scoring.runs.retry_policy import exhausted
from scoring.runs.store import LEDGER, MANIFEST, RunPaths, read_json_or, run_store
from scoring.stages.finish import merge_and_publish, publish_checked
from scoring.stages.pipeline import (
    is_prepared,
    next_work,
    record_progress,
    run_single,
    run_task,
    stage_progress,
)
from scoring.stages.prepare import begin_prepare, begin_prepare_from_postgres
from scoring.stages.score_batch import score_batch

NO_DATABASE = (
    "asked to publish, but the merge function has no DATABASE_URL (nor PGHOST/PGDATABASE/"
    "PGSERVICE): add it to the run's Postgres secret, then `python -m modal_burst merge RUN`"
)


def capped(
    paths: RunPaths,
    key: str,
    limit: Callable[[], int],
    work: Callable[[], dict[str, Any]],
    *,
    worker: str,
    on_start: Callable[[], None] | None,
) -> dict[str, Any]:
    """`work` as one recorded attempt of step `key` (scoring.runs.attempts). Modal retries
    whatever a function raises, and its server reschedules a crashed container's input (in
    a deployed app without end): past step_max_attempts the step returns `gave_up` instead
    of raising it, and the driver fails the run."""
    try:
        with step_attempt(paths, key, limit=limit, worker=worker, on_start=on_start):
            return work()
    except Exception as exc:
        if not exhausted(exc):
            raise
        return {"step": key, "gave_up": str(exc)}


def plan_limit(paths: RunPaths) -> Callable[[], int]:
    """The run's step_max_attempts, as its plan froze it (read after the start is recorded)."""
    return lambda: read_plan(paths)[1].step_max_attempts


def prepare_run(
    layout: VolumeLayout,
    run_id: str,
    *,
    source: str,
    data_name: str,
    overrides: dict[str, Any],
    publish: bool,
    worker: str = "",
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Start step 1 for a dataset on the volume, or for a fresh Postgres snapshot: the plan
    the stage functions read. The run's publish choice is kept in the ledger so a resume
    honours it.

    The plan is written before the ledger records the choice, and a background commit can
    make it visible on its own when the container dies in between: a driver refuses a run
    whose ledger lacks the choice (`RunNeeds.of_run`) rather than guess."""
    paths = layout.run(run_id)
    cfg = load_settings(**overrides)

    def work() -> dict[str, Any]:
        if source == "postgres":  # the graph here; the export stage's shards COPY NPI ranges
            begin_prepare_from_postgres(paths, database_url(), cfg)
        else:
            data = layout.dataset(data_name)
            if not dataset.is_dir(data):
                msg = (
                    f"dataset {data_name!r} is not on the volume (no {data}); upload it with "
                    f"`python -m modal_burst upload DIR --data-name {data_name}` (a deployed "
                    "app keeps the volume it was deployed with: after a volume migration, "
                    "redeploy)"
                )
                raise InputError(msg)
            begin_prepare(paths, data, cfg)
            as_of = None if is_url(data_name) else layout.upload_record(data_name)
            uploaded = read_record(as_of).get("uploaded_at") if as_of and as_of.exists() else None
            RunLedger(paths).update(source_dataset=data_name, source_uploaded_at=uploaded)
        RunLedger(paths).update(engine="modal", publish=publish)
        return {"run_id": run_id, "shards": read_plan(paths)[2]}

    limit = cfg.step_max_attempts
    return capped(paths, PREPARE, lambda: limit, work, worker=worker, on_start=on_start)


def stage_shard(
    layout: VolumeLayout,
    run_id: str,
    stage: str,
    index: int,
    *,
    worker: str = "",
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One shard of one prepare stage; idempotent, so Modal's retries rewrite the same files.
    It writes only its own shard's files (its attempt record too), never the ledger (many
    run at once)."""
    paths = layout.run(run_id)

    def work() -> dict[str, Any]:
        started = time.perf_counter()
        run_task(paths, stage, index)
        seconds = round(time.perf_counter() - started, 3)
        return {"stage": stage, "shard": index, "seconds": seconds}

    key = attempt_key(stage, index)
    return capped(paths, key, plan_limit(paths), work, worker=worker, on_start=on_start)


def single_step(
    layout: VolumeLayout,
    run_id: str,
    step: str,
    *,
    worker: str = "",
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """A single step of prepare (the step table's), once, in one container."""
    paths = layout.run(run_id)

    def work() -> dict[str, Any]:
        with RunLedger(paths).step("prepare"):
            run_single(paths, step)
        record_progress(paths)
        return {"run_id": run_id, "step": step}

    key = attempt_key(step)
    return capped(paths, key, plan_limit(paths), work, worker=worker, on_start=on_start)


def score_one_batch(
    layout: VolumeLayout,
    run_id: str,
    batch_index: int,
    worker: str,
    *,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Step 2 for one batch; idempotent, so Modal's retries rewrite the same chunk.

    Modal retries whatever a function raises; a failure whose retry budget ran out (a batch
    whose containers died batch_max_attempts times) returns `gave_up` instead: raised, it
    would be retried and start the crash loop over."""
    try:
        result = score_batch(layout.run(run_id), batch_index, worker=worker, on_start=on_start)
    except Exception as exc:
        if not exhausted(exc):
            raise
        return {"batch": batch_index, "gave_up": str(exc)}
    return {"batch": result.batch_index, "rows": result.rows, "seconds": round(result.seconds, 3)}


def merge_run(
    layout: VolumeLayout,
    run_id: str,
    *,
    publish: bool,
    accept: str | None = None,
    worker: str = "",
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Step 3 (refuses missing batches), then publish once when asked. Asked to publish with
    no database in reach is an error before any work, never a merged run nobody published
    (beat's spawned run_full has no one to read a note). `accept`: a run its checks blocked,
    published anyway (`merge RUN --accept REASON`)."""
    url = database_url() if publish else None
    if publish and url is None:
        raise DatabaseError(f"run {run_id}: {NO_DATABASE}")
    paths = layout.run(run_id)

    def work() -> dict[str, Any]:
        if accept is not None and url is not None:
            return publish_checked(paths, url, accept=accept)
        if url is not None:
            note_stale_source(paths, url)
        return merge_and_publish(paths, url)

    def limit() -> int:
        return RunManifest.load(paths).cfg.step_max_attempts

    return capped(paths, MERGE, limit, work, worker=worker, on_start=on_start)


def note_stale_source(paths: RunPaths, url: str) -> None:
    """A volume dataset uploaded before the full run on the table read its input replaces
    newer scores with older data: said in the ledger (`status`) and the report's header,
    before merge draws it. Not refused: the run was asked for with that dataset."""
    ledger = RunLedger(paths)
    state = ledger.read()
    dataset = state.get("source_dataset")
    if dataset is None:  # read Postgres: as fresh as the database
        return
    try:
        with connect(url) as conn:
            on_table = table_full_run(conn, paths.run_id)
    except (ClaidexError, psycopg.Error) as exc:  # publish waits out an outage; this must not
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warning = f"volume dataset {dataset!r}: not compared with the table ({why})"
    else:
        warning = stale_source(dataset, state.get("source_uploaded_at"), on_table)
    ledger.update(source_warning=warning)


def stale_source(
    dataset: str, uploaded: str | None, on_table: tuple[str, Any] | None
) -> str | None:
    """The warning for a dataset uploaded at `uploaded` over the table's full run (id, time it
    read its input); None when the dataset is the newer one or the table holds no full run."""
    if on_table is None or on_table[1] is None:
        return None
    run_id, read_at = on_table
    read_at = read_at if isinstance(read_at, datetime) else datetime.fromisoformat(str(read_at))
    if uploaded is None:
        return (
            f"volume dataset {dataset!r} has no upload time (uploaded before it was recorded): "
            f"it may be older than run {run_id} on the table (input read {read_at.isoformat()})"
        )
    if datetime.fromisoformat(uploaded) >= read_at:
        return None
    return (
        f"volume dataset {dataset!r} (uploaded {uploaded}) is older than the scores it "
        f"replaces: run {run_id} read its input {read_at.isoformat()}; upload fresh data or "
        "score Postgres (CLAIDEX_MODAL_SOURCE=postgres)"
    )


def run_state(layout: VolumeLayout, run_id: str) -> dict[str, Any]:
    """The ledger summary plus what a driver needs: prepared or not, missing batches, errors,
    and the run's own graph mode and secret names (run.json), which decide its secrets.

    A torn or foreign ledger.json / run.json is one RunFileError naming the run and file."""
    try:
        return _run_state(layout, run_id)
    except RunFileError as exc:
        on_volume = str(exc).replace(f"{layout.root}/", "", 1)  # runs/RUN/FILE, as Modal names it
        msg = f"run {run_id}: {on_volume}"
        raise RunFileError(msg) from None


def _run_state(layout: VolumeLayout, run_id: str) -> dict[str, Any]:
    paths = layout.run(run_id)
    # steps whose last start has not ended well: a crash loop shows here while it runs
    attempts = {k: r for k, r in StepAttempts(paths).states().items() if r["status"] != "done"}
    store = run_store(paths)
    if not store.exists(LEDGER):
        return {
            "run_id": run_id,
            "exists": False,
            "prepared": False,
            "missing": [],
            "attempts": attempts,
        }
    ledger = RunLedger(paths)
    summary = ledger.summary()
    manifest = read_json_or(paths, MANIFEST, None)
    pruned = read_json_or(paths, PRUNED, None)
    states = ledger.batch_states()
    planned = has_plan(paths)
    settings: dict[str, Any] = manifest.get("settings", {}) if manifest else {}
    work = None
    prepared = manifest is not None and is_prepared(paths)
    if planned and not prepared:  # part-way through the stages: what a resume runs
        settings = read_plan(paths)[1].model_dump(mode="json")
        work = next_work(paths)
    state = {
        **summary,
        "exists": True,
        "prepared": prepared,
        "planned": planned,
        # the next prepare step and its missing shards (None once prepared)
        "next": {
            "step": work.name,
            "kind": str(work.kind),
            "phase": work.step.phase,
            "indices": work.indices,
        }
        if work is not None
        else None,
        "plan_source": plan_source(paths) if planned else None,
        **({"stages": stage_progress(paths)} if planned else {}),  # the shards' own markers
        "graph_mode": settings.get("graph_mode"),
        "postgres_secret": settings.get("modal_postgres_secret"),
        "neo4j_secret": settings.get("modal_neo4j_secret"),
        "postgres_keys": settings.get("modal_postgres_keys"),
        "s3_secret": settings.get("modal_s3_secret"),
        "missing": [],
        "batch_errors": {i: states[i].get("error", "") for i in summary["batches_failed"]},
        "attempts": attempts,
        "pruned": pruned,
    }
    if manifest is not None:  # run.json decides the batches (the ledger may lag behind it)
        total = int(manifest["batches_total"])
        missing = [] if pruned else ledger.missing_batches(total)
        state.update(batches_total=total, batches_done=total - len(missing), missing=missing)
    return state


def record_status(
    layout: VolumeLayout,
    run_id: str,
    status: str,
    *,
    step: str | None,
    error: str | None,
    batch_errors: dict[int, str] | None = None,
) -> None:
    """The driver's view of the run in the ledger; the driver calls it only while none of
    the run's steps or batches runs.

    'scoring' (a dispatch starts): a batch record still 'running' without a chunk is from
    a start nobody is waiting for any more (the driver was interrupted, or Modal gave up on
    it): it becomes 'interrupted', so only deaths seen by this dispatch count as attempts.
    'failed': the run failed at `step`; each batch of `batch_errors` (what the driver got back
    from Modal: an exception, a timeout, a lost input) is recorded failed, so a resume scores
    it afresh instead of counting a stale 'running' record as one more container death.
    Any status: a step's attempt record still 'running' ends the same way (failed with the
    run's error, else interrupted), so a resume starts each step with a fresh budget."""
    paths = layout.run(run_id)
    ledger = RunLedger(paths)
    if not run_store(paths).exists(LEDGER) and status != "failed":  # a prepare died before it
        StepAttempts(paths).end_running("interrupted", "an earlier dispatch never saw it end")
        return
    if status == "failed":
        StepAttempts(paths).end_running("failed", error or "failed")
        chunks = ledger.chunks_done()
        for index, why in (batch_errors or {}).items():
            if index not in chunks:
                ledger.batch_failed(index, why)
        ledger.fail(step or "score", error or "failed")
        return
    StepAttempts(paths).end_running("interrupted", "an earlier dispatch never saw it end")
    if ledger.read().get("status") in ("blocked", "published"):  # an outcome, never undone
        return
    if status == "scoring":
        chunks = ledger.chunks_done()
        for index, record in ledger.batch_states().items():
            if record.get("status") == "running" and index not in chunks:
                ledger.batch_interrupted(index, "an earlier dispatch never saw it end")
    ledger.set_status(status, error=None, failed_step=None)
