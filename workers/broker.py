"""What the broker still holds for a run: queued and delivered-but-unacked task messages.

Reads kombu's Redis transport layout (kombu 5.7, kombu/transport/redis.py): a queue is
a list named after it, one more list per priority step (`<queue>\\x06\\x16<pri>`); a
message delivered to a worker and not yet acked sits in the `unacked` hash (value
`[message, exchange, routing_key]`) with its delivery time in the `unacked_index` zset,
and is pushed back to its queue `visibility_timeout` s after that time. A message is
kombu's JSON envelope with a base64 body of Celery protocol 2: `[args, kwargs, embed]`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis

from workers.app import BATCH_QUEUE, INCREMENTAL_QUEUE, RUN_QUEUE

PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


@dataclass(frozen=True)
class PendingMessage:
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    state: str  # 'queued' or 'unacked'
    delivered_at: float | None = None  # unacked: when a worker took it

    @property
    def run_id(self) -> str | None:
        if self.kwargs.get("run_id"):
            return str(self.kwargs["run_id"])
        return str(self.args[0]) if self.args and isinstance(self.args[0], str) else None


def _decoded(raw: bytes | str, state: str, delivered_at: float | None) -> PendingMessage | None:
    try:
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        task = envelope["headers"]["task"]
    except (ValueError, KeyError, TypeError):
        return None  # not a Celery protocol-2 message of ours
    return PendingMessage(task, list(args), dict(kwargs), state, delivered_at)


def pending_messages(client: redis.Redis) -> list[PendingMessage]:
    found: list[PendingMessage] = []
    for queue in (BATCH_QUEUE, RUN_QUEUE, INCREMENTAL_QUEUE):
        for step in PRIORITY_STEPS:
            key = queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"
            for raw in client.lrange(key, 0, -1):
                if (message := _decoded(raw, "queued", None)) is not None:
                    found.append(message)
    delivered = dict(client.zrange(UNACKED_INDEX, 0, -1, withscores=True))
    for tag, value in client.hgetall(UNACKED).items():
        try:
            raw = json.loads(value)[0]
        except (ValueError, IndexError, TypeError):
            continue
        message = _decoded(json.dumps(raw), "unacked", delivered.get(tag))
        if message is not None:
            found.append(message)
    return found


def run_messages(client: redis.Redis, run_id: str) -> list[PendingMessage]:
    return [m for m in pending_messages(client) if m.run_id == run_id]
