"""Where data lives: a local path, or an `s3://bucket/prefix` URL. No heavy imports: the
enqueue command line resolves its --data with this before anything else loads."""

from __future__ import annotations

from pathlib import Path

SCHEME = "s3://"


def is_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(SCHEME)


def resolved(location: str | Path) -> str:
    """An s3:// URL as given (no trailing '/'), a path made absolute: as messages carry it."""
    if is_url(location):
        return str(location).rstrip("/")
    return str(Path(location).resolve())
