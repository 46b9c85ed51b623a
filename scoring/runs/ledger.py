"""RunLedger: the run's status, batch progress, timings and input fingerprint.

The file ledger lives in the run directory: ``ledger.json`` is written by the
step coordinator; each batch runner writes only its own ``ledger/batch-N.json``,
so concurrent workers never contend for one file. A batch counts as done when
its chunk file exists (chunks are renamed into place whole).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scoring.errors import RunFileError
from scoring.runs.alerts import send_alert
from scoring.runs.retry_policy import retried_by_type
from scoring.runs.statuses import STATUSES
from scoring.runs.store import RunPaths, write_json_atomic

# Set by a task runner while its task still has retries left: a retryable failure is then
# recorded as `retrying`, not `failed`, so followers report the final state, not the first error.
RETRY_PENDING: ContextVar[bool] = ContextVar("claidex_retry_pending", default=False)


def utc_now(timespec: str = "seconds") -> str:
    return datetime.now(UTC).isoformat(timespec=timespec)


def task_host() -> dict[str, Any]:
    """Which process ran a task: a lane of the report's timeline."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def input_fingerprint(files: list[Path]) -> str:
    """Cheap content fingerprint: each file's name, size and Parquet footer (with statistics)."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(files):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            handle.seek(max(0, size - 65_536))
            digest.update(handle.read())
    return digest.hexdigest()


def parse_record(raw: bytes | str, where: str) -> dict[str, Any]:
    """A run record's JSON object; a torn or foreign file is one RunFileError naming it
    (`where`: a path, or a key on the Modal volume) instead of a JSONDecodeError."""
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        msg = f"{where}: not valid JSON ({exc}): a torn write or another program's file"
        raise RunFileError(msg) from None
    if not isinstance(data, dict):
        msg = f"{where}: not a JSON object ({type(data).__name__}): another program's file?"
        raise RunFileError(msg)
    return data


def read_record(path: Path) -> dict[str, Any]:
    """A run-directory JSON object (ledger, run.json, a batch record)."""
    return parse_record(path.read_bytes(), str(path))


class RunLedger:
    """File-backed ledger of one run."""

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths

    # --- run level ---------------------------------------------------------
    def read(self) -> dict[str, Any]:
        try:
            return read_record(self.paths.ledger)
        except FileNotFoundError:  # not started yet, or a re-prepare clearing it right now
            return {}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (coordinator, errback, watchdog): no update is lost.
        Best effort: a filesystem without locks (some network volumes) goes unlocked."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        with open(self.paths.root / ".ledger.lock", "a") as handle:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def update(self, **fields: Any) -> dict[str, Any]:
        with self._locked():
            state = self.read()
            state.update(fields)
            state["updated_at"] = utc_now()
            write_json_atomic(state, self.paths.ledger)
        return state

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

    def record_timing(self, step: str, seconds: float) -> None:
        timings = dict(self.read().get("timings", {}))
        timings[step] = round(seconds, 3)
        self.update(timings=timings)

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
        path = self.paths.heartbeat_dir / f"{name}.json"
        record = {"name": name, "worker": worker, "host": socket.gethostname(), "pid": os.getpid()}
        stop = threading.Event()

        def beat() -> None:
            while True:
                with contextlib.suppress(OSError):  # a full disk must not kill the step
                    write_json_atomic({**record, "at": time.time()}, path)
                if stop.wait(every):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=every + 5)
            path.unlink(missing_ok=True)

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Running steps by name, each with `age` (seconds since its last beat)."""
        folder = self.paths.heartbeat_dir
        beats: dict[str, dict[str, Any]] = {}
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            with contextlib.suppress(OSError, RunFileError):
                record = read_record(path)
                beats[path.stem] = {**record, "age": round(time.time() - float(record["at"]), 1)}
        return beats

    def _event(self, index: int, **fields: Any) -> None:
        """One appended line per batch start or end: how often each batch really ran."""
        path = self.paths.batch_events(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"batch": index, "at": utc_now("milliseconds"), **fields}) + "\n"
        with open(path, "a") as handle:  # O_APPEND: concurrent writers never interleave a line
            handle.write(line)

    def batch_executions(self) -> dict[int, int]:
        """Starts per batch, from the event log (every attempt, redeliveries included)."""
        folder = self.paths.batch_events(0).parent
        counts: dict[int, int] = {}
        for path in sorted(folder.glob("batch-*.jsonl")) if folder.exists() else []:
            events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            starts = sum(1 for event in events if event.get("event") == "start")
            counts[int(path.stem.split("-")[1])] = starts
        return counts

    # --- batch level -------------------------------------------------------
    def batch_started(self, index: int, *, worker: str, redelivered: bool) -> int:
        """Record a start; returns the attempt number (consecutive starts that never ended:
        a record still 'running' means the previous start died without recording an end)."""
        path = self.paths.batch_status(index)
        previous = read_record(path) if path.exists() else {}
        attempt = int(previous.get("attempt", 0)) + 1 if previous.get("status") == "running" else 1
        write_json_atomic(
            {
                "batch": index,
                "status": "running",
                "attempt": attempt,
                "worker": worker,
                "redelivered": redelivered,
                "started_at": utc_now("milliseconds"),  # the watchdog compares deliveries
            },
            path,
        )
        self._event(index, event="start", worker=worker, attempt=attempt, **task_host())
        return attempt

    def batch_done(
        self, index: int, *, rows: int, seconds: float, worker: str = "", redelivered: bool = False
    ) -> None:
        write_json_atomic(
            {
                "batch": index,
                "status": "done",
                "rows": rows,
                "seconds": round(seconds, 3),
                "worker": worker,
                "redelivered": redelivered,
                "finished_at": utc_now(),
            },
            self.paths.batch_status(index),
        )
        self._event(index, event="done", worker=worker, rows=rows)

    def batch_failed(self, index: int, error: BaseException | str) -> None:
        write_json_atomic(
            {"batch": index, "status": "failed", "error": str(error), "finished_at": utc_now()},
            self.paths.batch_status(index),
        )
        self._event(index, event="failed", error=str(error)[:500])

    def batch_interrupted(self, index: int, why: str) -> None:
        """End a start that never ended, without it counting as a death of its worker (the
        driver stopped, or the engine gave up on the batch itself): the next start is attempt 1."""
        write_json_atomic(
            {"batch": index, "status": "interrupted", "error": why, "finished_at": utc_now()},
            self.paths.batch_status(index),
        )

    def batch_states(self) -> dict[int, dict[str, Any]]:
        folder = self.paths.batch_ledger_dir
        if not folder.exists():
            return {}
        states = (read_record(p) for p in sorted(folder.glob("batch-*.json")))
        return {state["batch"]: state for state in states}

    def missing_batches(self, total: int) -> list[int]:
        """Batches without a finished chunk: what a resume must run."""
        return [i for i in range(total) if not self.paths.chunk(i).exists()]

    def summary(self) -> dict[str, Any]:
        state = self.read()
        total = int(state.get("batches_total", 0))
        batches = self.batch_states()
        failed = sorted(
            i
            for i, b in batches.items()
            if b["status"] == "failed" and not self.paths.chunk(i).exists()
        )
        done = total - len(self.missing_batches(total)) if total else 0
        running = sorted(
            i
            for i, b in batches.items()
            if b["status"] == "running" and not self.paths.chunk(i).exists()
        )
        return {**state, "batches_done": done, "batches_failed": failed, "batches_running": running}


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
