"""The local engine: the three run steps on one machine, batches on a process pool.

Needs no server. Batches run in spawned worker processes (polars must not be
forked), each given an equal share of the cores for its polars thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.ledger import RunLedger
from scoring.manifest import RunManifest
from scoring.rundir import RunPaths, new_run_id
from scoring.steps import merge_and_calibrate, prepare, score_batch
from scoring.steps.prepare import finish_prepare, run_serially, run_stages
from scoring.steps.publish import publish
from scoring.steps.stages import has_plan, run_stage_task

ProgressHook = Callable[[int, int], None]


def resolve_run(run: str, cfg: Settings) -> RunPaths:
    """A run given as a directory path or as a run id under the run root."""
    candidate = Path(run)
    if not candidate.is_dir():
        candidate = cfg.run_root / run
    if not candidate.is_dir():
        msg = f"no run directory {run!r} (looked in {cfg.run_root})"
        raise RunStateError(msg)
    return RunPaths(candidate)


def latest_run(cfg: Settings) -> RunPaths:
    """The most recently created merged or published run under the run root."""
    from scoring.steps.incremental import latest_full_run

    return latest_full_run(cfg.run_root, published_only=False)


def _score_batch_in_worker(root: str, index: int) -> int:
    return score_batch(RunPaths(Path(root)), index).rows


def _stage_task_in_worker(root: str, stage: str, index: int) -> None:
    run_stage_task(RunPaths(Path(root)), stage, index)


class LocalPool:
    """One spawned process pool for a whole run: every stage's shards, then the batches.

    A pool per stage re-spawned its workers (interpreter, polars, imports: ~1 s each) five
    times a run. Each stage's results are all on disk before the next stage is submitted.
    Workers > 1 only; with one, everything runs in this process.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._threads_before: str | None = None

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

    def stages(self, paths: RunPaths, stage: str, shards: list[int]) -> None:
        """A StageRunner: the shards of one stage, all finished before it returns."""
        if self.workers <= 1 or len(shards) <= 1:
            run_serially(paths, stage, shards)
            return
        pool = self._executor()
        futures = [pool.submit(_stage_task_in_worker, str(paths.root), stage, i) for i in shards]
        for future in as_completed(futures):
            future.result()

    def batches(
        self, paths: RunPaths, batches: Iterable[int], on_done: ProgressHook | None = None
    ) -> None:
        """Score the given batches; raises on the first failure."""
        todo = list(batches)
        total = len(todo)
        if self.workers <= 1 or total <= 1:
            for done, index in enumerate(todo, start=1):
                score_batch(paths, index)
                if on_done:
                    on_done(done, total)
            return
        pool = self._executor()
        futures = [pool.submit(_score_batch_in_worker, str(paths.root), i) for i in todo]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if on_done:
                on_done(done, total)


def _threads_per_worker(workers: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // workers))


def run_batches(
    paths: RunPaths, batches: Iterable[int], workers: int, on_done: ProgressHook | None = None
) -> None:
    """Score the given batches on a pool of their own (workers > 1)."""
    with LocalPool(workers) as pool:
        pool.batches(paths, batches, on_done)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def score_and_merge(paths: RunPaths, pool: LocalPool, *, show_progress: bool) -> None:
    """Run the missing batches (all of them on a fresh run), then merge."""
    manifest = RunManifest.load(paths)
    ledger = RunLedger(paths)
    missing = ledger.missing_batches(manifest.batches_total)
    ledger.set_status("scoring", engine="local")
    with ledger.step("score"), _progress(show_progress) as bar:
        task = bar.add_task(
            "scoring batches",
            total=manifest.batches_total,
            completed=manifest.batches_total - len(missing),
        )
        pool.batches(
            paths,
            missing,
            lambda done, _total: bar.update(
                task, completed=manifest.batches_total - len(missing) + done
            ),
        )
    pool.close()
    merge_and_calibrate(paths)


def run_local(
    data_dir: Path,
    cfg: Settings,
    *,
    run_dir: Path | None = None,
    show_progress: bool = True,
    database_url: str | None = None,
) -> RunPaths:
    """Full recompute: prepare, every batch, merge and calibrate, then publish when a
    database is given. Returns the run's paths."""
    paths = RunPaths(run_dir or cfg.run_root / new_run_id())
    with LocalPool(cfg.workers) as pool:
        prepare(paths, data_dir, cfg, pool.stages)
        score_and_merge(paths, pool, show_progress=show_progress)
    if database_url is not None:
        publish(paths, database_url, outage_window=0)  # interactive
    return paths


def run_local_from_postgres(
    database_url: str,
    cfg: Settings,
    *,
    run_dir: Path | None = None,
    show_progress: bool = True,
    publish_to: str | None = None,
) -> RunPaths:
    """Export the source tables into the run directory (the export stage: each task COPYs
    its own NPI range), then run on that snapshot."""
    paths = RunPaths(run_dir or cfg.run_root / new_run_id())
    before = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url  # what export tasks read, here or spawned
    try:
        with LocalPool(cfg.workers) as pool:
            prepare(paths, None, cfg, pool.stages, database_url=database_url)
            score_and_merge(paths, pool, show_progress=show_progress)
    finally:
        if before is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = before
    if publish_to is not None:
        publish(paths, publish_to, outage_window=0)  # interactive
    return paths


def resume_local(
    paths: RunPaths, workers: int, *, show_progress: bool = True, database_url: str | None = None
) -> RunPaths:
    """Finish an interrupted run: a prepare stopped part-way carries on with the missing
    shards of its stages; only batches without a chunk are scored, then merge (and publish
    when a database is given)."""
    with LocalPool(workers) as pool:
        if not paths.manifest.exists() and has_plan(paths):
            ledger = RunLedger(paths)
            ledger.set_status("preparing", error=None, failed_step=None)
            with ledger.step("prepare"):
                manifest = run_stages(paths, pool.stages)
            finish_prepare(paths, manifest)
        score_and_merge(paths, pool, show_progress=show_progress)
    if database_url is not None:
        publish(paths, database_url, outage_window=0)  # interactive
    return paths
