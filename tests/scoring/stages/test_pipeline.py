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
