"""The fault matrix: every fault of the fleet-faults issue, injected into real servers.

    bash ops/chaos [--providers 30000] [--batch-size 2500] [--shards 8] [--only NAME ...]
                   [--no-write]

Private Postgres, Redis and a Bolt server on loopback; two Celery workers and beat (its
watchdog on) per fault, each fault on a fresh Redis and run root. After each fault the
published table is compared with a clean local run of the same data: rows lost,
duplicated and wrong must all be 0. Writes docs/RELIABILITY.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import polars as pl  # noqa: E402
import psycopg  # noqa: E402
from bench_local import machine  # noqa: E402

from claidex.dev.sample import generate  # noqa: E402
from claidex.local_engine import run_local  # noqa: E402
from scoring.config import Settings  # noqa: E402
from scoring.runs.ledger import RunLedger  # noqa: E402
from scoring.runs.roots import run_at  # noqa: E402
from scoring.runs.store import (  # noqa: E402
    WATCHDOG,
    RunPaths,
    read_json_or,
)
from scoring.stages.drive import prepare  # noqa: E402
from tests.bolt_server import BoltServer  # noqa: E402
from tests.devservices import PrivatePostgres, PrivateRedis, PrivateS3  # noqa: E402
from tests.fleet import CeleryProcess, beat, fleet_env, wait_for, worker  # noqa: E402

CHAOS_ENV = {  # production-like limits, recovery clocks shortened so the matrix runs in minutes
    "CLAIDEX_VISIBILITY_TIMEOUT": "1200",
    "CLAIDEX_TASK_TIME_LIMIT": "1000",
    "CLAIDEX_TASK_SOFT_TIME_LIMIT": "950",
    "CLAIDEX_DB_OUTAGE_WINDOW": "600",
    "CLAIDEX_LEASE_SECONDS": "10",
    "CLAIDEX_HEARTBEAT_SECONDS": "1",
    "CLAIDEX_WORKER_SILENCE_SECONDS": "10",
    "CLAIDEX_STALL_SECONDS": "10",
    "CLAIDEX_WATCHDOG_INTERVAL": "2",
    "CLAIDEX_TASK_MAX_RETRIES": "3",
    "CLAIDEX_RETRY_BACKOFF_MAX": "5",
}


# The killed worker's message comes back after the visibility timeout: 90 s here (3600 s
# by default, 7200 s in compose) -- and the time limit must stay below it.
SHORT_VISIBILITY = {
    "CLAIDEX_VISIBILITY_TIMEOUT": "90",
    "CLAIDEX_TASK_TIME_LIMIT": "80",
    "CLAIDEX_TASK_SOFT_TIME_LIMIT": "75",
    "CLAIDEX_DB_OUTAGE_WINDOW": "60",
}


@dataclass
class Row:
    fault: str
    injected: str
    recovery: str = ""
    seconds: float | None = None
    lost: int | None = None
    duplicated: int | None = None
    wrong: int | None = None
    note: str = ""


@dataclass
class Lab:
    """One fault's servers and processes."""

    scratch: Path
    data: Path
    pg: PrivatePostgres
    url: str
    bolt: BoltServer
    batch_size: int
    shards: int = 1
    persistent_redis: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    run_root: Path | None = None
    s3: PrivateS3 | None = None  # the run root on this server's bucket, no shared disk
    redis: PrivateRedis = field(init=False)
    env: dict[str, str] = field(init=False)
    workers: dict[str, CeleryProcess] = field(default_factory=dict)
    beat: CeleryProcess | None = None

    def __enter__(self) -> Lab:
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.redis = PrivateRedis(persistent=self.persistent_redis).start()
        root: Path | str = self.run_root or self.scratch / "runs"
        if self.s3 is not None:
            root = f"s3://{self.s3.bucket}/{self.scratch.name}"
        self.env = fleet_env(
            self.redis.url, root, database_url=self.url, **CHAOS_ENV, **self.bolt.env()
        )
        if self.s3 is not None:
            self.env.update(self.s3.env())
        self.env.update(self.extra)
        for name in ("w0", "w1"):
            self.start_worker(name)
        self.beat = beat(self.env, self.scratch / "beat.log", self.scratch / "beat-schedule")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("DELETE FROM provider_risk_scores")
            conn.execute("DELETE FROM claidex_runs")
        return self

    def start_worker(self, name: str) -> CeleryProcess:
        log = self.scratch / f"{name}-{len(self.workers)}.log"
        if self.s3 is None:
            self.workers[name] = worker(self.env, log, name)
            return self.workers[name]
        home = self.scratch / f"host-{name}-{len(self.workers)}"  # its own cwd and TMPDIR
        (home / "tmp").mkdir(parents=True)
        env = {**self.env, "TMPDIR": str(home / "tmp")}
        self.workers[name] = worker(env, log, name, cwd=home)
        return self.workers[name]

    def __exit__(self, *exc: object) -> None:
        for proc in [*self.workers.values(), *([self.beat] if self.beat else [])]:
            if proc.process.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
            proc.stop()
        self.redis.stop()

    def paths(self, run_id: str) -> RunPaths:
        return run_at(self.env["CLAIDEX_RUN_ROOT"], run_id)

    def full(self, run_id: str, *extra: str) -> subprocess.Popen[str]:
        source = ["--source", "postgres"] if "--source" in extra else ["--data", str(self.data)]
        rest = [a for a in extra if a not in ("--source", "postgres")]
        return subprocess.Popen(
            [sys.executable, "-m", "workers", "full", *source, "--batch-size",
             str(self.batch_size), "--shards", str(self.shards), "--run-id", run_id,
             "--timeout", "1800", "--quiet", *rest],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers", *args], cwd=ROOT, env=self.env,
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip


def status(paths: RunPaths) -> str | None:
    try:
        return RunLedger(paths).read().get("status")
    except Exception:
        return None


def compare(url: str, reference: pl.DataFrame, run_id: str | None) -> tuple[int, int, int, str]:
    """(lost, duplicated, wrong, note) of the published table against the reference scores."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT npi, risk_score::float8, risk_label, r_raw::float8, flags::text, run_id "
            "FROM provider_risk_scores"
        ).fetchall()
    table = pl.DataFrame(
        rows,
        schema={
            "npi": pl.String,
            "risk_score": pl.Float64,
            "risk_label": pl.String,
            "r_raw": pl.Float64,
            "flags": pl.String,
            "run_id": pl.String,
        },
        orient="row",
    )
    duplicated = table.height - table["npi"].n_unique()
    expected = reference.select(
        "npi",
        "risk_score",
        "risk_label",
        "r_raw",
        pl.col("flags").list.join("\x1f").alias("flags_json"),
    )
    table = table.with_columns(
        pl.col("flags").map_elements(lambda t: "\x1f".join(json.loads(t)), return_dtype=pl.String)
    ).unique("npi")
    joined = expected.join(table, on="npi", how="left")
    lost = joined.filter(pl.col("risk_label_right").is_null()).height
    present = joined.filter(pl.col("risk_label_right").is_not_null())
    wrong = present.filter(
        (pl.col("risk_score") != pl.col("risk_score_right"))
        | (pl.col("risk_label") != pl.col("risk_label_right"))
        | (pl.col("r_raw") != pl.col("r_raw_right"))
        | (pl.col("flags_json") != pl.col("flags"))
    ).height
    extra = table.join(expected, on="npi", how="anti").height
    runs = sorted(set(table["run_id"].to_list()))
    note = ""
    if run_id is not None and runs != [run_id]:
        note = f"table holds runs {runs}, expected {run_id}"
    if extra:
        note += f" {extra} NPI(s) not in the reference"
    return lost, duplicated, wrong + extra, note.strip()


def finish(
    lab: Lab,
    row: Row,
    follower: subprocess.Popen[str],
    injected_at: float,
    reference: pl.DataFrame,
    run_id: str,
) -> Row:
    _out, err = follower.communicate(timeout=1800)
    done = time.monotonic()
    ledger = RunLedger(lab.paths(run_id)).read()
    row.seconds = round(done - injected_at, 1)
    if follower.returncode != 0 or ledger.get("status") != "published":
        row.recovery = row.recovery or "none"
        row.note = (row.note + f" exit {follower.returncode}: {err.strip()[-300:]}").strip()
    elif not row.recovery:
        actions = read_json_or(lab.paths(run_id), WATCHDOG, {}).get("actions", 0)
        row.recovery = "automatic" + (f" (watchdog: {actions} resume)" if actions else "")
    lost, duplicated, wrong, note = compare(lab.url, reference, run_id)
    row.lost, row.duplicated, row.wrong = lost, duplicated, wrong
    row.note = "; ".join(filter(None, [row.note, note]))
    return row


Scenario = Callable[[Lab, pl.DataFrame], Row]


def kill_child_in(step: str) -> Scenario:
    def scenario(lab: Lab, reference: pl.DataFrame) -> Row:
        run_id = f"kill-{step}"
        follower = lab.full(run_id)
        paths = lab.paths(run_id)
        if step == "scoring":
            wait_for(lambda: bool(RunLedger(paths).summary().get("batches_running")), 300)
        else:
            wait_for(lambda: status(paths) == step, 300)
        victims = [w for w in lab.workers.values() if w.process.poll() is None]
        for proc in victims:
            for pid in proc.children():
                os.kill(pid, signal.SIGKILL)
        at = time.monotonic()
        label = {"preparing": "prepare", "scoring": "score", "merging": "merge"}[step]
        row = Row(f"kill -9 of the pool children in {label}", f"status {step}")
        return finish(lab, row, follower, at, reference, run_id)

    return scenario


def kill_worker_main(lab: Lab, reference: pl.DataFrame) -> Row:
    follower = lab.full("kill-main")
    paths = lab.paths("kill-main")
    mine: list[int] = []

    def running_on_w0() -> bool:
        states = RunLedger(paths).batch_states()
        mine[:] = [
            i
            for i, b in states.items()
            if b["status"] == "running" and b.get("worker", "").startswith("w0@")
        ]
        return bool(mine)

    wait_for(running_on_w0, 300)
    lab.workers["w0"].kill()  # main process and pool child: nothing requeues the message
    at = time.monotonic()
    time.sleep(12)
    diagnosis = json.loads(lab.cli("status", "kill-main").stdout).get("diagnosis", {})
    notes = "; ".join(diagnosis.get("notes", []))
    row = Row("kill -9 of a worker main process", f"batch {mine[0]} running on w0")
    row.note = f"status said: {notes}" if notes else "status named no silent worker"
    return finish(lab, row, follower, at, reference, "kill-main")


def stage_beat(paths: RunPaths, stage: str) -> bool:
    return any(name.startswith(f"{stage}-") for name in RunLedger(paths).heartbeats())


def kill_child_in_stage(lab: Lab, reference: pl.DataFrame) -> Row:
    """Every pool child killed while an aggregate shard runs (the stage's chord mid-way)."""
    follower = lab.full("kill-stage")
    paths = lab.paths("kill-stage")
    wait_for(lambda: stage_beat(paths, "aggregate"), 300, every=0.001)
    for proc in (w for w in lab.workers.values() if w.process.poll() is None):
        for pid in proc.children():
            os.kill(pid, signal.SIGKILL)
    at = time.monotonic()
    row = Row("kill -9 of the pool children in a prepare stage", "an aggregate shard running")
    return finish(lab, row, follower, at, reference, "kill-stage")


def redis_between_stages(lab: Lab, reference: pl.DataFrame) -> Row:
    """Redis restarts (no persistence) the moment ingest's last shard is done: the ingest
    callback or count's chord is lost."""
    follower = lab.full("redis-stages")
    paths = lab.paths("redis-stages")

    def ingested() -> bool:
        stage = paths.root / "stages" / "ingest"
        return stage.exists() and len(list(stage.glob("*/done.json"))) == lab.shards

    wait_for(ingested, 300, every=0.001)
    lab.redis.restart(graceful=False)
    at = time.monotonic()
    row = Row("Redis restart between two prepare stages", "ingest done, count not started")
    return finish(lab, row, follower, at, reference, "redis-stages")


def redis_restart(persistent: bool) -> Scenario:
    def scenario(lab: Lab, reference: pl.DataFrame) -> Row:
        run_id = "redis-aof" if persistent else "redis-volatile"
        follower = lab.full(run_id)
        paths = lab.paths(run_id)
        wait_for(lambda: RunLedger(paths).summary().get("batches_done", 0) >= 3, 300)
        lab.redis.restart(graceful=persistent)
        at = time.monotonic()
        done = RunLedger(paths).summary()
        kind = "with AOF" if persistent else "without persistence"
        row = Row(
            f"Redis restart mid-chord, {kind}",
            f"{done['batches_done']}/{done['batches_total']} batches done",
        )
        return finish(lab, row, follower, at, reference, run_id)

    return scenario


def postgres_down(seconds: float) -> Scenario:
    def scenario(lab: Lab, reference: pl.DataFrame) -> Row:
        run_id = f"pg-down-{int(seconds)}s"
        follower = lab.full(run_id)
        paths = lab.paths(run_id)
        wait_for(lambda: status(paths) in ("merging", "publishing"), 600)
        lab.pg.pause()
        at = time.monotonic()
        time.sleep(seconds)
        lab.pg.resume()
        row = Row(f"Postgres down {seconds:g} s during publish", "status merging -> publishing")
        return finish(lab, row, follower, at, reference, run_id)

    return scenario


def postgres_down_in_export(lab: Lab, reference: pl.DataFrame) -> Row:
    follower = lab.full("pg-export", "--source", "postgres")
    paths = lab.paths("pg-export")
    wait_for(
        lambda: (paths.root / "source").exists() and status(paths) == "preparing"
        and RunLedger(paths).read().get("source") == "postgres",
        300,
    )  # fmt: skip
    lab.pg.pause()
    at = time.monotonic()
    time.sleep(10)
    lab.pg.resume()
    row = Row("Postgres down 10 s during the source export", "export writing source/")
    return finish(lab, row, follower, at, reference, "pg-export")


def neo4j_down(mode: str) -> Scenario:
    def scenario(lab: Lab, reference: pl.DataFrame) -> Row:
        run_id = f"neo4j-{mode}"
        follower = lab.full(run_id, "--graph", mode)
        paths = lab.paths(run_id)
        if mode == "neo4j-snapshot":
            wait_for(lambda: status(paths) == "preparing", 300)
            where = "status preparing (before the snapshot read)"
        else:
            wait_for(lambda: RunLedger(paths).summary().get("batches_done", 0) >= 1, 300)
            where = "scoring, after the first batch"
        lab.bolt.stop()
        at = time.monotonic()
        time.sleep(8)
        lab.bolt.start()
        row = Row(f"Neo4j down 8 s ({mode})", where)
        return finish(lab, row, follower, at, reference, run_id)

    return scenario


def disk_full(lab: Lab, reference: pl.DataFrame) -> Row:
    follower = lab.full("disk-full")
    paths = lab.paths("disk-full")
    wait_for(lambda: status(paths) == "scoring", 300)
    filler = Path(lab.env["CLAIDEX_RUN_ROOT"]) / "filler"
    with open(filler, "wb") as handle:  # every byte left, so chunk writes fail with ENOSPC
        try:
            while True:
                handle.write(b"\0" * (1 << 20))
                handle.flush()
        except OSError:
            pass
    at = time.monotonic()
    time.sleep(15)
    stuck = json.loads(lab.cli("status", "disk-full").stdout)
    filler.unlink()
    row = Row("run directory's disk full (tmpfs) for 15 s", "status scoring")
    notes = (stuck.get("diagnosis") or {}).get("notes", [])
    row.note = "; ".join(n for n in notes if "free" in n) or f"status {stuck.get('status')}"
    return finish(lab, row, follower, at, reference, "disk-full")


def concurrent_full(lab: Lab, reference: pl.DataFrame) -> Row:
    first, second = lab.full("concurrent-a"), lab.full("concurrent-b")
    at = time.monotonic()
    time.sleep(1)
    same = lab.cli("full", "--data", str(lab.data), "--run-id", "concurrent-a", "--no-wait")
    for follower in (first, second):
        follower.communicate(timeout=1800)
    row = Row(
        "two concurrent `full` runs (and the same run id a third time)", "both queued at once"
    )
    row.seconds = round(time.monotonic() - at, 1)
    states = {r: RunLedger(lab.paths(r)).read() for r in ("concurrent-a", "concurrent-b")}
    published = [r for r, s in states.items() if s.get("status") == "published"]
    newest = max(states, key=lambda r: states[r].get("created_at") or "")
    refused = same.returncode == 2 and "already exists" in same.stderr
    outcome = ", ".join(f"{r[-1]} {s.get('status')}" for r, s in states.items())
    row.recovery = (
        f"automatic: {outcome}; the newer run ({newest[-1]}) is on the table; "
        f"the same id again {'refused' if refused else 'NOT refused'}"
    )
    if newest not in published or not refused:
        row.recovery += " -- UNEXPECTED"
    row.lost, row.duplicated, row.wrong, note = compare(lab.url, reference, newest)
    row.note = note
    return row


def stale_resumed_late(lab: Lab, reference: pl.DataFrame) -> Row:
    old = lab.paths("stale-old")
    prepare(old, lab.data, Settings(batch_size=lab.batch_size))  # prepared first, never run
    (old.root / "request.json").write_text(
        json.dumps({"run_id": "stale-old", "data_dir": str(lab.data), "overrides": {},
                    "publish": True})
    )  # fmt: skip
    newer = lab.full("stale-new")
    newer.communicate(timeout=1800)
    at = time.monotonic()
    late = lab.cli("resume", "stale-old", "--timeout", "600", "--quiet")
    row = Row("a stale run resumed late", "resume of a run prepared before the published one")
    row.seconds = round(time.monotonic() - at, 1)
    refused = late.returncode == 1 and "older than the published full run" in late.stderr
    row.recovery = "refused at publish, table keeps the newer run" if refused else "NOT refused"
    row.note = late.stderr.strip()[-200:]
    row.lost, row.duplicated, row.wrong, note = compare(lab.url, reference, "stale-new")
    row.note = "; ".join(filter(None, [row.note, note]))
    return row


def s3_restart(lab: Lab, reference: pl.DataFrame) -> Row:
    """The S3 server stopped for 8 s mid-scoring, then back on its ports (its data kept)."""
    assert lab.s3 is not None
    follower = lab.full("s3-restart")
    paths = lab.paths("s3-restart")
    wait_for(lambda: RunLedger(paths).summary().get("batches_done", 0) >= 3, 300)
    done = RunLedger(paths).summary()
    at = time.monotonic()
    lab.s3.restart(down=8.0)
    row = Row(
        "S3 server restarted mid-run (8 s down)",
        f"{done['batches_done']}/{done['batches_total']} batches done",
    )
    return finish(lab, row, follower, at, reference, "s3-restart")


def s3_hosts_lost_then_resume(lab: Lab, reference: pl.DataFrame) -> Row:
    """Every worker host lost at once mid-scoring (kill -9 of each whole worker, the
    follower too); new hosts, then `python -m workers resume`: only what is missing runs."""
    follower = lab.full("s3-resume")
    paths = lab.paths("s3-resume")
    wait_for(lambda: RunLedger(paths).summary().get("batches_done", 0) >= 3, 300)
    for proc in lab.workers.values():
        proc.kill()
    follower.kill()
    follower.communicate()
    done = RunLedger(paths).summary()
    at = time.monotonic()
    for name in ("w2", "w3"):
        lab.start_worker(name)
    resumed = subprocess.Popen(
        [sys.executable, "-m", "workers", "resume", "s3-resume", "--timeout", "1800", "--quiet"],
        cwd=ROOT, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    row = Row(
        "every worker host lost mid-run, then resume (S3 run root)",
        f"{done['batches_done']}/{done['batches_total']} batches done",
        recovery="resume",
    )
    return finish(lab, row, resumed, at, reference, "s3-resume")


def sigterm_worker(lab: Lab, reference: pl.DataFrame) -> Row:
    follower = lab.full("sigterm")
    paths = lab.paths("sigterm")
    wait_for(lambda: bool(RunLedger(paths).summary().get("batches_running")), 300)
    os.kill(lab.workers["w0"].pid, signal.SIGTERM)  # warm shutdown: finish, then exit
    at = time.monotonic()
    row = Row("SIGTERM of a worker (warm shutdown)", "mid-batch")
    row = finish(lab, row, follower, at, reference, "sigterm")
    runs = RunLedger(paths).batch_executions()
    twice = sorted(b for b, n in runs.items() if n > 1)
    row.note = "; ".join(filter(None, [row.note, f"batches run twice: {twice}" if twice else ""]))
    return row


SCENARIOS: dict[str, tuple[Scenario, dict[str, Any]]] = {
    "kill-prepare": (kill_child_in("preparing"), {}),
    "kill-score": (kill_child_in("scoring"), {}),
    "kill-merge": (kill_child_in("merging"), {}),
    "kill-main": (kill_worker_main, {"extra": SHORT_VISIBILITY}),
    "kill-stage": (kill_child_in_stage, {}),
    "redis-stages": (redis_between_stages, {}),
    "redis-aof": (redis_restart(True), {"persistent_redis": True}),
    "redis-volatile": (redis_restart(False), {}),
    "pg-1s": (postgres_down(1), {}),
    "pg-30s": (postgres_down(30), {}),
    "pg-5min": (postgres_down(300), {}),
    "pg-export": (postgres_down_in_export, {}),
    "neo4j-snapshot": (neo4j_down("neo4j-snapshot"), {}),
    "neo4j-live": (neo4j_down("neo4j-live"), {}),
    "disk-full": (disk_full, {"tmpfs": True}),
    "concurrent": (concurrent_full, {}),
    "stale": (stale_resumed_late, {}),
    "sigterm": (sigterm_worker, {}),
    # the run root on S3 (SeaweedFS), workers with no shared disk (issue 25)
    "s3-kill-stage": (kill_child_in_stage, {"s3": True}),
    "s3-restart": (s3_restart, {"s3": True}),
    "s3-concurrent": (concurrent_full, {"s3": True}),
    "s3-resume": (s3_hosts_lost_then_resume, {"s3": True}),
}


def mount_tmpfs(path: Path, megabytes: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


def write_report(rows: list[Row], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# Reliability: the fault matrix",
        "",
        f"`bash ops/chaos` on {datetime.now(UTC):%Y-%m-%d} ({machine()}); "
        f"{args.providers:,} providers, batch size {args.batch_size:,}, "
        f"{args.shards} prepare shards (the reference: one); "
        f"matrix wall time {seconds / 60:.1f} min.",
        "Private Postgres, Redis and ArcadeDB (Bolt) on loopback; two Celery workers "
        "(prefork, concurrency 1) and beat with the watchdog; each fault on a fresh Redis "
        "and run root. Recovery clocks are shortened (lease 10 s, worker silence 10 s, stall "
        "10 s, watchdog every 2 s; production defaults 30 s / 60 s / 120 s / 30 s).",
        "Lost, duplicated and wrong compare the published `provider_risk_scores` with a "
        "clean local run of the same data (npi, risk_score, risk_label, r_raw, flags).",
        "Seconds: from the injection to the run's final state.",
        "",
        "| fault | injected at | recovery | s to recover | lost | duplicated | wrong | notes |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        cells = [r.fault, r.injected, r.recovery, r.seconds, r.lost, r.duplicated, r.wrong, r.note]
        shown = ["-" if c is None else str(c).replace("|", "/").replace("\n", " ") for c in cells]
        lines.append("| " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=30_000)
    parser.add_argument("--batch-size", type=int, default=2_500)
    parser.add_argument("--shards", type=int, default=8, help="prepare stage shards per run")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="claidex-chaos-"))
    began = time.monotonic()
    rows: list[Row] = []
    pg = PrivatePostgres().start()
    s3 = PrivateS3().start()
    os.environ.update(s3.env())  # this process reads the S3 labs' ledgers (and only they use it)
    bolt = BoltServer(scratch / "bolt")
    try:
        data = scratch / "data"
        generate(data, providers=args.providers, seed=5, layout="production")
        reference_dir = scratch / "reference"
        run_local(data, Settings(batch_size=args.batch_size), run_dir=reference_dir,
                  show_progress=False)  # fmt: skip
        reference = pl.read_parquet(reference_dir / "scores.parquet")
        env = {**os.environ, "DATABASE_URL": pg.url}
        for command in (("db", "init"), ("db", "load", str(data))):
            subprocess.run([sys.executable, "-m", "claidex.cli", *command], env=env, check=True,
                           cwd=ROOT, capture_output=True)  # fmt: skip
        (scratch / "bolt").mkdir()
        bolt.start()
        subprocess.run(
            [sys.executable, "-m", "claidex.cli", "graph", "load", "--data", str(data), "--quiet"],
            env={**env, **bolt.env()}, check=True, cwd=ROOT, capture_output=True,
        )  # fmt: skip
        for name in args.only or list(SCENARIOS):
            scenario, options = SCENARIOS[name]
            options = dict(options)
            run_root = None
            if options.pop("s3", False):
                options["s3"] = s3
            if options.pop("tmpfs", False):
                run_root = scratch / f"tmpfs-{name}"
                if not mount_tmpfs(run_root, 512):
                    rows.append(Row("run directory's disk full", "-", "not run: mount refused"))
                    continue
            print(f"chaos: {name} ...", flush=True)
            try:
                with Lab(scratch / name, data, pg, pg.url, bolt, args.batch_size,
                         shards=args.shards, run_root=run_root, **options) as lab:  # fmt: skip
                    row = scenario(lab, reference)
            except Exception as exc:
                traceback.print_exc()
                row = Row(name, "-", "scenario error", note=f"{type(exc).__name__}: {exc}"[:300])
            finally:
                if run_root is not None:
                    subprocess.run(["umount", "-l", str(run_root)], capture_output=True)
            print(f"chaos: {row}", flush=True)
            rows.append(row)
    finally:
        bolt.stop()
        s3.stop()
        pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    report = write_report(rows, args, time.monotonic() - began)
    print(report)
    if not args.no_write and not args.only:
        (ROOT / "docs" / "RELIABILITY.md").write_text(report)
    bad = [r for r in rows if (r.lost, r.duplicated, r.wrong) != (0, 0, 0)]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
