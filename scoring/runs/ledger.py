"""RunLedger: the run's status, batch progress, timings and input fingerprint.

The ledger lives in the run store: ``ledger.json`` is changed only by `RunStore.update_json`
(a lock on a filesystem, a compare-and-swap on S3), so concurrent writers (coordinator,
errback, watchdog) lose no update; each batch runner writes only its own
``ledger/batch-N.json``; events are appended records. A batch counts as done when its chunk
exists (chunks are written whole).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scoring.errors import ClaidexError, RunFileError
from scoring.inputs import dataset
from scoring.inputs.dataset import DataFile
from scoring.runs.alerts import send_alert
from scoring.runs.records import parse_record
from scoring.runs.retry_policy import retried_by_type
from scoring.runs.statuses import STATUSES
from scoring.runs.store import (
    BATCH_LEDGER,
    CHUNKS,
    EVENTS,
    HEARTBEATS,
    LEDGER,
    RunPaths,
    batch_status_key,
    events_key,
    heartbeat_key,
    run_store,
)

# Set by a task runner while its task still has retries left: a retryable failure is then
# recorded as `retrying`, not `failed`, so followers report the final state, not the first error.
RETRY_PENDING: ContextVar[bool] = ContextVar("claidex_retry_pending", default=False)


def utc_now(timespec: str = "seconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec)


def task_host() -> dict[str, Any]:
    """Which process ran a task: a lane of the report's timeline."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def input_fingerprint(files: list[DataFile]) -> str:
    """Cheap content fingerprint: each file's name, size and Parquet footer (with statistics)."""
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(files, key=lambda f: str(f).split("/")):  # a Path's order, for a URL too
        size = dataset.size(file)
        digest.update(f"{dataset.name_of(file)}:{size}".encode())
        digest.update(dataset.tail(file, 65_536))
    return digest.hexdigest()


def read_record(path: Path) -> dict[str, Any]:
    """A run-directory JSON object (ledger, run.json, a batch record)."""
    return parse_record(path.read_bytes(), str(path))


class RunLedger:
    """The ledger of one run, in its run store."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self.store = run_store(paths)

    def _record(self, key: str) -> dict[str, Any] | None:
        """A JSON object of the run (None when absent); torn or foreign: RunFileError."""
        try:
            raw = self.store.read_bytes(key)
        except FileNotFoundError:  # RunFileMissingError too
            return None
        return parse_record(raw, self.store.location(key))

    # --- run level ---------------------------------------------------------
    def read(self) -> dict[str, Any]:
        # absent: not started yet, or a re-prepare clearing it right now
        return self._record(LEDGER) or {}

    def update(self, **fields: Any) -> dict[str, Any]:
        """One writer's change, never lost to another's (the store's update_json)."""

        def change(state: dict[str, Any]) -> dict[str, Any]:
            return {**state, **fields, "updated_at": utc_now()}

        return self.store.update_json(LEDGER, change)

    def start(self, *, kind: str, source: str, fingerprint: str) -> None:
        self.update(
            run_id=self.paths.run_id,
            kind=kind,
            source=source,
            status="preparing",
            input_fingerprint=fingerprint,
            created_at=utc_now("microseconds"),  # orders runs for the stale-publish check
            timings={},
            error=None,
            failed_step=None,
        )

    def set_status(self, status: str, **fields: Any) -> None:
        if status not in STATUSES:
            msg = f"unknown run status {status!r}"
            raise ValueError(msg)
        self.update(status=status, **fields)

    def set_status_counted(self, status: str, counter: str, **fields: Any) -> dict[str, Any]:
        """set_status, and `counter` one up in the same change (never lost to a concurrent
        writer, as a value read before and written after would be)."""
        if status not in STATUSES:
            msg = f"unknown run status {status!r}"
            raise ValueError(msg)

        def change(state: dict[str, Any]) -> dict[str, Any]:
            counted = int(state.get(counter, 0)) + 1
            return {**state, **fields, "status": status, counter: counted, "updated_at": utc_now()}

        return self.store.update_json(LEDGER, change)

    def record_timing(self, step: str, seconds: float) -> None:
        def change(state: dict[str, Any]) -> dict[str, Any]:
            timings = {**state.get("timings", {}), step: round(seconds, 3)}
            return {**state, "timings": timings, "updated_at": utc_now()}

        self.store.update_json(LEDGER, change)

    def fail(self, step: str, error: BaseException | str, *, where: str = "") -> None:
        """The run failed at `step` -- unless the error is transient and a retry is coming.
        `where` (a shard, say) prefixes the recorded message."""
        # RETRY_PENDING is set by a Celery task with retries left: say 'retrying' only when
        # Celery's autoretry will retry this error
        if RETRY_PENDING.get() and isinstance(error, BaseException) and retried_by_type(error):
            self.update(retrying={"step": step, "error": where + str(error), "at": utc_now()})
            return
        shown = (
            f"{type(error).__name__}: {error}"
            if where and isinstance(error, BaseException)
            else str(error)
        )
        before = self.read()
        self.set_status("failed", failed_step=step, error=where + shown)
        if before.get("status") == "failed":  # one message a failure (a stage's other shards)
            return
        send_alert(self.paths.run_id, "failed", f"at {step}: {where + shown}", _resume_hint(before))
        if os.environ.get("CLAIDEX_PUSHGATEWAY"):  # the run ends here: its metrics go out
            from scoring.runs.metrics import push_run_metrics

            push_run_metrics(self.read())

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time a run step; if it raises, the run is marked failed at that step and the error
        propagates. (Publish scrubs secrets from its messages first, so it does its own.)"""
        try:
            with StepTimer(self, name):
                yield
        except Exception as exc:
            self.fail(name, exc)
            raise

    # --- liveness ----------------------------------------------------------
    @contextmanager
    def heartbeat(self, name: str, *, worker: str, every: float) -> Iterator[None]:
        """Touch heartbeats/<name>.json every `every` s while the block runs: a killed worker
        falls silent, which `status` and the watchdog read as a lost worker."""
        key = heartbeat_key(name)
        record = {"name": name, "worker": worker, "host": socket.gethostname(), "pid": os.getpid()}
        stop = threading.Event()

        def beat() -> None:
            while True:
                # a full disk or an unreachable store (past its outage window too) must not
                # kill the step, nor stop the beating: the next beat tries again
                with contextlib.suppress(OSError, ClaidexError):
                    self.store.write_json(key, {**record, "at": time.time()})
                if stop.wait(every):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=every + 5)
            with contextlib.suppress(OSError, ClaidexError):  # a beat left: it only ages
                self.store.delete(key)

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Running steps by name, each with `age` (seconds since its last beat)."""
        beats: dict[str, dict[str, Any]] = {}
        for name in self.store.list_names(HEARTBEATS):
            if not name.endswith(".json"):
                continue
            with contextlib.suppress(OSError, RunFileError, KeyError, TypeError, ValueError):
                record = self._record(heartbeat_key(name.removesuffix(".json")))
                if record is None:  # ended between the listing and the read
                    continue
                age = round(time.time() - float(record["at"]), 1)
                beats[name.removesuffix(".json")] = {**record, "age": age}
        return beats

    def _event(self, index: int, **fields: Any) -> None:
        """One appended line per batch start or end: how often each batch really ran."""
        record = {"batch": index, "at": utc_now("milliseconds"), **fields}
        self.store.append_record(events_key(index), record)

    def batch_executions(self) -> dict[int, int]:
        """Starts per batch, from the event log (every attempt, redeliveries included)."""
        counts: dict[int, int] = {}
        for index, events in self.batch_events().items():
            counts[index] = sum(1 for event in events if event.get("event") == "start")
        return counts

    def batch_events(self) -> dict[int, list[dict[str, Any]]]:
        """Every batch's events, oldest first."""
        names = [
            n.removeprefix("batch-").removesuffix(".jsonl") for n in self.store.list_names(EVENTS)
        ]
        indices = sorted({int(n) for n in names if n.isdigit()})
        with ThreadPoolExecutor(max_workers=16) as pool:  # on S3: the requests in parallel
            logs = list(pool.map(lambda i: self.store.read_records(events_key(i)), indices))
        return dict(zip(indices, logs, strict=True))

    # --- batch level -------------------------------------------------------
    def batch_started(self, index: int, *, worker: str, redelivered: bool) -> int:
        """Record a start; returns the attempt number (consecutive starts that never ended:
        a record still 'running' means the previous start died without recording an end)."""
        previous = self._record(batch_status_key(index)) or {}
        attempt = int(previous.get("attempt", 0)) + 1 if previous.get("status") == "running" else 1
        self.store.write_json(
            batch_status_key(index),
            {
                "batch": index,
                "status": "running",
                "attempt": attempt,
                "worker": worker,
                "redelivered": redelivered,
                "started_at": utc_now("milliseconds"),  # the watchdog compares deliveries
            },
        )
        self._event(index, event="start", worker=worker, attempt=attempt, **task_host())
        return attempt

    def batch_done(
        self, index: int, *, rows: int, seconds: float, worker: str = "", redelivered: bool = False
    ) -> None:
        self.store.write_json(
            batch_status_key(index),
            {
                "batch": index,
                "status": "done",
                "rows": rows,
                "seconds": round(seconds, 3),
                "worker": worker,
                "redelivered": redelivered,
                "finished_at": utc_now(),
            },
        )
        self._event(index, event="done", worker=worker, rows=rows)

    def batch_failed(self, index: int, error: BaseException | str) -> None:
        self.store.write_json(
            batch_status_key(index),
            {"batch": index, "status": "failed", "error": str(error), "finished_at": utc_now()},
        )
        self._event(index, event="failed", error=str(error)[:500])

    def batch_interrupted(self, index: int, why: str) -> None:
        """End a start that never ended, without it counting as a death of its worker (the
        driver stopped, or the engine gave up on the batch itself): the next start is attempt 1."""
        self.store.write_json(
            batch_status_key(index),
            {"batch": index, "status": "interrupted", "error": why, "finished_at": utc_now()},
        )

    def batch_states(
        self, skip: set[int] | frozenset[int] = frozenset()
    ) -> dict[int, dict[str, Any]]:
        """Each batch's record, but those of `skip` (a GET each on S3: skip what is known)."""
        names = [
            n
            for n in self.store.list_names(BATCH_LEDGER)
            if _batch_of(n) >= 0 and _batch_of(n) not in skip
        ]
        states = (self._record(f"{BATCH_LEDGER}/{n}") for n in names)
        return {state["batch"]: state for state in states if state is not None}

    def chunks_done(self) -> set[int]:
        """Batches with a finished chunk (one listing, not a lookup per batch)."""
        names = self.store.list_names(CHUNKS)
        return {int(n.removesuffix(".parquet")) for n in names if _chunk_name(n)}

    def missing_batches(self, total: int) -> list[int]:
        """Batches without a finished chunk: what a resume must run."""
        done = self.chunks_done()
        return [i for i in range(total) if i not in done]

    def summary(self) -> dict[str, Any]:
        state = self.read()
        total = int(state.get("batches_total", 0))
        chunks = self.chunks_done()
        batches = self.batch_states(skip=chunks)  # a chunk: done, whatever its record says
        failed = sorted(i for i, b in batches.items() if b["status"] == "failed")
        done = len([i for i in chunks if i < total]) if total else 0
        running = sorted(i for i, b in batches.items() if b["status"] == "running")
        return {**state, "batches_done": done, "batches_failed": failed, "batches_running": running}


def _batch_of(name: str) -> int:
    """The batch of a record's name 'batch-00012.json' (-1: not a batch record)."""
    stem = name.removeprefix("batch-").removesuffix(".json")
    named = name.startswith("batch-") and name.endswith(".json") and stem.isdigit()
    return int(stem) if named else -1


def _chunk_name(name: str) -> bool:
    stem = name.removesuffix(".parquet")
    return name.endswith(".parquet") and stem.isdigit()


def _resume_hint(state: dict[str, Any]) -> str:
    """What to run once the cause is fixed, for the engine that ran the run."""
    run_id = state.get("run_id", "?")
    if state.get("kind") == "incremental":
        return "fix the cause, then enqueue the NPIs again"
    command = {
        "celery": f"python -m workers resume {run_id}",
        "modal": f"python -m modal_burst resume {run_id}",
    }.get(str(state.get("engine")), f"claidex resume {run_id}")
    return f"fix the cause, then: {command}"


class StepTimer:
    """Context manager recording a step's wall time into the ledger."""

    def __init__(self, ledger: RunLedger, step: str) -> None:
        self.ledger = ledger
        self.step = step
        self.seconds = 0.0

    def __enter__(self) -> StepTimer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        if exc[0] is None:
            self.ledger.record_timing(self.step, self.seconds)
