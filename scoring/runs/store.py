"""The run store: every file of a run directory by its key, behind one interface.

A key is a '/'-separated name relative to the run's root ("stages/ingest/00003/
payments.parquet"); the stages, the plan, the manifest, combine and the batch cutter read
and write through a `RunStore` and never build a path. `run_store(paths)` picks the
backend: today always `LocalRunStore` (scoring.runs.local_store: a local path, a compose
volume, the Modal volume). An object-store backend is one new module implementing
`RunStore` and one line in `run_store`.

Still path-based, and why (what issue 25 has to move as well):
- the ledger (ledger.json, ledger/, heartbeats/, events/, watchdog.json): a flock
  serialises its read-modify-write and the batch event logs are appended to; object storage
  has neither, so it needs per-task write-once records or Redis/Postgres, not a store call;
- score_batch, merge and the incremental run read batch slices, chunks and the statistics
  with `RunPaths` (lazy scans of stats/, chunk removal) and write chunks, scores.parquet and
  the reports with the path functions below;
- the Postgres export writes its snapshot as a dataset (source/) that the input contract
  reads by path, as it reads any dataset;
- Modal's volume sync (modal_burst) and the views (report, compare, explain) open paths.

`RunPaths` gives each artefact's path from the same keys, so both views name one layout.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from scoring.errors import RunFileError, RunStateError
from scoring.runs.local_store import (
    LocalRunStore,
    read_buckets,
    read_json,
    read_parquet_named,
    write_bucketed_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)
from scoring.runs.object_store import ObjectRunStore, is_url, split_url

__all__ = [
    "RunPaths",
    "RunStore",
    "checked_run_id",
    "new_run_id",
    "read_buckets",
    "read_json",
    "read_json_or",
    "read_parquet_named",
    "run_store",
    "writable_run",
    "writable_run_dir",
    "write_bucketed_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]


class RunStore(Protocol):
    """One run's files by key. Writes are whole or absent (a reader never sees half a
    file); reads of a missing, torn or foreign file raise RunFileError naming it (JSON:
    the decoder's or the filesystem's own error, as `json.loads` gives it)."""

    def location(self, key: str) -> str:
        """Where `key` lives, for messages (a path, or a URL)."""
        ...

    def write_frame(self, key: str, frame: pl.DataFrame) -> None: ...

    def read_frame(self, key: str) -> pl.DataFrame: ...

    def scan_frame(self, key: str) -> pl.LazyFrame:
        """Lazy: only the columns and row groups a query needs are read."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def read_bytes(self, key: str) -> bytes: ...

    def read_text(self, key: str) -> str: ...

    def write_bucketed(
        self, key: str, frame: pl.DataFrame, bucket: str, compression: str = "lz4"
    ) -> None:
        """Sorted by `bucket` in row groups with statistics, so one bucket reads alone."""
        ...

    def read_bucket(
        self, keys: list[str], bucket: str, value: int, columns: list[str] | None = None
    ) -> pl.DataFrame:
        """Bucket `value` of every file of `keys`, in key order, without the bucket column."""
        ...

    def write_json(self, key: str, data: Any) -> None: ...

    def read_json(self, key: str) -> Any: ...

    def write_text(self, key: str, text: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str, name: str) -> list[str]:
        """Every key below `prefix` whose last part is `name`, sorted (no pattern syntax)."""
        ...

    def list_names(self, prefix: str) -> list[str]:
        """The names directly below `prefix`, sorted."""
        ...

    def append_record(self, key: str, record: dict[str, Any]) -> None:
        """Add `record` to the log `key`; concurrent writers never lose or mix one."""
        ...

    def read_records(self, key: str) -> list[dict[str, Any]]:
        """Every record of the log `key`, oldest first ([] when there is none)."""
        ...

    def claim(self, key: str, data: Any) -> bool:
        """Create `key` holding JSON `data` only if it does not exist: True for the one
        caller that created it, False for every other."""
        ...

    def update_json(self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict:
        """Apply `change` to the JSON object at `key` (absent: {}) with no update lost to a
        concurrent writer; the new object."""
        ...

    def delete(self, prefix: str) -> None:
        """Remove the key `prefix`, or every key below it; a missing one is no error."""
        ...

    def newest_write(self, prefixes: list[str]) -> float:
        """The latest modification time (epoch seconds) of `prefixes` or any key below
        them (0.0: none): how the watchdog tells a live run from a stalled one."""
        ...


# --- the layout: the run-level keys (the stages' own are in scoring.stages.stage_files) ---
MANIFEST = "run.json"
LEDGER = "ledger.json"
BATCH_LEDGER = "ledger"
QUARANTINE = "quarantine.parquet"
STATS = "stats"
STAGES = "stages"
BATCHES = "batches"
CHUNKS = "chunks"
SCORES = "scores.parquet"
REPORT = "report.json"
REPORT_HTML = "report.html"
INPUT_COUNTS = "input_counts.json"
HEARTBEATS = "heartbeats"  # outside what prepare clears: a running prepare beats here too
EVENTS = "events"
WATCHDOG = "watchdog.json"
REQUEST = "request.json"

# what a new prepare removes (heartbeats, events, watchdog.json and request.json stay)
PREPARE_ARTEFACTS = (
    BATCHES,
    STAGES,
    CHUNKS,
    BATCH_LEDGER,
    STATS,
    MANIFEST,
    LEDGER,
    QUARANTINE,
    SCORES,
    REPORT,
    REPORT_HTML,
    INPUT_COUNTS,
)


def stat_key(name: str) -> str:
    return f"{STATS}/{name}.parquet"


def batch_key(index: int, name: str) -> str:
    """A batch's input slice: providers, provider_years or programs."""
    return f"{BATCHES}/{index:05d}/{name}.parquet"


def chunk_key(index: int) -> str:
    return f"{CHUNKS}/{index:05d}.parquet"


def batch_status_key(index: int) -> str:
    return f"{BATCH_LEDGER}/batch-{index:05d}.json"


def heartbeat_key(name: str) -> str:
    return f"{HEARTBEATS}/{name}.json"


def events_key(index: int) -> str:
    """A batch's event log: append-only, across every prepare (`RunStore.append_record`)."""
    return f"{EVENTS}/batch-{index:05d}"


# A run id is a plain name: task messages, volumes and the CLI all resolve it under a run
# root, so '../x' or '/abs' must never reach a path (prepare clears directories there).
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_run_id(run_id: str) -> str:
    """The run id, if it is a plain name; else a one-line error."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id) or ".." in run_id:
        msg = (
            f"run id {run_id!r} is not a plain name (letters, digits, '.', '_' and '-', "
            "at most 128, no '..'): a run id never names a path"
        )
        raise RunStateError(msg)
    return run_id


def share_key(source: RunPaths, target: RunPaths, key: str) -> None:
    """`key` of `source` in `target` too, read-only: a symbolic link between run directories
    (no copy), a server-side copy on one bucket, else the bytes read and written."""
    if source.url is None and target.url is None:
        link = target.root / key
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink((source.root / key).resolve(), link)
        return
    from_store, to_store = run_store(source), run_store(target)
    same_bucket = (
        isinstance(from_store, ObjectRunStore)
        and isinstance(to_store, ObjectRunStore)
        and from_store.bucket == to_store.bucket
    )
    if same_bucket:
        to_store.copy_within(from_store.object_key(key), key)  # type: ignore[union-attr]
        return
    to_store.put_bytes(key, from_store.read_bytes(key))


SOURCE = "source"  # a Postgres run's snapshot: a dataset inside the run


def source_dataset(paths: RunPaths) -> Path | str:
    """Where a run's Postgres snapshot lies: a directory of the run, or its URL."""
    return f"{paths.url}/{SOURCE}" if paths.url is not None else paths.root / SOURCE


def read_json_or(paths: RunPaths, key: str, default: Any) -> Any:
    """The run's JSON `key`, or `default` when it is absent."""
    store = run_store(paths)
    try:
        return store.read_json(key)  # torn or foreign: one RunFileError naming it
    except FileNotFoundError:  # RunFileMissingError too
        return default


def writable_run(paths: RunPaths) -> None:
    """The run's directory (or prefix) takes a file, or a one-line error: a wrong bucket or
    refused credentials fail here, before any work."""
    if paths.url is None:
        writable_run_dir(paths.root)
        return
    store = run_store(paths)
    probe = f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        store.put_bytes(probe, b"")
        store.delete(probe)
    except RunFileError as exc:
        msg = f"{paths.url}: the run cannot be written on the object store ({exc})"
        raise RunFileError(msg) from None


def writable_run_dir(root: Path) -> None:
    """Create the run directory and prove it takes a file, or fail in one line."""
    probe = root / f".probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        msg = f"{root}: the run directory cannot be created or written ({exc.strerror or exc})"
        raise RunFileError(msg) from None


@dataclass(frozen=True)
class RunPaths:
    """One run: where it lives (a directory, or an `s3://bucket/prefix/RUN` URL), and the
    path of each artefact (the store's keys under the root) for the I/O that is still
    path-based. An object-store run has no paths: asking one for a path is a RunStateError
    naming the caller's artefact, so nothing reads or writes a local file by mistake."""

    location: Path | str

    def __post_init__(self) -> None:
        if not is_url(self.location):
            object.__setattr__(self, "location", Path(self.location))
            return
        _bucket, prefix = split_url(str(self.location))
        if not prefix:  # a run is a prefix of a bucket: its siblings share the one above it
            msg = f"{self.location}: a run's URL names a bucket and a prefix (s3://bucket/RUN)"
            raise RunStateError(msg)

    @property
    def url(self) -> str | None:
        """The run's s3:// URL, or None for a run directory."""
        return str(self.location).rstrip("/") if is_url(self.location) else None

    @property
    def root(self) -> Path:
        if isinstance(self.location, Path):
            return self.location
        msg = (
            f"{self.location}: an object-store run has no local directory "
            "(this step reads its files by path: it must go through the run store)"
        )
        raise RunStateError(msg)

    @property
    def run_id(self) -> str:
        if isinstance(self.location, Path):
            return self.location.name
        return str(self.location).rstrip("/").rsplit("/", 1)[-1]

    @property
    def store(self) -> RunStore:
        return run_store(self)

    def where(self, key: str = "") -> str:
        """Where the run (or its `key`) lives, for messages: a path or a URL."""
        return self.store.location(key)

    def sibling(self, run_id: str) -> RunPaths:
        """Another run under the same run root."""
        checked_run_id(run_id)
        if self.url is not None:
            return RunPaths(f"{self.url.rsplit('/', 1)[0]}/{run_id}")
        return RunPaths(self.root.parent / run_id)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER

    @property
    def batch_ledger_dir(self) -> Path:
        return self.root / BATCH_LEDGER

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE

    @property
    def stats_dir(self) -> Path:
        return self.root / STATS

    @property
    def stages_dir(self) -> Path:
        """The prepare stages' files: the plan, the window, each task's directory."""
        return self.root / STAGES

    def stat(self, name: str) -> Path:
        return self.root / stat_key(name)

    def batch_dir(self, index: int) -> Path:
        return self.root / BATCHES / f"{index:05d}"

    def batch_provider_years(self, index: int) -> Path:
        return self.root / batch_key(index, "provider_years")

    def batch_providers(self, index: int) -> Path:
        return self.root / batch_key(index, "providers")

    def batch_programs(self, index: int) -> Path:
        return self.root / batch_key(index, "programs")

    def chunk(self, index: int) -> Path:
        return self.root / chunk_key(index)

    def batch_status(self, index: int) -> Path:
        return self.batch_ledger_dir / f"batch-{index:05d}.json"

    def batch_events(self, index: int) -> Path:
        """Append-only: one line per start and end of the batch, across every prepare."""
        return self.root / "events" / f"batch-{index:05d}.jsonl"

    @property
    def heartbeat_dir(self) -> Path:
        """Outside what prepare clears: a running prepare beats here too."""
        return self.root / "heartbeats"

    @property
    def watchdog(self) -> Path:
        """The watchdog's resumes of this run (kept across re-prepares)."""
        return self.root / "watchdog.json"

    @property
    def request(self) -> Path:
        """How the run was asked for (dataset, overrides, publish): lets resume re-send a start."""
        return self.root / "request.json"

    @property
    def scores(self) -> Path:
        return self.root / SCORES

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def input_counts(self) -> Path:
        return self.root / INPUT_COUNTS

    def clear(self) -> None:
        """Remove every artefact of an earlier prepare, so a reused directory starts clean."""
        store = run_store(self)
        for key in PREPARE_ARTEFACTS:
            store.delete(key)


def run_store(paths: RunPaths) -> RunStore:
    """The store of one run: the one place a backend is chosen."""
    if paths.url is not None:
        return ObjectRunStore(paths.url)
    return LocalRunStore(paths.root)


def new_run_id(suffix: str = "") -> str:
    """Sortable, unique run id: UTC time plus a random part (and an optional suffix)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}{suffix}"
