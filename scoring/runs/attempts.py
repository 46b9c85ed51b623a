"""Attempt records of a run's steps: a step that keeps killing its worker fails instead of looping.

A step (prepare, one shard of a stage, a single step such as reduce or combine, merge)
records its start here before it does any work; the record stays 'running' until the step
ends. A start that finds the record still 'running' follows a worker that died mid-step
(out of memory, say): it is the next attempt. Past the run's `step_max_attempts` the step
raises StepGaveUpError (EXHAUSTED in retry_policy) instead of running: an engine that
retries whatever dies (Modal reschedules a crashed container's input, in a deployed app
without end) would otherwise burn workers until the run's timeout. Batches have the same
rule in their own records (RunLedger.batch_started, batch_max_attempts).

Only deaths count: a step that raises ends its record 'failed' (the engine's retry policy
decides about exceptions), and whoever drives the run ends a record nobody will end
(`end_running`: the driver stopped, or the engine gave up on the step), so the next start,
a resume's, is attempt 1 again.

Each step's record is its own file, attempts/<key>.json, outside what a new prepare clears
(prepare's own record must survive its clear): many shards start at once, and a store that
is last-write-wins per file (a Modal volume) would lose the updates of a shared one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from scoring.errors import StepGaveUpError
from scoring.runs.ledger import parse_record, utc_now
from scoring.runs.retry_policy import out_of_attempts
from scoring.runs.store import RunPaths, run_store

ATTEMPTS = "attempts"
PREPARE = "prepare"
MERGE = "merge"
LIMIT_SETTING = "CLAIDEX_STEP_MAX_ATTEMPTS"


def attempt_key(step: str, shard: int | None = None) -> str:
    """A step's record name: 'prepare', 'reduce', 'merge'; a stage shard's 'count-00001'."""
    return step if shard is None else f"{step}-{shard:05d}"


def describe(key: str) -> str:
    """The key as a user reads it: 'prepare', 'step reduce', 'stage count shard 1'."""
    step, _, shard = key.rpartition("-")
    if step and shard.isdigit():
        return f"stage {step} shard {int(shard)}"
    return key if key in (PREPARE, MERGE) else f"step {key}"


class StepAttempts:
    """The attempt records of one run's steps (attempts/<key>.json, one writer per file)."""

    def __init__(self, paths: RunPaths) -> None:
        self.store = run_store(paths)

    @staticmethod
    def key(key: str) -> str:
        return f"{ATTEMPTS}/{key}.json"

    def read(self, key: str) -> dict[str, Any]:
        try:
            raw = self.store.read_bytes(self.key(key))
        except FileNotFoundError:  # RunFileMissingError too
            return {}
        return parse_record(raw, self.store.location(self.key(key)))

    def start(self, key: str, *, worker: str) -> int:
        """Record a start; the attempt number (consecutive starts that never ended)."""
        previous = self.read(key)
        running = previous.get("status") == "running"
        attempt = int(previous.get("attempt", 0)) + 1 if running else 1
        record = {
            "step": key,
            "status": "running",
            "attempt": attempt,
            "worker": worker,
            "started_at": utc_now("milliseconds"),
        }
        self.store.write_json(self.key(key), record)
        return attempt

    def end(self, key: str, status: str, error: str | None = None) -> None:
        """The start ended ('done', 'failed', 'interrupted'): the next start is attempt 1."""
        record = {**self.read(key), "status": status, "finished_at": utc_now()}
        if error is not None:
            record["error"] = error
        self.store.write_json(self.key(key), record)

    def states(self) -> dict[str, dict[str, Any]]:
        names = [n for n in self.store.list_names(ATTEMPTS) if n.endswith(".json")]
        return {n.removesuffix(".json"): self.read(n.removesuffix(".json")) for n in names}

    def end_running(self, status: str, why: str) -> list[str]:
        """End every start still 'running' (the caller knows no step of the run is running):
        a death nobody saw, or one the engine gave up on, is no attempt of the next start."""
        running = [k for k, r in self.states().items() if r.get("status") == "running"]
        for key in running:
            self.end(key, status, why)
        return running


def gave_up_message(key: str, attempt: int, limit: int) -> str:
    return (
        f"{describe(key)}: its worker died {attempt - 1} times running it (limit {limit}, "
        f"{LIMIT_SETTING}); failing it instead of retrying forever"
    )


@contextmanager
def step_attempt(
    paths: RunPaths,
    key: str,
    *,
    limit: Callable[[], int],
    worker: str = "",
    on_start: Callable[[], None] | None = None,
) -> Iterator[int]:
    """Run a step as one recorded attempt; StepGaveUpError past `limit()` attempts.

    The start is recorded first and `on_start` runs next (Modal commits the volume there, so
    a worker killed mid-step still counts); `limit` is read after that, as the step's own
    settings may live in files the step reads (the plan, run.json)."""
    attempts = StepAttempts(paths)
    attempt = attempts.start(key, worker=worker)
    try:
        if on_start is not None:  # a commit that fails here is a failure, not a death
            on_start()
        cap = limit()
        if out_of_attempts(attempt, cap):
            raise StepGaveUpError(gave_up_message(key, attempt, cap))
        yield attempt
    except Exception as exc:
        attempts.end(key, "failed", f"{type(exc).__name__}: {exc}")
        raise
    attempts.end(key, "done")
