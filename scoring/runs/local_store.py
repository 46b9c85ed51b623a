"""The run store on a local filesystem (a local path, a compose volume, the Modal volume).

Every write is write-then-rename, so a reader sees the old file or the whole new one and a
killed writer leaves only a hidden temporary; a claim is a hard link of a finished file, so
it is created once, whole. Errors name the file by its path, as every message did before
the store existed. The free functions are the same operations on paths, for what is still
path-based (see scoring.runs.store)."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from scoring.errors import RunFileError, RunStateError
from scoring.runs.records import json_text, parse_json, parse_record


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write then rename: readers see the old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    df.write_parquet(tmp, compression="zstd", statistics=True)
    os.replace(tmp, path)


BUCKET_ROW_GROUP = 1 << 16  # rows: a bucket of a seed shard (~180 k rows) spans a few


def bucketed_parquet(df: pl.DataFrame, bucket: str, compression: str, where: str) -> bytes:
    """The rows sorted by `bucket` (stable: source order kept within each), in row groups
    of BUCKET_ROW_GROUP rows with statistics: one file per writer for all buckets, and a
    reader of one bucket decodes only the row groups whose statistics hold it
    (`read_buckets`). Polars' own writer, lz4: 0.46 s for a seed shard's 2.9 M payment
    rows where a pyarrow row group per bucket took 1.2 s (uncompressed; the same file size
    as lz4 here, since lz4 spares the bytes that dictionaries spared there)."""
    if df[bucket].null_count():  # a row no bucket read would ever return
        msg = f"{where}: {df[bucket].null_count()} row(s) without a {bucket}"
        raise RunStateError(msg)
    buffer = io.BytesIO()
    codec = "uncompressed" if compression == "none" else compression
    df.sort(bucket, maintain_order=True).write_parquet(
        buffer, compression=codec, statistics=True, row_group_size=BUCKET_ROW_GROUP
    )
    return buffer.getvalue()


def write_bucketed_atomic(
    df: pl.DataFrame, path: Path, bucket: str, compression: str = "lz4"
) -> None:
    """`bucketed_parquet`, written then renamed into place."""
    data = bucketed_parquet(df, bucket, compression, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_buckets(
    files: list[Path], bucket: str, value: int, columns: list[str] | None = None
) -> pl.DataFrame:
    """The rows of one bucket of several `write_bucketed_atomic` files, in file order, without
    the bucket column; any failure names the files. One polars scan reads every footer and
    decodes only the row groups whose statistics hold `value` (64 files a task: 3x faster
    than a pyarrow open per file)."""
    try:
        frame = pl.scan_parquet(files, glob=False).filter(pl.col(bucket) == value).drop(bucket)
        return (frame.select(columns) if columns else frame).collect()
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise RunFileError(_unreadable(files, exc)) from exc


def _unreadable(files: list[Path], exc: Exception) -> str:
    """The first of `files` that is not readable Parquet of the first one's schema; else the
    scan's own error (the failure path only: a footer read per file)."""
    schema = None
    for path in files:
        try:
            found = pl.scan_parquet(path, glob=False).collect_schema()
        except (OSError, pl.exceptions.PolarsError) as err:
            return f"{path}: cannot read ({type(err).__name__}: {err})"
        if schema is not None and found != schema:
            return f"{path}: its columns {dict(found)} differ from {files[0]}'s {dict(schema)}"
        schema = found
    return f"{files[0].parent.parent}/*/{files[0].name}: cannot read ({type(exc).__name__}: {exc})"


def write_text_atomic(text: str, path: Path) -> None:
    """Text twin of write_parquet_atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(data: Any, path: Path) -> None:
    """JSON twin of write_parquet_atomic."""
    write_text_atomic(json_text(data), path)


def read_parquet_named(path: Path) -> pl.DataFrame:
    """Read a run-directory file; any failure names the file."""
    try:
        return pl.read_parquet(path, glob=False)  # a run root may hold '*' or '['
    except (OSError, pl.exceptions.PolarsError) as exc:
        msg = f"{path}: cannot read ({type(exc).__name__}: {exc})"
        raise RunFileError(msg) from exc


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class LocalRunStore:
    """A run store whose keys are relative paths under one directory (`root`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file of `key` (for messages, and for the I/O that is still path-based)."""
        parts = key.split("/")
        if key.startswith("/") or ".." in parts or "" in parts[:-1]:
            msg = f"{key!r} is not a run-store key (relative, '/'-separated, no '..')"
            raise RunStateError(msg)
        return self.root / key if key else self.root

    def location(self, key: str) -> str:
        return str(self.path(key))

    def write_frame(self, key: str, frame: pl.DataFrame) -> None:
        write_parquet_atomic(frame, self.path(key))

    def read_frame(self, key: str) -> pl.DataFrame:
        return read_parquet_named(self.path(key))

    def scan_frame(self, key: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.path(key), glob=False)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_sibling(path)
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def read_text(self, key: str) -> str:
        return self.path(key).read_text()

    def write_bucketed(
        self, key: str, frame: pl.DataFrame, bucket: str, compression: str = "lz4"
    ) -> None:
        write_bucketed_atomic(frame, self.path(key), bucket, compression)

    def read_bucket(
        self, keys: list[str], bucket: str, value: int, columns: list[str] | None = None
    ) -> pl.DataFrame:
        return read_buckets([self.path(k) for k in keys], bucket, value, columns)

    def write_json(self, key: str, data: Any) -> None:
        write_json_atomic(data, self.path(key))

    def read_json(self, key: str) -> Any:
        path = self.path(key)
        return parse_json(path.read_bytes(), str(path))

    def write_text(self, key: str, text: str) -> None:
        write_text_atomic(text, self.path(key))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list_keys(self, prefix: str, name: str) -> list[str]:
        """Every key below `prefix` whose last part is `name`, sorted. A walk, not a glob:
        a root holding '*' or '[' lists only its own files."""
        found = []
        for folder, _dirs, files in os.walk(self.path(prefix)):
            if name in files:
                relative = Path(folder, name).relative_to(self.root)
                found.append(relative.as_posix())
        return sorted(found)

    def list_names(self, prefix: str) -> list[str]:
        """The names directly below `prefix` (files and directories), sorted."""
        try:
            return sorted(p.name for p in self.path(prefix).iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def append_record(self, key: str, record: dict[str, Any]) -> None:
        """A line of `key`.jsonl: O_APPEND, so concurrent writers never interleave a line."""
        path = self.path(f"{key}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_records(self, key: str) -> list[dict[str, Any]]:
        """Torn or foreign lines (a writer killed mid-line) are skipped, not fatal."""
        try:
            text = self.path(f"{key}.jsonl").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [r for r in map(_json_object, text.splitlines()) if r is not None]

    def update_json(self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict:
        """Read, change and write back under an exclusive lock (flock of a sibling lock file),
        so concurrent writers on this filesystem lose no update. Best effort: a filesystem
        without locks (some network volumes) goes unlocked."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.stem}.lock"), "a") as handle:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = parse_record(path.read_bytes(), str(path))
            except FileNotFoundError:
                current = {}
            new = change(current)
            write_json_atomic(new, path)
        return new

    def claim(self, key: str, data: Any) -> bool:
        """Create `key` holding `data` unless it exists: True for the one caller that made
        it. The finished file is hard-linked into place, so no reader sees it half-written."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_sibling(path)
        tmp.write_text(json_text(data))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: O_EXCL (a reader may see it empty)
            try:
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(handle, "w") as out:
                out.write(json_text(data))
        finally:
            tmp.unlink()
        return True

    def newest_write(self, prefixes: list[str]) -> float:
        newest = 0.0
        for prefix in prefixes:
            path = self.path(prefix)
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, path.stat().st_mtime)
                if path.is_dir():  # a folder's own time moves when an entry is added
                    for entry in path.iterdir():
                        with contextlib.suppress(FileNotFoundError):
                            newest = max(newest, entry.stat().st_mtime)
        return newest

    def delete(self, prefix: str) -> None:
        """Remove `prefix`: one key, or every key below it; nothing there is no error."""
        if not prefix:
            msg = f"{self.root}: refusing to delete the whole run store"
            raise RunStateError(msg)
        path = self.path(prefix)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
