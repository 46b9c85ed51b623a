"""Find fleet runs that can no longer finish by themselves, say why, and what brings them back.

A run is stuck when a step it waits for has nobody working on it: no live heartbeat,
no lease held, no message queued or delivered in the broker, and no progress for
`stall_seconds`. The checks only read (ledger, heartbeats, broker, leases); the beat
task in workers.scheduled acts on the verdict.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from scoring.config import Settings
from scoring.errors import ClaidexError
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.retry_policy import LOW_DISK_BYTES
from scoring.runs.roots import RunRoot, runs_under
from scoring.runs.store import (
    BATCH_LEDGER,
    CHUNKS,
    HEARTBEATS,
    LEDGER,
    REQUEST,
    RunPaths,
    run_store,
)
from scoring.stages.pipeline import STEPS, Kind
from workers.broker import PendingMessage

UNFINISHED = ("queued", "preparing", "scoring", "merging", "publishing", "merged")
START, BATCH, MERGE = "claidex.start_full_run", "claidex.score_batch", "claidex.merge_and_calibrate"
STAGE_SHARD, ADVANCE = "claidex.stage_shard", "claidex.advance_stages"
STAGE_TASKS = (STAGE_SHARD, ADVANCE)
# heartbeats of prepare: the start's, each single step's, each stage shard's (`ingest-00003`)
STAGE_BEATS = (
    "prepare",
    *(f"{s.name}-" if s.kind is Kind.SHARDS else s.name for s in STEPS if s.phase == "prepare"),
)


@dataclass
class Verdict:
    """What the run waits for; `action` is what would bring it back (None: nothing to do)."""

    run_id: str
    status: str
    action: str | None = None  # 'start', 'batches', 'merge'
    batches: list[int] = field(default_factory=list)
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S UTC")


def last_progress(paths: RunPaths) -> float:
    """Newest write anywhere a live run writes: ledger, batch records, chunks, heartbeats."""
    return run_store(paths).newest_write([LEDGER, REQUEST, BATCH_LEDGER, CHUNKS, HEARTBEATS])


def check_run(
    paths: RunPaths,
    messages: list[PendingMessage],
    holders: dict[str, str | None],
    cfg: Settings,
    now: float | None = None,
) -> Verdict:
    """The run's verdict from its ledger, heartbeats, broker messages and lease holders."""
    now = time.time() if now is None else now
    ledger = RunLedger(paths)
    summary = ledger.summary()
    queued = run_store(paths).exists(REQUEST)
    status = summary.get("status") or ("queued" if queued else "unknown")
    verdict = Verdict(paths.run_id, status)
    if status not in UNFINISHED or (status == "merged" and not summary.get("will_publish")):
        return verdict
    idle = now - last_progress(paths)
    free = shutil.disk_usage(paths.root).free if paths.url is None else LOW_DISK_BYTES
    if free < LOW_DISK_BYTES:
        verdict.notes.append(
            f"disk: only {free / 2**20:.0f} MiB free under {paths.root}: steps cannot write; "
            "free space, and the watchdog resumes the run"
        )
    beats = ledger.heartbeats()
    records = ledger.batch_states()
    for index in summary.get("batches_running", []):  # killed before its first heartbeat
        name, record = f"batch-{index:05d}", records[index]
        if name not in beats and record.get("started_at"):
            started = datetime.fromisoformat(record["started_at"]).timestamp()
            beats[name] = {
                "worker": record.get("worker"),
                "pid": "?",
                "at": started,
                "age": now - started,
            }
    alive = {name for name, beat in beats.items() if beat["age"] < cfg.worker_silence_seconds}
    for name, beat in sorted(beats.items()):
        if name not in alive:
            verdict.notes.append(
                f"{name}: worker {beat.get('worker') or beat.get('host')} (pid {beat.get('pid')}) "
                f"silent for {beat['age']:.0f} s"
            )
    by_task: dict[str, list[PendingMessage]] = {}
    for message in messages:
        by_task.setdefault(message.task, []).append(message)
    stalled = idle >= cfg.stall_seconds
    if status in ("queued", "preparing") or not RunManifest.exists(paths):
        shards = [
            m
            for m in by_task.get(STAGE_SHARD, [])
            if not _dead_stage_delivery(m, beats, alive, verdict, cfg)
        ]
        staging = bool(shards) or bool(by_task.get(ADVANCE))
        if holders.get("start") or by_task.get(START) or staging:
            return verdict
        if any(name.startswith(STAGE_BEATS) for name in alive):
            return verdict
        if stalled:
            verdict.action, verdict.reason = (
                "start",
                f"start lost: nothing prepares it for {idle:.0f} s",
            )
        return verdict
    missing = ledger.missing_batches(int(summary.get("batches_total", 0)))
    if missing and status == "scoring":
        queued: dict[int, PendingMessage] = {}
        for m in by_task.get(BATCH, []):
            if len(m.args) > 1 and isinstance(m.args[1], int):
                queued[m.args[1]] = m
        lost = []
        for index in missing:
            name = f"batch-{index:05d}"
            message = queued.get(index)
            if name in alive:
                continue
            if message is not None and message.delivered_at is not None:
                back = message.delivered_at + cfg.visibility_timeout
                dead = _dead_delivery(name, message, beats, verdict, cfg)
                if dead or now > back + cfg.stall_seconds:
                    lost.append(index)
            elif message is None and stalled:  # neither running, nor queued, nor delivered
                lost.append(index)
        if lost:
            verdict.action, verdict.batches = "batches", lost
            verdict.reason = (
                f"{len(lost)} batch(es) with no live worker and no message: {lost[:10]}"
            )
        return verdict
    if missing:  # merging/publishing with chunks gone: a resume re-scores them
        verdict.action, verdict.batches = "batches", missing
        verdict.reason = f"{len(missing)} chunk(s) missing after scoring"
        return verdict
    if holders.get("merge") or by_task.get(MERGE) or "merge" in alive:
        return verdict
    if stalled:
        verdict.action = "merge"
        verdict.reason = f"every batch is done but nothing merges the run ({idle:.0f} s idle)"
    return verdict


def _dead_stage_delivery(
    message: PendingMessage,
    beats: dict[str, dict],
    alive: set[str],
    verdict: Verdict,
    cfg: Settings,
) -> bool:
    """A stage shard's message held by a worker fell silent: not work in progress (a re-sent
    start sends the shard again)."""
    if len(message.args) < 3 or message.delivered_at is None:
        return False
    name = f"{message.args[1]}-{int(message.args[2]):05d}"
    return name not in alive and _dead_delivery(name, message, beats, verdict, cfg)


def _dead_delivery(
    name: str, message: PendingMessage, beats: dict[str, dict], verdict: Verdict, cfg: Settings
) -> bool:
    """The very delivery of task `name` that fell silent (delivered before its last beat):
    its worker died or cancelled it on a broker loss, and it would sit out the visibility
    timeout (noted); a later delivery (a redelivery) is on its way instead."""
    beat = beats.get(name)
    if beat is None or message.delivered_at is None:
        return False
    back = message.delivered_at + cfg.visibility_timeout
    verdict.notes.append(f"{name}: its message returns at {_clock(back)}")
    return message.delivered_at <= float(beat["at"])


def unfinished_runs(root: RunRoot, max_age_days: float = 14.0) -> list[RunPaths]:
    """Fleet runs (with a request.json) touched in the last `max_age_days`. Each run's
    ledger is read first (one GET on S3) and only an unfinished run is looked at further:
    the sweep's cost stays with the runs in flight, not every run ever stored."""
    cutoff = time.time() - max_age_days * 86_400
    found = []
    for paths in runs_under(root, holding=None):
        try:
            store = run_store(paths)
            status = RunLedger(paths).read().get("status")
            if status is None:  # queued, or not a fleet run at all
                if not store.exists(REQUEST):
                    continue
                status = "queued"
            if status not in UNFINISHED or not store.exists(REQUEST):
                continue
            recent = store.newest_write([LEDGER, REQUEST]) >= cutoff
        except (OSError, ClaidexError):  # a damaged run is reported by status, not here
            continue
        if recent:
            found.append(paths)
    return found
