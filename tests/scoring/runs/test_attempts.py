"""Step attempt records (scoring.runs.attempts): only deaths count, the cap ends a loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring.errors import StepGaveUpError
from scoring.runs.attempts import StepAttempts, attempt_key, describe, step_attempt
from scoring.runs.store import RunPaths


class Died(BaseException):
    """A worker killed mid-step: nothing of the step runs after it (no `except Exception`)."""


def _run(paths: RunPaths, key: str, limit: int, *, die: bool = False) -> int:
    with step_attempt(paths, key, limit=lambda: limit, worker="w") as attempt:
        if die:
            raise Died
    return attempt


def test_each_death_is_one_more_attempt_and_the_cap_fails_the_step(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    key = attempt_key("count", 1)
    for _ in range(3):
        with pytest.raises(Died):
            _run(paths, key, 3, die=True)
    assert StepAttempts(paths).read(key)["attempt"] == 3  # still 'running': three deaths
    with pytest.raises(StepGaveUpError, match=r"stage count shard 1: .* died 3 times .*\(limit 3"):
        _run(paths, key, 3)
    record = StepAttempts(paths).read(key)
    assert (record["status"], record["attempt"]) == ("failed", 4)
    assert _run(paths, key, 3) == 1  # ended: the next start has a fresh budget
    assert StepAttempts(paths).read(key)["status"] == "done"


def test_an_exception_or_the_driver_ends_a_start_so_it_is_no_death(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(ValueError), step_attempt(paths, "reduce", limit=lambda: 1):
        raise ValueError("bad input")  # the engine's retry policy decides about exceptions
    assert StepAttempts(paths).read("reduce")["error"] == "ValueError: bad input"
    assert _run(paths, "reduce", 1) == 1
    with pytest.raises(Died):
        _run(paths, "merge", 1, die=True)
    assert StepAttempts(paths).end_running("interrupted", "driver stopped") == ["merge"]
    assert _run(paths, "merge", 1) == 1
    assert [describe(k) for k in ("prepare", "reduce", "merge", "count-00001")] == [
        "prepare",
        "step reduce",
        "merge",
        "stage count shard 1",
    ]
