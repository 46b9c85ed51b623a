"""The step table and its in-process interpreter: order, preconditions, resumption."""

from __future__ import annotations

from pathlib import Path

import pytest

from claidex.dev.sample import generate
from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from scoring.stages.drive import drive, run_serially
from scoring.stages.pipeline import STEPS, Kind, Work, next_work, run_single
from scoring.stages.prepare import begin_prepare


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("small")
    generate(directory, providers=400, seed=5)
    return directory


def test_the_table_declares_the_run_in_order() -> None:
    assert [(s.name, s.kind, s.phase) for s in STEPS] == [
        ("export", Kind.SHARDS, "prepare"),
        ("fused", Kind.SHARDS, "prepare"),
        ("ingest", Kind.SHARDS, "prepare"),
        ("count", Kind.SHARDS, "prepare"),
        ("reduce", Kind.SINGLE, "prepare"),
        ("aggregate", Kind.SHARDS, "prepare"),
        ("peer_stats", Kind.SHARDS, "prepare"),
        ("combine", Kind.SINGLE, "prepare"),
        ("score", Kind.BATCHES, "score"),
        ("merge", Kind.SINGLE, "merge"),
    ]


def test_next_work_walks_the_table_one_answer_at_a_time(
    small_dataset: Path, tmp_path: Path
) -> None:
    """A dataset run skips export; each answer is the first step with work left, with all
    of its missing tasks; a half-done fan-out is answered with only what is missing."""
    paths = RunPaths(tmp_path / "run")
    begin_prepare(paths, small_dataset, Settings(shards=3, batch_size=150))
    seen: list[tuple[str, list[int]]] = []
    while (work := next_work(paths)) is not None and work.step.phase == "prepare":
        seen.append((work.name, work.indices))
        if work.kind is Kind.SINGLE:
            run_single(paths, work.name)
        elif work.name == "aggregate" and len(work.indices) == 3:
            run_serially(paths, Work(work.step, [1]))  # a fan-out cut short: shard 1 only
        else:
            run_serially(paths, work)
    assert seen == [
        ("ingest", [0, 1, 2]),
        ("count", [0, 1, 2]),
        ("reduce", [0]),
        ("aggregate", [0, 1, 2]),
        ("aggregate", [0, 2]),
        ("peer_stats", [0, 1, 2]),
        ("combine", [0]),
    ]
    assert work is not None and work.name == "score"
    assert work.indices == list(range(len(work.indices))) and work.indices
    assert RunLedger(paths).read()["stages"] == {
        "ingest": "3/3",
        "count": "3/3",
        "aggregate": "3/3",
        "peer_stats": "3/3",
    }


def test_drive_runs_each_phase_and_stops_at_the_next(small_dataset: Path, tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    begin_prepare(paths, small_dataset, Settings(shards=2, batch_size=150))
    drive(paths, "prepare")
    work = next_work(paths)
    assert work is not None and work.name == "score"
    with pytest.raises(RunStateError, match="cannot merge, score is not done"):
        drive(paths, "merge")  # never a merge over missing batches
    drive(paths, "score")
    drive(paths, "merge")  # no database: merged, not published
    assert RunLedger(paths).read()["status"] == "merged"
    assert paths.scores.exists()
    work = next_work(paths)
    assert work is not None and work.name == "merge"  # asked for again only to publish


def test_a_fan_out_that_leaves_tasks_undone_is_an_error(
    small_dataset: Path, tmp_path: Path
) -> None:
    """An engine whose runner loses tasks silently must not loop or go on to the next step."""
    paths = RunPaths(tmp_path / "run")
    begin_prepare(paths, small_dataset, Settings(shards=2, batch_size=150))

    def loses_the_last_task(p: RunPaths, work: Work) -> None:
        run_serially(p, Work(work.step, work.indices[:-1]))

    with pytest.raises(RunStateError, match=r"step ingest ran but left \[1\] undone"):
        drive(paths, "prepare", loses_the_last_task)


def test_a_kill_between_run_json_and_the_ledger_is_finished_by_the_next_drive(
    small_dataset: Path, tmp_path: Path
) -> None:
    """combine wrote run.json, its process died before the ledger said 'scoring': the table
    still answers combine, and running it again only records the prepare (same prepare id)."""
    from scoring.runs.manifest import RunManifest
    from scoring.stages.combine import combine

    paths = RunPaths(tmp_path / "run")
    begin_prepare(paths, small_dataset, Settings(shards=2, batch_size=150))
    while (work := next_work(paths)) is not None and work.name != "combine":
        if work.kind is Kind.SINGLE:
            run_single(paths, work.name)
        else:
            run_serially(paths, work)
    combine(paths).save(paths)  # ... and killed here
    written = RunManifest.load(paths)
    work = next_work(paths)
    assert work is not None and work.name == "combine"
    assert RunLedger(paths).read()["status"] == "preparing"
    drive(paths, "prepare")
    state = RunLedger(paths).read()
    assert state["status"] == "scoring" and state["prepared"] == written.prepare_id
    assert state["batches_total"] == written.batches_total
    assert RunManifest.load(paths) == written
    work = next_work(paths)
    assert work is not None and work.name == "score"


def test_resume_leaves_a_published_run_alone_and_refuses_an_incremental_one(
    small_dataset: Path, tmp_path: Path
) -> None:
    from claidex.local_engine import resume_local, run_local
    from scoring.runs.manifest import RunManifest

    cfg = Settings(shards=2, batch_size=150, workers=1)
    paths = run_local(small_dataset, cfg, run_dir=tmp_path / "run", show_progress=False)
    ledger = RunLedger(paths)
    ledger.update(status="published", published_prepare=RunManifest.load(paths).prepare_id)
    written = paths.scores.stat().st_mtime_ns
    resume_local(paths, workers=1, show_progress=False)
    assert ledger.read()["status"] == "published"
    assert paths.scores.stat().st_mtime_ns == written
    ledger.update(kind="incremental")
    with pytest.raises(RunStateError, match="is an incremental run"):
        resume_local(paths, workers=1, show_progress=False)
