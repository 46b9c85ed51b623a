"""The run as data: every step of a full run, in order, and what to run next.

An engine never names a step. It asks `next_work` and interprets the answer by its kind:
the local engine on a process pool, Celery as a chord whose callback asks again, Modal as
one `.map` per fan-out. The stage order and its special cases (the window is reduced
before aggregate; a Postgres run exports first) are written here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.plan import has_plan, has_window, is_fused, plan_source, read_plan
from scoring.runs.store import RunPaths
from scoring.stages.finish import merge_and_publish, merge_done
from scoring.stages.fused import FUSED
from scoring.stages.prepare import combine_and_finish, is_combined
from scoring.stages.reduce import reduce
from scoring.stages.score_batch import score_batch
from scoring.stages.stage_files import missing_shards, shards_done
from scoring.stages.stage_tasks import STAGE_BODIES, run_stage_task


class Kind(StrEnum):
    """How a step is executed: fanned out over the plan's shards or the manifest's batches,
    or once, in the process that orchestrates the run."""

    SHARDS = "shards"
    BATCHES = "batches"
    SINGLE = "single"


@dataclass(frozen=True)
class Finish:
    """What the last step needs from its engine: where to publish (None: not published),
    the reference run of an incremental run, how long to ride out a database outage."""

    database_url: str | None = None
    reference: RunPaths | None = None
    outage_window: float | None = None


@dataclass(frozen=True)
class Step:
    """One step of the table: its name (also the stage name in stages/ and the ledger),
    its kind, whether this run has it, which of its tasks are still to run, and (single
    steps) its body."""

    name: str
    kind: Kind
    missing: Callable[[RunPaths], list[int]]
    applies: Callable[[RunPaths], bool] = lambda _paths: True
    single: Callable[[RunPaths, Finish], Any] | None = None
    phase: str = "prepare"  # the SPEC's run step it belongs to: prepare, score or merge


@dataclass(frozen=True)
class Work:
    """The next thing to run: a step and its missing task indices (a single step: [0])."""

    step: Step
    indices: list[int]

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def kind(self) -> Kind:
        return self.step.kind


def _shards(stage: str) -> Callable[[RunPaths], list[int]]:
    return lambda paths: missing_shards(paths, stage, read_plan(paths)[2])


def _once(done: Callable[[RunPaths], bool]) -> Callable[[RunPaths], list[int]]:
    return lambda paths: [] if done(paths) else [0]


def _from_postgres(paths: RunPaths) -> bool:
    return has_plan(paths) and plan_source(paths) == "postgres"


def _missing_batches(paths: RunPaths) -> list[int]:
    return RunLedger(paths).missing_batches(RunManifest.load(paths).batches_total)


def _reduce(paths: RunPaths, _finish: Finish) -> Any:
    return reduce(paths, RunLedger(paths))


def _combine(paths: RunPaths, _finish: Finish) -> Any:
    manifest = combine_and_finish(paths)
    record_progress(paths)
    return manifest


def _merge(paths: RunPaths, finish: Finish) -> Any:
    return merge_and_publish(
        paths, finish.database_url, reference=finish.reference, outage_window=finish.outage_window
    )


STEPS: tuple[Step, ...] = (
    # for --source postgres: each task COPYs its own NPI range into the run's snapshot
    Step("export", Kind.SHARDS, _shards("export"), applies=_from_postgres),
    # a one-shard plan: ingest .. peer_stats as one task, which writes their files and done
    # markers (the stage steps below then find nothing left), not the shuffles' files
    Step(FUSED, Kind.SHARDS, _shards(FUSED), applies=is_fused),
    Step("ingest", Kind.SHARDS, _shards("ingest")),
    Step("count", Kind.SHARDS, _shards("count")),
    # the window end and the graph, once: aggregate keeps only the window's rows
    Step("reduce", Kind.SINGLE, _once(has_window), single=_reduce),
    Step("aggregate", Kind.SHARDS, _shards("aggregate")),
    Step("peer_stats", Kind.SHARDS, _shards("peer_stats")),
    # the run-wide tables and run.json, which every batch reads
    Step("combine", Kind.SINGLE, _once(is_combined), single=_combine),
    Step("score", Kind.BATCHES, _missing_batches, phase="score"),
    # merge, calibrate and publish once; an engine runs it at the end of every drive (it
    # refuses a run with a missing batch and leaves a published or blocked run alone)
    Step("merge", Kind.SINGLE, _once(merge_done), single=_merge, phase="merge"),
)
STEP_NAMES = {step.name: step for step in STEPS}


def steps_of(paths: RunPaths) -> list[Step]:
    """The steps this run has, in order."""
    return [step for step in STEPS if step.applies(paths)]


def next_work(paths: RunPaths) -> Work | None:
    """The first step of the table with something left to run, or None when the run is
    merged and published (as it asked). Reads only the run's files, so every engine, a
    resume and a late callback all get the same answer."""
    for step in steps_of(paths):
        indices = step.missing(paths)
        if indices:
            return Work(step, indices)
    return None


def run_task(paths: RunPaths, step: str, index: int) -> Any:
    """One task of a fan-out step, by name (messages carry names)."""
    if step == "score":
        return score_batch(paths, index)
    if step not in STAGE_BODIES:
        fan_outs = ", ".join(s.name for s in STEPS if s.kind is not Kind.SINGLE)
        msg = f"unknown fan-out step {step!r} (fan-out steps: {fan_outs})"
        raise ValueError(msg)
    return run_stage_task(paths, step, index)


def run_single(paths: RunPaths, step: str, finish: Finish | None = None) -> Any:
    """A single step, by name; nothing when it is done already (a repeated call)."""
    body = STEP_NAMES[step].single if step in STEP_NAMES else None
    if body is None:
        msg = f"{step!r} is not a single step"
        raise ValueError(msg)
    if not STEP_NAMES[step].missing(paths):
        return None
    return body(paths, finish or Finish())


def stage_progress(paths: RunPaths) -> dict[str, str]:
    """'ingest': '12/32' ... for each fan-out stage of the run's plan, for `status`."""
    if not has_plan(paths):
        return {}
    shards = read_plan(paths)[2]
    return {
        step.name: f"{len(shards_done(paths, step.name))}/{shards}"
        for step in steps_of(paths)
        if step.kind is Kind.SHARDS
    }


def record_progress(paths: RunPaths) -> None:
    """Per-stage progress in the ledger, for `status`."""
    RunLedger(paths).update(stages=stage_progress(paths))


def is_prepared(paths: RunPaths) -> bool:
    """No prepare step has work left (a run without a plan, e.g. incremental: run.json)."""
    if not has_plan(paths):
        return RunManifest.exists(paths)
    work = next_work(paths)
    return work is None or work.step.phase != "prepare"
