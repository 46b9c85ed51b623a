"""The in-process interpreter of the step table: single steps here, fan-outs through a
runner the engine gives (serially by default; the local engine's process pool)."""

from __future__ import annotations

from collections.abc import Callable

from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.inputs.dataset import DataSource
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.store import RunPaths
from scoring.stages.pipeline import STEPS, Finish, Kind, Work, next_work, record_progress, run_task
from scoring.stages.pipeline import run_single as run_single_step
from scoring.stages.prepare import begin_prepare, begin_prepare_from_postgres

FanOut = Callable[[RunPaths, Work], None]
PHASES = ("prepare", "score", "merge")  # the SPEC's three run steps, in order


def run_serially(paths: RunPaths, work: Work) -> None:
    """The in-process fan-out runner: one task after the other."""
    for index in work.indices:
        run_task(paths, work.name, index)


def drive(
    paths: RunPaths, phase: str, fan_out: FanOut = run_serially, finish: Finish | None = None
) -> None:
    """Run what is left of one phase (prepare, score or merge), in the table's order. A step
    still missing right after it ran is an error, except the last (merge without a database
    is done once merged, and is asked for again only to publish)."""
    ran: set[str] = set()
    while (work := next_work(paths)) is not None:
        if PHASES.index(work.step.phase) > PHASES.index(phase):
            return
        if work.step.phase != phase:
            undone = work.indices[:10]
            msg = f"run {paths.run_id}: cannot {phase}, {work.name} is not done ({undone})"
            raise RunStateError(msg)
        if work.name in ran:
            if work.step is STEPS[-1]:
                return
            msg = f"run {paths.run_id}: step {work.name} ran but left {work.indices[:10]} undone"
            raise RunStateError(msg)
        ran.add(work.name)
        if work.kind is Kind.SINGLE:
            run_single_step(paths, work.name, finish)
        else:
            fan_out(paths, work)
            if work.kind is Kind.SHARDS:
                record_progress(paths)


def prepare(
    paths: RunPaths,
    data_dir: DataSource | None,
    cfg: Settings,
    fan_out: FanOut = run_serially,
    *,
    database_url: str | None = None,
) -> RunManifest:
    """Step 1 of a full run over a dataset directory, or (data_dir None) over Postgres
    (the export stage reads DATABASE_URL in each task's process): plan, then every stage of
    the table, fanned out by `fan_out`; status, per-stage progress and timing in the ledger."""
    if data_dir is None:
        begin_prepare_from_postgres(paths, database_url, cfg)
    else:
        begin_prepare(paths, data_dir, cfg)
    return resume_prepare(paths, fan_out)


def resume_prepare(paths: RunPaths, fan_out: FanOut = run_serially) -> RunManifest:
    """The stages of a written plan not done yet (only shards without a done marker run)."""
    with RunLedger(paths).step("prepare"):
        drive(paths, "prepare", fan_out)
    return RunManifest.load(paths)
