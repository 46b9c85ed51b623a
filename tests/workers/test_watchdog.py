"""The watchdog's verdicts on a run directory (no servers): what is lost, what is on its way."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from scoring.config import Settings
from scoring.runs.store import RunPaths
from workers.broker import PendingMessage
from workers.watchdog import check_run

CFG = Settings(worker_silence_seconds=10, stall_seconds=10)


def _run(tmp_path: Path, started: float) -> RunPaths:
    paths = RunPaths(tmp_path / "r")
    paths.batch_ledger_dir.mkdir(parents=True)
    paths.manifest.write_text("{}")
    paths.ledger.write_text(json.dumps({"status": "scoring", "batches_total": 3}))
    record = {
        "batch": 0,
        "status": "running",
        "worker": "w0@host",
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
    }
    paths.batch_status(0).write_text(json.dumps(record))
    return paths


def _batch(index: int, state: str, delivered_at: float | None) -> PendingMessage:
    return PendingMessage("claidex.score_batch", ["r", index], {}, state, delivered_at)


def test_the_delivery_that_fell_silent_is_lost_a_later_one_is_on_its_way(tmp_path: Path) -> None:
    started = time.time() - 100
    paths = _run(tmp_path, started)
    queued = [_batch(1, "queued", None), _batch(2, "queued", None)]
    dead = check_run(paths, [_batch(0, "unacked", started - 1), *queued], {}, CFG)
    assert dead.action == "batches" and dead.batches == [0]
    assert any(
        "batch-00000: worker w0@host" in note and "silent for" in note for note in dead.notes
    )
    assert any(note.startswith("batch-00000: its message returns at ") for note in dead.notes)
    redelivered = check_run(paths, [_batch(0, "unacked", started + 50), *queued], {}, CFG)
    assert redelivered.action is None  # a live worker holds the redelivery


def test_queued_batches_are_never_lost_and_unsent_ones_are_after_the_stall(tmp_path: Path) -> None:
    started = time.time() - 100
    paths = _run(tmp_path, started)
    requeued = [_batch(0, "queued", None), _batch(1, "queued", None), _batch(2, "queued", None)]
    assert check_run(paths, requeued, {}, CFG).action is None  # deep queue: wait for it
    now = time.time() + 60  # nothing written for a minute, nothing in the broker
    lost = check_run(paths, [_batch(0, "queued", None)], {}, CFG, now=now)
    assert lost.action == "batches" and lost.batches == [1, 2]
    assert (
        check_run(paths, [], {"merge": None, "start": "host:1:x"}, CFG, now=time.time()).batches
        == []
    )


def test_a_held_merge_lease_or_a_live_heartbeat_means_nothing_to_do(tmp_path: Path) -> None:
    paths = _run(tmp_path, time.time())
    for index in range(3):
        chunk = paths.chunk(index)
        chunk.parent.mkdir(parents=True, exist_ok=True)
        chunk.write_bytes(b"x")
    later = time.time() + 60
    assert check_run(paths, [], {"merge": "host:1:abc"}, CFG, now=later).action is None
    stuck = check_run(paths, [], {}, CFG, now=later)
    assert stuck.action == "merge" and "nothing merges the run" in stuck.reason
