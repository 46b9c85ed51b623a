"""Leases: Redis locks that die with their holder.

A lease is a redis-py Lock with a short TTL that a daemon thread in the holder renews
every third of the TTL. A holder killed with -9 stops renewing, so its lease expires
within `lease_seconds` and a redelivered task can take over; a live holder keeps it
however long its step runs. The token names the holder (host, pid) and is checked on
every renewal and on release (redis-py's Lua scripts), so a holder whose lease expired
never releases or extends the next holder's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from typing import Any

import redis
from celery.utils.log import get_task_logger
from redis.exceptions import LockError, RedisError

log = get_task_logger(__name__)


def lease_key(run_id: str, purpose: str) -> str:
    return f"claidex:{purpose}:{run_id}"


class Lease:
    """One run's lease for one purpose ('start', 'merge'); renewed while held."""

    def __init__(self, client: redis.Redis, run_id: str, purpose: str, seconds: float) -> None:
        self.client = client
        self.key = lease_key(run_id, purpose)
        self.seconds = seconds
        # thread_local=False: the renewal thread must see the token the task thread took.
        self.lock = client.lock(self.key, timeout=seconds, thread_local=False)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lease, waiting up to `wait` s for a holder to release it or die."""
        got = self.lock.acquire(
            blocking=wait > 0, blocking_timeout=wait or None, token=self.token, sleep=0.25
        )
        if got:
            self._thread = threading.Thread(target=self._renew, name=self.key, daemon=True)
            self._thread.start()
        return bool(got)

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.lock.reacquire()
            except LockError:
                # The key is gone (a Redis restart without persistence, or an expiry while
                # Redis was unreachable): take it back unless another holder has it now.
                try:
                    taken = self.client.set(
                        self.key, self.token, nx=True, px=int(self.seconds * 1000)
                    )
                except RedisError:
                    continue  # still unreachable: try again on the next tick
                if not taken:
                    self.lost = True
                    log.error("lease %s lost to another holder", self.key)
                    return
            except RedisError:
                continue  # Redis unreachable: keep trying; nobody else can take it meanwhile

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.seconds)
        if self.lost:
            return
        with contextlib.suppress(LockError, RedisError):  # expired or Redis gone: it lapses
            self.lock.release()

    @staticmethod
    def holder(client: redis.Redis, key: str) -> str | None:
        """The live holder's token ('host:pid:nonce'), or None when nobody holds the lease."""
        value = client.get(key)
        return value.decode() if isinstance(value, bytes) else value

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
