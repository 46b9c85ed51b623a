"""The run store on S3 or an S3-compatible server (`s3://bucket/prefix`).

Object storage has no rename, no O_EXCL and no append, and the last writer wins. So:
- every file is one PUT of its whole bytes (readers see the old object or the new one);
  outputs are write-once keys or rewrites of the same bytes (the run is deterministic);
- a claim is a conditional create (`If-None-Match: *`), taken by exactly one caller;
- mutable JSON (the ledger) is a compare-and-swap loop (`If-Match: <etag>`), so concurrent
  writers lose no update;
- Parquet is read by polars' own object-store reader (ranged GETs: one bucket of a bucketed
  file fetches only its row groups); everything else by obstore. Both are Rust's
  `object_store`, configured from the same settings.

Every feature above was checked against SeaweedFS (tests/storage). Credentials and the
endpoint come from the standard AWS variables only (`s3_settings`); no message names them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import cache
from typing import Any

import obstore
import polars as pl
from obstore.exceptions import (
    AlreadyExistsError,
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

from scoring.errors import (
    RunFileError,
    RunFileMissingError,
    RunStateError,
    StoreUnreachableError,
)
from scoring.location import SCHEME, is_url
from scoring.runs.records import json_text, parse_json, parse_record

# the standard AWS variables, and nothing else (issue 25): lower-cased, they are also the
# config keys of Rust's object_store, which polars and obstore both use
S3_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
)


def s3_settings() -> dict[str, str]:
    """The object-store settings from the environment (polars' `storage_options`)."""
    found = {name.lower(): os.environ[name] for name in S3_VARIABLES if os.environ.get(name)}
    found.setdefault("aws_region", "us-east-1")
    return found


def polars_options() -> dict[str, Any]:
    """`s3_settings` plus polars' own retry settings (its keys, polars/io/cloud/_utils.py),
    so its reads ride out a restart for as long as obstore's requests do."""
    window_ms = int(_outage_window() * 1000)
    return {
        **s3_settings(),
        "max_retries": 1000,
        "retry_timeout_ms": window_ms,
        "retry_init_backoff_ms": 100,
        "retry_max_backoff_ms": 5000,
    }


def split_url(url: str) -> tuple[str, str]:
    """('bucket', 'prefix/without/slashes') of an s3:// URL; a malformed one is one line."""
    rest = url[len(SCHEME) :].rstrip("/") if is_url(url) else ""
    bucket, _, prefix = rest.partition("/")
    segments = prefix.split("/") if prefix else []
    if (
        not bucket
        or any(ord(c) < 32 or c == "\x7f" for c in url)  # newlines, tabs, other controls
        or any(p in ("", ".", "..") for p in segments)  # 'a//b', '.', '..'
    ):
        msg = f"{url!r} is not an s3://bucket/prefix URL (no empty, '.' or '..' part)"
        raise RunStateError(msg)
    return bucket, prefix


def join_url(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts if p)])


@cache
def _client(bucket: str, settings: tuple[tuple[str, str], ...], outage: float) -> S3Store:
    """One client per bucket and settings (a process reuses its connections). A restarted
    or unreachable server is retried with backoff for `outage` seconds (object_store
    retries connection errors and 5xx answers, for every request kind)."""
    retry = {
        "max_retries": 1000,
        "retry_timeout": timedelta(seconds=outage),
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=5),
        },
    }
    try:
        return S3Store(bucket, config=dict(settings), retry_config=retry)  # type: ignore[arg-type]
    except Exception as exc:  # e.g. a key id without its secret: one line, no value shown
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        given = ", ".join(sorted(k.upper() for k, _ in settings)) or "none"
        msg = f"s3://{bucket}: cannot open the object store: {first} (AWS variables set: {given})"
        raise RunFileError(msg) from None


@cache
def _outage_window() -> float:
    from scoring.config import load_settings  # read once a process (~15 ms a read)

    return load_settings().s3_outage_window


_USED_IN_PID: list[int] = []  # the process whose S3 runtime is live


def _refuse_after_fork() -> None:
    """object_store's runtime does not survive fork (a request from a forked child hangs,
    a fresh client included): a child of a process that used S3 gets a clear error
    instead. Every pool of ours spawns; this catches one that does not."""
    if _USED_IN_PID and _USED_IN_PID[0] != os.getpid():
        msg = (
            "this process was forked from one that had used the object store; its client "
            "cannot be used here (start worker processes with spawn, or touch S3 only "
            "after the fork)"
        )
        raise RunStateError(msg)


def bucket_client(bucket: str) -> S3Store:
    _refuse_after_fork()
    if not _USED_IN_PID:
        _USED_IN_PID.append(os.getpid())
    return _client(bucket, tuple(sorted(s3_settings().items())), _outage_window())


def unreachable(where: str, exc: Exception) -> RunFileError | StoreUnreachableError:
    """An S3 error as one line naming the object (the library's text names no secret, but
    its debug form may carry headers: only the first line is kept). Refused credentials or
    a bad request are final; anything else (the retries of the outage window spent on a
    dead or restarting server) is transient: the run's retry rules take it from there."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    line = f"{where}: {type(exc).__name__}: {first[:300]}"
    if isinstance(exc, FileNotFoundError | NotFoundError):
        return RunFileMissingError(f"{where}: no such object")
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError | InvalidPathError):
        return RunFileError(line)
    if not os.environ.get("AWS_ACCESS_KEY_ID") and "169.254.169.254" in str(exc):
        # no key in the environment: object_store asked the instance metadata service
        msg = (
            f"{where}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(and AWS_REGION; AWS_ENDPOINT_URL for a server other than AWS)"
        )
        return RunFileError(msg)
    if not isinstance(exc, ObstoreError | OSError):  # a bad path, a bug: no outage to wait out
        return RunFileError(line)
    window = _outage_window()
    return StoreUnreachableError(f"{line} (object store unreachable for {window:g} s)")


class ObjectRunStore:
    """A run store whose keys live under one `s3://bucket/prefix` (the run's URL)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = split_url(self.url)
        self.client = bucket_client(self.bucket)

    def object_key(self, key: str) -> str:
        parts = key.split("/") if key else []
        if key.startswith("/") or ".." in parts or "" in parts:
            msg = f"{key!r} is not a run-store key (relative, '/'-separated, no '..')"
            raise RunStateError(msg)
        return "/".join(p for p in (self.prefix, key) if p)

    def location(self, key: str) -> str:
        return join_url(self.url, key)

    # --- bytes -------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            obstore.put(self.client, self.object_key(key), data)
        except Exception as exc:
            raise unreachable(self.location(key), exc) from exc

    def read_bytes(self, key: str) -> bytes:
        try:
            return bytes(obstore.get(self.client, self.object_key(key)).bytes())
        except Exception as exc:  # NotFoundError: RunFileMissingError, a FileNotFoundError
            raise unreachable(self.location(key), exc) from exc

    # --- frames ------------------------------------------------------------------------
    def write_frame(self, key: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        self.put_bytes(key, buffer.getvalue())

    def read_frame(self, key: str) -> pl.DataFrame:
        data = self.read_bytes(key)  # an outage: StoreUnreachableError, transient
        try:
            return pl.read_parquet(io.BytesIO(data))
        except pl.exceptions.PolarsError as exc:
            msg = f"{self.location(key)}: cannot read ({type(exc).__name__}: {exc})"
            raise RunFileError(msg) from exc

    def scan_frame(self, key: str) -> pl.LazyFrame:
        """Lazy: polars fetches only the row groups and columns a query needs."""
        return pl.scan_parquet(self.location(key), storage_options=polars_options(), glob=False)

    def write_bucketed(
        self, key: str, frame: pl.DataFrame, bucket: str, compression: str = "lz4"
    ) -> None:
        from scoring.runs.local_store import bucketed_parquet  # one layout for both stores

        self.put_bytes(key, bucketed_parquet(frame, bucket, compression, self.location(key)))

    def read_bucket(
        self, keys: list[str], bucket: str, value: int, columns: list[str] | None = None
    ) -> pl.DataFrame:
        urls = [self.location(k) for k in keys]
        try:
            frame = pl.scan_parquet(urls, storage_options=polars_options(), glob=False)
            frame = frame.filter(pl.col(bucket) == value).drop(bucket)
            return (frame.select(columns) if columns else frame).collect()
        except (OSError, pl.exceptions.PolarsError) as exc:
            names = f"{urls[0]} .. ({len(urls)} files)" if len(urls) > 1 else urls[0]
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            msg = f"{names}: cannot read ({type(exc).__name__}: {first})"
            if isinstance(exc, OSError) or "connect" in first.lower():  # the server, not a file
                window = _outage_window()
                raise StoreUnreachableError(
                    f"{msg} (object store unreachable for {window:g} s)"
                ) from exc
            raise RunFileError(msg) from exc

    # --- JSON and text -----------------------------------------------------------------
    def write_json(self, key: str, data: Any) -> None:
        self.write_text(key, json_text(data))

    def read_json(self, key: str) -> Any:
        return parse_json(self.read_bytes(key), self.location(key))

    def write_text(self, key: str, text: str) -> None:
        self.put_bytes(key, text.encode())

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    # --- existence and listing ---------------------------------------------------------
    def exists(self, key: str) -> bool:
        try:
            obstore.head(self.client, self.object_key(key))
        except (FileNotFoundError, NotFoundError):
            return False
        except Exception as exc:
            raise unreachable(self.location(key), exc) from exc
        return True

    def _keys_below(self, prefix: str) -> list[str]:
        below = self.object_key(prefix) if prefix else self.prefix
        start = f"{below}/" if below else ""
        try:
            found = [o["path"] for chunk in obstore.list(self.client, prefix=start) for o in chunk]
        except Exception as exc:
            raise unreachable(self.location(prefix), exc) from exc
        cut = len(self.prefix) + 1 if self.prefix else 0
        # a zero-byte 'folder/' marker (the S3 console's "Create folder") is no key
        return sorted(path[cut:] for path in found if not path.endswith("/") and path != below)

    def list_keys(self, prefix: str, name: str) -> list[str]:
        return [k for k in self._keys_below(prefix) if k.rsplit("/", 1)[-1] == name]

    def list_names(self, prefix: str) -> list[str]:
        """The names directly below `prefix` (objects and 'folders'), sorted."""
        below = self.object_key(prefix) if prefix else self.prefix
        start = f"{below}/" if below else ""
        try:
            found = obstore.list_with_delimiter(self.client, prefix=start)
        except Exception as exc:
            raise unreachable(self.location(prefix), exc) from exc
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]
        names += [  # not the 'folder/' marker object of the prefix itself
            o["path"].rsplit("/", 1)[-1]
            for o in found["objects"]
            if not o["path"].endswith("/") and o["path"] != start.rstrip("/")
        ]
        return sorted(set(n for n in names if n))

    def append_record(self, key: str, record: dict[str, Any]) -> None:
        """No append on S3: each record is an object of its own under `key`/, named so that
        a listing gives them in time order (a write-once record per event)."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        self.put_bytes(f"{key}/{name}", json.dumps(record).encode())

    def read_records(self, key: str) -> list[dict[str, Any]]:
        """Foreign objects under `key` are skipped, as a torn line of a local log is."""
        found = []
        for k in self._keys_below(key):
            with contextlib.suppress(ValueError, RunFileMissingError):
                record = json.loads(self.read_bytes(k))
                if isinstance(record, dict):
                    found.append(record)
        return found

    # --- claims and compare-and-swap ---------------------------------------------------
    def claim(self, key: str, data: Any) -> bool:
        """A conditional create carrying a nonce of this call: when the answer to our own
        create is lost and object_store retries it, the server says 'exists', and the
        nonce read back tells that the object is ours after all."""
        nonce = uuid.uuid4().hex
        body = json_text({**data, "claim_nonce": nonce}).encode()
        try:
            obstore.put(self.client, self.object_key(key), body, mode="create")
        except (AlreadyExistsError, PreconditionError):  # 412 from some servers
            try:
                held = parse_json(self.read_bytes(key), self.location(key))
            except RunFileError:
                return False
            return isinstance(held, dict) and held.get("claim_nonce") == nonce
        except Exception as exc:
            raise unreachable(self.location(key), exc) from exc
        return True

    def update_json(self, key: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict:
        """Read, change, write back only if nobody wrote in between (If-Match on the etag;
        If-None-Match for a new object); else read again and re-apply `change`."""
        where = self.location(key)
        for attempt in range(1000):
            try:
                got = obstore.get(self.client, self.object_key(key))
                etag, current = got.meta["e_tag"], parse_record(bytes(got.bytes()), where)
            except (FileNotFoundError, NotFoundError):
                etag, current = None, {}
            except Exception as exc:
                raise unreachable(where, exc) from exc
            new = change(dict(current))
            mode: Any = "create" if etag is None else {"e_tag": etag}
            try:
                obstore.put(self.client, self.object_key(key), json_text(new).encode(), mode=mode)
            except (AlreadyExistsError, PreconditionError):
                time.sleep(min(0.2, 0.005 * (attempt + 1)))  # another writer won: again
                continue
            except Exception as exc:
                raise unreachable(where, exc) from exc
            return new
        msg = f"{where}: 1000 concurrent updates in a row lost the race"
        raise RunStateError(msg)

    def copy_within(self, object_key: str, key: str) -> None:
        """A server-side copy of `object_key` (of this bucket) to `key` (S3 CopyObject)."""
        try:
            obstore.copy(self.client, object_key, self.object_key(key))
        except Exception as exc:
            raise unreachable(self.location(key), exc) from exc

    def newest_write(self, prefixes: list[str]) -> float:
        """The key itself by HEAD (a listing's prefix is whole path segments: it never
        returns the object named by the prefix), and what lies below it by a listing."""
        newest = 0.0
        for prefix in prefixes:
            below = self.object_key(prefix)
            try:
                with contextlib.suppress(FileNotFoundError, NotFoundError):
                    meta = obstore.head(self.client, below)
                    newest = max(newest, meta["last_modified"].timestamp())
                for chunk in obstore.list(self.client, prefix=f"{below}/"):
                    for meta in chunk:
                        newest = max(newest, meta["last_modified"].timestamp())
            except Exception as exc:
                raise unreachable(self.location(prefix), exc) from exc
        return newest

    def delete(self, prefix: str) -> None:
        if not prefix:
            msg = f"{self.url}: refusing to delete the whole run store"
            raise RunStateError(msg)
        keys = ([prefix] if self.exists(prefix) else []) + self._keys_below(prefix)
        try:
            for start in range(0, len(keys), 1000):
                batch = [self.object_key(k) for k in keys[start : start + 1000]]
                obstore.delete(self.client, batch)
        except (FileNotFoundError, NotFoundError):
            pass
        except Exception as exc:
            raise unreachable(self.location(prefix), exc) from exc
