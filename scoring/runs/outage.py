"""Ride out a database outage for a configured window, visibly, instead of failing at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from scoring.db.connection import DatabaseError
from scoring.runs.ledger import RunLedger
from scoring.runs.retry_policy import is_outage

T = TypeVar("T")
BACKOFF_MAX = 15.0  # s between attempts, at most


class OutageError(DatabaseError):
    """The database stayed unreachable for the whole window: final, not retried again."""


def through_outage(
    action: Callable[[], T],
    *,
    ledger: RunLedger,
    step: str,
    window: float,
    what: str = "database",
    gave_up: Callable[[str], Exception] = OutageError,
) -> T:
    """Run `action`, retrying while the database (or Neo4j) is unreachable -- what the retry
    policy calls an OUTAGE -- for up to `window` s.

    Each wait is recorded in the ledger (`retrying`), so `status` and followers see a
    publish that waits for Postgres, not a failed run; only the end of the window fails.
    `window` 0 (an interactive command): one attempt, its error unchanged.
    """
    started = time.monotonic()
    delay = 0.5
    while True:
        try:
            result = action()
        except Exception as exc:
            if window <= 0 or not is_outage(exc):
                raise  # no window, a server that says no, or a query error (disk, deadlock)
            waited = time.monotonic() - started
            if waited + delay > window:
                msg = f"{what} unreachable for {waited:.0f} s (window {window:.0f} s): {exc}"
                raise gave_up(msg) from None
            until = datetime.now(UTC) + timedelta(seconds=window - waited)
            ledger.update(
                retrying={
                    "step": step,
                    "error": str(exc).splitlines()[0][:300],
                    "since_s": round(waited, 1),
                    "until": until.isoformat(timespec="seconds"),
                }
            )
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        if ledger.read().get("retrying"):
            ledger.update(retrying=None)
        return result
