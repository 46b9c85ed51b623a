"""What every fleet task shares: Celery's reliability options, the run leases, the Redis
clients, retries with their own limit, and run ids resolved under the run root."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from scoring.config import Settings
from scoring.runs.ledger import RETRY_PENDING
from scoring.runs.retry_policy import final_types, transient_types
from scoring.runs.roots import run_at
from scoring.runs.store import (
    RunPaths,
)
from workers.app import backend_url, broker_url
from workers.lease import Lease, lease_key

_CFG = Settings()


RELIABLE: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": transient_types(),  # scoring.runs.retry_policy decides what is transient
    "dont_autoretry_for": final_types(),
    "retry_backoff": True,
    "retry_backoff_max": _CFG.retry_backoff_max,
    "retry_jitter": True,
    "max_retries": _CFG.task_max_retries,
}


LEASE_WAITS = 120  # retries of a start/merge whose lease a live holder keeps renewing


def redis_client() -> redis.Redis:
    """Where leases live (the result backend's Redis)."""
    return redis.Redis.from_url(backend_url(), socket_timeout=10)


def broker_client() -> redis.Redis:
    """Where the task messages are (the broker's Redis, which may be another server)."""
    return redis.Redis.from_url(broker_url(), socket_timeout=10)


def retry_later(task: Any, countdown: float, limit: int) -> Exception:
    """task.retry with its own limit, without leaking it: Celery 5.7 stores max_retries on
    the task object (Task.retry sets override_max_retries) and autoretry removes it only
    after an autoretry, so the next task in this process would inherit the limit."""
    try:
        return task.retry(countdown=countdown, max_retries=limit)
    finally:
        if hasattr(task, "override_max_retries"):
            delattr(task, "override_max_retries")


def run_lease(run_id: str, purpose: str) -> Lease:
    """The run's lease for `purpose`: one start and one merge/publish at a time, and a
    holder that dies gives it up within `lease_seconds` (workers.lease)."""
    return Lease(redis_client(), run_id, purpose, Settings().lease_seconds)


def take_lease(task: Any, run_id: str, purpose: str) -> Lease | str:
    """The run's lease for `purpose`, or a retry of `task` while a holder renews it (a dead
    holder's lease lapses meanwhile); after LEASE_WAITS, the live holder's name."""
    lease = run_lease(run_id, purpose)
    if lease.acquire():
        return lease
    if task.request.retries < LEASE_WAITS:
        raise retry_later(task, lease.seconds / 2, LEASE_WAITS)
    return Lease.holder(lease.client, lease.key) or "?"


def lease_holders(client: redis.Redis, run_id: str) -> dict[str, str | None]:
    """Who holds the run's start and merge leases (None: nobody)."""
    return {p: Lease.holder(client, lease_key(run_id, p)) for p in ("start", "merge")}


@contextmanager
def retries_pending(task: Any) -> Iterator[None]:
    """While this task will be retried, a retryable failure is not yet the run's failure."""
    token = RETRY_PENDING.set(task.request.retries < (task.max_retries or 0))
    try:
        yield
    finally:
        RETRY_PENDING.reset(token)


def run_paths(run_id: str) -> RunPaths:
    """Every worker resolves a run id under the shared run root (CLAIDEX_RUN_ROOT); a run id
    from a message is checked first, so no message can point a task outside it."""
    return run_at(Settings().run_root, run_id)
