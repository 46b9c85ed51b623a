"""The local engine: the three run steps on one machine, batches on a process pool.

Needs no server. Batches run in spawned worker processes (polars must not be
forked), each given an equal share of the cores for its polars thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import psutil

from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.inputs.dataset import DataSource
from scoring.reports.progress import progress_bar
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.object_store import is_url
from scoring.runs.plan import has_plan, planned_payment_rows, read_plan
from scoring.runs.roots import run_at
from scoring.runs.store import LEDGER, MANIFEST, REQUEST, SCORES, RunPaths, new_run_id, run_store
from scoring.stages.drive import drive, prepare, resume_prepare
from scoring.stages.pipeline import Finish, Kind, Work, is_prepared, next_work, run_task

ProgressHook = Callable[[int, int], None]


def resolve_run(run: str, cfg: Settings) -> RunPaths:
    """A run given as a directory path, an s3:// URL, or a run id under the run root."""
    if is_url(run):
        paths = RunPaths(run)
        if not run_store(paths).exists(LEDGER):
            msg = f"no run at {run} (no ledger.json there)"
            raise RunStateError(msg)
        return paths
    candidate = Path(run)
    if candidate.is_dir():
        return _a_run(RunPaths(candidate), run)
    try:
        paths = run_at(cfg.run_root, run)
    except RunStateError:
        msg = f"no run directory {run!r} (looked in {cfg.run_root})"
        raise RunStateError(msg) from None
    found = run_store(paths).exists(LEDGER) if paths.url else paths.root.is_dir()
    if not found:
        msg = f"no run directory {run!r} (looked in {cfg.run_root})"
        raise RunStateError(msg)
    return _a_run(paths, run)


def _a_run(paths: RunPaths, given: str) -> RunPaths:
    """A directory is a run only when it holds a run's ledger (or its run.json, a fleet
    run's request, or scores: a copied run)."""
    store = run_store(paths)
    if not any(store.exists(key) for key in (LEDGER, MANIFEST, REQUEST, SCORES)):
        msg = f"{given!r} is not a run directory: {paths.where()} holds no ledger.json"
        raise RunStateError(msg)
    return paths


def latest_run(cfg: Settings) -> RunPaths:
    """The most recently created merged or published run under the run root."""
    from scoring.stages.incremental import latest_full_run

    return latest_full_run(cfg.run_root, published_only=False)


def _task_in_worker(location: str, step: str, index: int) -> None:
    run_task(RunPaths(location), step, index)


TASK_MEMORY = 1.5e9  # bytes: a seed shard's ingest task peaks at ~1.0 GB, aggregate ~0.7 GB


class LocalPool:
    """One spawned process pool for a whole run: every stage's shards, then the batches.

    A pool per stage re-spawned its workers (interpreter, polars, imports: ~1 s each) five
    times a run. Each stage's results are all on disk before the next stage is submitted.
    Workers > 1 only; with one, everything runs in this process.
    """

    def __init__(self, workers: int) -> None:
        self.requested = workers  # 0: decided by the plan, at the first fan-out
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._threads_before: str | None = None

    def _decide(self, paths: RunPaths) -> None:
        """Auto (0): for a run of at least two `shard_rows` of payment rows (seconds of work
        a task; a plan without the count: two or more shards), a process per core this
        process may use (affinity, not the machine's count), no more than the shards, nor
        than the memory available holds at TASK_MEMORY each; a smaller run stays in this
        process, where a spawned worker's start (~1 s) would cost more than it saves."""
        if self.requested != 0 or self.workers != 0:
            return
        self.workers = 1
        if not has_plan(paths):
            return
        _, cfg, shards = read_plan(paths)
        rows = planned_payment_rows(paths)
        heavy = shards >= 2 if not rows else rows >= 2 * cfg.shard_rows
        if heavy:
            cores = len(os.sched_getaffinity(0))
            fits = int(psutil.virtual_memory().available // TASK_MEMORY)
            self.workers = max(1, min(cores, shards, fits))

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (their heaps stay at their peak until then): before merge, which
        runs in this process."""
        if self._pool is None:
            return
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._pool = None
            if self._threads_before is None:
                os.environ.pop("POLARS_MAX_THREADS", None)
            else:
                os.environ["POLARS_MAX_THREADS"] = self._threads_before

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # read by each worker's polars at its start; workers spawn on demand, so the
            # setting stays in place for the pool's life
            before = os.environ.get("POLARS_MAX_THREADS")
            os.environ["POLARS_MAX_THREADS"] = _threads_per_worker(self.workers)
            try:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=get_context("spawn")
                )
            except BaseException:
                os.environ.pop("POLARS_MAX_THREADS", None)
                if before is not None:
                    os.environ["POLARS_MAX_THREADS"] = before
                raise
            self._threads_before = before
        return self._pool

    def fan_out(self, paths: RunPaths, work: Work, on_done: ProgressHook | None = None) -> None:
        """A fan-out step's missing tasks, all finished before it returns; raises on the
        first failure."""
        self._decide(paths)
        total = len(work.indices)
        if self.workers <= 1 or total <= 1:
            for done, index in enumerate(work.indices, start=1):
                run_task(paths, work.name, index)
                if on_done:
                    on_done(done, total)
            return
        pool = self._executor()
        futures = [
            pool.submit(_task_in_worker, str(paths.location), work.name, i)
            for i in work.indices
        ]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if on_done:
                on_done(done, total)


def _threads_per_worker(workers: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // workers))


def score_and_merge(
    paths: RunPaths, pool: LocalPool, *, show_progress: bool, database_url: str | None = None
) -> None:
    """Run the missing batches (all of them on a fresh run), then merge, and publish when a
    database is given (at once: an interactive command does not wait out an outage)."""
    work = next_work(paths)
    if work is None:  # published already: nothing to do, and its status stays
        return
    manifest = RunManifest.load(paths)
    ledger = RunLedger(paths)
    if work.kind is Kind.BATCHES:
        ledger.set_status("scoring", engine="local")
    with ledger.step("score"), progress_bar(show_progress) as bar:
        total = manifest.batches_total
        missing = len(ledger.missing_batches(total))
        task = bar.add_task("scoring batches", total=total, completed=total - missing)

        def fan_out(paths: RunPaths, work: Work) -> None:
            def shown(done: int, _total: int) -> None:
                bar.update(task, completed=total - missing + done)

            pool.fan_out(paths, work, shown if work.kind is Kind.BATCHES else None)

        drive(paths, "score", fan_out)
    pool.close()
    drive(paths, "merge", finish=Finish(database_url, outage_window=0))


def run_local(
    data_dir: DataSource,
    cfg: Settings,
    *,
    run_dir: Path | str | None = None,
    show_progress: bool = True,
    database_url: str | None = None,
) -> RunPaths:
    """Full recompute: prepare, every batch, merge and calibrate, then publish when a
    database is given. Returns the run's paths."""
    paths = RunPaths(run_dir) if run_dir else run_at(cfg.run_root, new_run_id())
    with LocalPool(cfg.workers) as pool:
        prepare(paths, data_dir, cfg, pool.fan_out)
        score_and_merge(paths, pool, show_progress=show_progress, database_url=database_url)
    return paths


def run_local_from_postgres(
    database_url: str,
    cfg: Settings,
    *,
    run_dir: Path | str | None = None,
    show_progress: bool = True,
    publish_to: str | None = None,
) -> RunPaths:
    """Export the source tables into the run directory (the export stage: each task COPYs
    its own NPI range), then run on that snapshot."""
    paths = RunPaths(run_dir) if run_dir else run_at(cfg.run_root, new_run_id())
    before = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url  # what export tasks read, here or spawned
    try:
        with LocalPool(cfg.workers) as pool:
            prepare(paths, None, cfg, pool.fan_out, database_url=database_url)
            score_and_merge(paths, pool, show_progress=show_progress, database_url=publish_to)
    finally:
        if before is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = before
    return paths


def resume_local(
    paths: RunPaths, workers: int, *, show_progress: bool = True, database_url: str | None = None
) -> RunPaths:
    """Finish an interrupted run: a prepare stopped part-way carries on with the missing
    shards of its stages; only batches without a chunk are scored, then merge (and publish
    when a database is given)."""
    if RunLedger(paths).read().get("kind") == "incremental":
        msg = (
            f"run {paths.run_id} is an incremental run: it is not resumed (enqueue its NPIs "
            "again; they are scored against the latest full run)"
        )
        raise RunStateError(msg)
    if not has_plan(paths) and not RunManifest.exists(paths):
        error = RunLedger(paths).read().get("error") or "no plan"
        msg = (
            f"run {paths.run_id} failed before its plan was written ({error}): there is "
            "nothing to resume; fix the input and start a new run"
        )
        raise RunStateError(msg)
    with LocalPool(workers) as pool:
        if has_plan(paths) and not is_prepared(paths):
            RunLedger(paths).set_status("preparing", error=None, failed_step=None)
            resume_prepare(paths, pool.fan_out)
        score_and_merge(paths, pool, show_progress=show_progress, database_url=database_url)
    return paths
