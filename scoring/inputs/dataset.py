"""Where an input dataset lies: a directory, or an `s3://bucket/prefix` (issue 25).

The input contract lists, sizes and scans a dataset's files through these few functions,
so it reads the same tables, and names the same files in its errors, from either place.
A file is a `Path` or an `s3://` URL string."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import obstore
import polars as pl

from scoring.errors import RunFileMissingError
from scoring.runs.object_store import (
    bucket_client,
    is_url,
    join_url,
    polars_options,
    split_url,
    unreachable,
)

DataSource = Path | str  # a directory, or an s3:// URL
DataFile = Path | str


def data_source(value: DataSource) -> DataSource:
    """A dataset location as given: an s3:// URL kept (no trailing '/'), a path made absolute."""
    if is_url(value):
        split_url(str(value))  # a malformed URL is one line here
        return str(value).rstrip("/")
    return Path(value).resolve()


def child(folder: DataSource, name: str) -> DataFile:
    return join_url(str(folder), name) if is_url(folder) else Path(folder) / name


def name_of(file: DataFile) -> str:
    return str(file).rstrip("/").rsplit("/", 1)[-1] if is_url(file) else Path(file).name


def _object(file: str) -> tuple[obstore.store.S3Store, str]:
    bucket, key = split_url(file)
    return bucket_client(bucket), key


@contextmanager
def _s3(where: DataFile) -> Iterator[None]:
    """An S3 failure as the run store words it: one line naming the object; an outage
    past CLAIDEX_S3_OUTAGE_WINDOW transient, refused credentials final."""
    try:
        yield
    except Exception as exc:
        raise unreachable(str(where), exc) from None


def is_file(file: DataFile) -> bool:
    if not is_url(file):
        return Path(file).is_file()
    client, key = _object(str(file))
    try:
        with _s3(file):
            obstore.head(client, key)
    except RunFileMissingError:
        return False
    return True


def entries(folder: DataSource) -> list[tuple[DataFile, bool]]:
    """(file, is a directory) directly in `folder`, sorted by name; [] when it is no folder."""
    if not is_url(folder):
        path = Path(folder)
        return [(p, p.is_dir()) for p in sorted(path.iterdir())] if path.is_dir() else []
    client, key = _object(str(folder))
    with _s3(folder):
        listed = obstore.list_with_delimiter(client, prefix=f"{key}/" if key else "")
    found: list[tuple[DataFile, bool]] = [
        (child(folder, p.rstrip("/").rsplit("/", 1)[-1]), True) for p in listed["common_prefixes"]
    ]
    found += [  # not a zero-byte 'folder/' marker (the S3 console's "Create folder")
        (child(folder, o["path"].rsplit("/", 1)[-1]), False)
        for o in listed["objects"]
        if not o["path"].endswith("/") and o["path"] != key
    ]
    return sorted(found, key=lambda entry: name_of(entry[0]))


def is_dir(folder: DataSource) -> bool:
    """A directory; on S3, a prefix holding at least one object."""
    if not is_url(folder):
        return Path(folder).is_dir()
    return bool(entries(folder))


def scan(file: DataFile | list[DataFile]) -> pl.LazyFrame:
    """One file, or several of one schema as one scan (one kind: all paths or all URLs)."""
    files = file if isinstance(file, list) else [file]
    if is_url(files[0]):
        urls = [str(f) for f in files]
        return pl.scan_parquet(urls, storage_options=polars_options(), glob=False)
    return pl.scan_parquet([Path(f) for f in files], glob=False)


def schema(file: DataFile) -> pl.Schema:
    """The columns from the footer alone."""
    if is_url(file):
        return scan(file).collect_schema()
    return pl.Schema(pl.read_parquet_schema(Path(file)))


def row_count(file: DataFile) -> int:
    """Rows from the footer alone (pyarrow reads a local footer ~15x faster than a scan)."""
    if is_url(file):
        return int(scan(file).select(pl.len()).collect().item())
    import pyarrow.parquet as pq

    return int(pq.read_metadata(Path(file)).num_rows)


def size(file: DataFile) -> int:
    if not is_url(file):
        return Path(file).stat().st_size
    client, key = _object(str(file))
    with _s3(file):
        return int(obstore.head(client, key)["size"])


def put_file(target: DataFile, local: Path) -> None:
    """`local` (a finished file) as `target`, whole or not at all: renamed into place beside
    it on a filesystem, one PUT (multipart for a large file) on S3."""
    if not is_url(target):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            os.replace(local, tmp)  # the scratch's file itself, when on the same filesystem
        except OSError:
            shutil.copyfile(local, tmp)
        os.replace(tmp, path)
        return
    client, key = _object(str(target))
    with _s3(target):
        obstore.put(client, key, local)


def tail(file: DataFile, length: int) -> bytes:
    """The last `length` bytes (a Parquet footer with its statistics)."""
    total = size(file)
    start = max(0, total - length)
    if not is_url(file):
        with Path(file).open("rb") as handle:
            handle.seek(start)
            return handle.read()
    client, key = _object(str(file))
    with _s3(file):
        return bytes(obstore.get_range(client, key, start=start, end=total)) if total else b""
