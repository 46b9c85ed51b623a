"""Ride out a database outage for a configured window, visibly, instead of failing at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg

from scoring.db.connection import DatabaseError, DatabaseUnavailableError
from scoring.ledger import RunLedger

T = TypeVar("T")
BACKOFF_MAX = 15.0  # s between attempts, at most


# A server that answers and refuses (credentials, pg_hba, a missing database) is no outage:
# waiting would not change its answer (libpq's messages, as psycopg passes them on).
REFUSALS = ("password authentication failed", "no pg_hba.conf entry", "does not exist")


class OutageError(DatabaseError):
    """The database stayed unreachable for the whole window: final, not retried again."""


# SQLSTATEs of a server going away: connection exceptions (class 08), shutdowns, restarts.
OUTAGE_STATES = ("57P01", "57P02", "57P03")


def is_outage(exc: BaseException) -> bool:
    """A lost or refused connection, not a query that failed (DiskFull, a deadlock)."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in OUTAGE_STATES


def refused_us(exc: BaseException) -> bool:
    return any(text in str(exc) for text in REFUSALS)


def db_outage(exc: BaseException) -> bool | None:
    """True: an outage to ride out; False: fail now; None: not a database error at all."""
    if not isinstance(exc, DatabaseUnavailableError | psycopg.OperationalError):
        return None
    return not refused_us(exc) and is_outage(exc)


def through_outage(
    action: Callable[[], T],
    *,
    ledger: RunLedger,
    step: str,
    window: float,
    judge: Callable[[BaseException], bool | None] = db_outage,
    what: str = "database",
    gave_up: Callable[[str], Exception] = OutageError,
) -> T:
    """Run `action`, retrying while the database (or, with `judge`, another server) is
    unreachable, for up to `window` s.

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
            verdict = judge(exc)
            if verdict is None:
                raise
            waited = time.monotonic() - started
            if window <= 0 or not verdict:
                raise  # no window, a server that says no, or a query error (disk, deadlock)
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
