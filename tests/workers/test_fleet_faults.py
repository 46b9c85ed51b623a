"""Faults injected into real workers, Redis and Postgres: the fleet recovers by itself
(issue: fleet faults). The fast subset of ops/chaos; the full matrix is docs/RELIABILITY.md."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.devservices import PrivatePostgres, PrivateRedis
from tests.fleet import CeleryProcess, beat, wait_for, workers_cli, workers_cli_background


def _reference(sample_dataset: Path, tmp_path: Path, batch_size: int) -> bytes:
    local = run_local(
        sample_dataset,
        Settings(batch_size=batch_size),
        run_dir=tmp_path / "local",
        show_progress=False,
    )
    return local.scores.read_bytes()


def _full(env: dict[str, str], data: Path, run_id: str, batch_size: int, *extra: str):
    return workers_cli_background(
        env,
        "full",
        "--data",
        str(data),
        "--batch-size",
        str(batch_size),
        "--run-id",
        run_id,
        "--timeout",
        "240",
        *extra,
    )


def _status(paths: RunPaths) -> str | None:
    try:
        return RunLedger(paths).read().get("status")
    except Exception:
        return None


def _published(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT run_id, status FROM claidex_runs ORDER BY run_id").fetchall()


def _table(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(DISTINCT npi) FROM provider_risk_scores").fetchone()[0]


def _kill_children(proc: CeleryProcess) -> None:
    for pid in proc.children():
        os.kill(pid, signal.SIGKILL)


def test_a_pool_child_killed_in_prepare_recovers_by_itself(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    """The dead holder's lease lapses in CLAIDEX_LEASE_SECONDS; the redelivered task takes over."""
    reference = _reference(sample_dataset, tmp_path, 100)
    victim = fleet("w0")
    follower = _full(fleet.env, sample_dataset, "killed", 100)
    paths = RunPaths(tmp_path / "runs" / "killed")
    wait_for(lambda: _status(paths) == "preparing", what="preparing")
    _kill_children(victim)
    killed_at = _status(paths)
    out, err = follower.communicate(timeout=240)
    assert killed_at == "preparing", f"the kill landed after prepare ended ({killed_at})"
    assert follower.returncode == 0, err + out
    assert paths.scores.read_bytes() == reference
    log = victim.log.read_text()
    assert "WorkerLostError" in log or "exited prematurely" in log, log[-2000:]


def _waiting_for_a_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()[0] > 0


def test_a_pool_child_killed_in_merge_recovers_by_itself_and_runs_no_batch_twice(
    sample_dataset: Path, fleet, database_url: str, tmp_path: Path
) -> None:
    """The merge task is held where it cannot finish by chance before the kill: its checks
    wait for claidex_runs, which the test holds locked (a merge is milliseconds at this size)."""
    reference = _reference(sample_dataset, tmp_path, 100)
    env = {**fleet.env, "DATABASE_URL": database_url}
    victim = fleet("w0", DATABASE_URL=database_url)
    holder = psycopg.connect(database_url)
    holder.execute("LOCK TABLE claidex_runs IN ACCESS EXCLUSIVE MODE")
    try:
        follower = _full(env, sample_dataset, "killed", 100)
        paths = RunPaths(tmp_path / "runs" / "killed")
        wait_for(lambda: _waiting_for_a_lock(database_url), what="the merge's checks waiting")
        killed_at = RunLedger(paths).read()
        _kill_children(victim)
    finally:
        holder.rollback()
        holder.close()
    out, err = follower.communicate(timeout=240)
    assert killed_at["status"] == "merged" and killed_at["will_publish"], killed_at
    assert follower.returncode == 0, err + out
    assert paths.scores.read_bytes() == reference
    executions = RunLedger(paths).batch_executions()
    assert set(executions.values()) == {1}, executions  # only the merge was repeated
    assert RunLedger(paths).read()["publish_count"] == 1
    assert _published(database_url) == [("killed", "published")]
    log = victim.log.read_text()
    assert "WorkerLostError" in log or "exited prematurely" in log, log[-2000:]


def test_a_redis_restart_without_persistence_is_resumed_by_the_watchdog(
    sample_dataset: Path, fleet, redis_server: PrivateRedis, database_url: str, tmp_path: Path
) -> None:
    """Queued batches and the chord state are lost; beat's watchdog re-dispatches by itself."""
    reference = _reference(sample_dataset, tmp_path, 40)
    env = {**fleet.env, "DATABASE_URL": database_url, "CLAIDEX_WATCHDOG_INTERVAL": "1"}
    victim = fleet("w0", DATABASE_URL=database_url)
    watchdog = beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")
    try:
        follower = _full(env, sample_dataset, "blip", 40)
        paths = RunPaths(tmp_path / "runs" / "blip")
        wait_for(lambda: RunLedger(paths).summary().get("batches_done", 0) >= 5, what="5 batches")
        os.killpg(victim.pid, signal.SIGSTOP)  # hold the chord mid-way while Redis restarts
        summary = RunLedger(paths).summary()
        assert summary["batches_done"] < summary["batches_total"], summary
        redis_server.restart()
        os.killpg(victim.pid, signal.SIGCONT)
        out, err = follower.communicate(timeout=240)
        assert follower.returncode == 0, err + out
        assert "Traceback" not in err, err
        ledger = RunLedger(paths).read()
        assert ledger["status"] == "published" and ledger["publish_count"] == 1
        assert json.loads(paths.watchdog.read_text())["actions"] >= 1
        assert paths.scores.read_bytes() == reference
        assert _published(database_url) == [("blip", "published")]
        assert _table(database_url) == ledger["rows_published"]
    finally:
        watchdog.stop()


def _outage_run(
    fleet, database_url: str, server: PrivatePostgres, data: Path, tmp_path: Path, down: float
):
    env = {**fleet.env, "DATABASE_URL": database_url}
    fleet("w0", DATABASE_URL=database_url, CLAIDEX_DB_OUTAGE_WINDOW="6")
    follower = _full({**env, "CLAIDEX_DB_OUTAGE_WINDOW": "6"}, data, "outage", 300)
    paths = RunPaths(tmp_path / "runs" / "outage")
    wait_for(lambda: _status(paths) == "merging", what="merging")
    server.pause()
    seen_retrying = []
    try:
        deadline = time.monotonic() + down
        while time.monotonic() < deadline:
            if (RunLedger(paths).read().get("retrying") or {}).get("step") == "publish":
                seen_retrying.append(True)
            time.sleep(0.1)
    finally:
        server.resume()
    out, err = follower.communicate(timeout=240)
    return follower.returncode, out, err, paths, bool(seen_retrying)


def test_postgres_down_during_publish_is_ridden_out_and_the_cli_reports_the_end(
    sample_dataset: Path, fleet, postgres_server: PrivatePostgres, database_url: str, tmp_path
) -> None:
    code, out, err, paths, retrying = _outage_run(
        fleet, database_url, postgres_server, sample_dataset, tmp_path, down=2.0
    )
    assert code == 0, err + out
    assert "failed" not in err, err
    assert retrying, "the ledger never said the publish was waiting for Postgres"
    ledger = RunLedger(paths).read()
    assert ledger["status"] == "published" and ledger["retrying"] is None
    assert _published(database_url) == [("outage", "published")]


def test_an_outage_longer_than_the_window_fails_once_then_resume_publishes(
    sample_dataset: Path, fleet, postgres_server: PrivatePostgres, database_url: str, tmp_path
) -> None:
    code, _out, err, paths, retrying = _outage_run(
        fleet, database_url, postgres_server, sample_dataset, tmp_path, down=10.0
    )
    assert retrying
    assert code == 1
    assert "failed at publish" in err and "database unreachable for" in err, err
    assert "(window 6 s)" in err
    ledger = RunLedger(paths).read()
    assert ledger["status"] == "failed" and ledger["failed_step"] == "publish"
    assert ledger.get("publish_count", 0) == 0
    env = {**fleet.env, "DATABASE_URL": database_url}
    status = json.loads(workers_cli(env, "status", "outage").stdout)
    assert status["recovery"] == "fix the cause, then `python -m workers resume outage`"
    resumed = workers_cli(env, "resume", "outage", "--timeout", "120")
    assert resumed.returncode == 0, resumed.stderr
    assert "Exception ignored" not in resumed.stderr, resumed.stderr
    assert RunLedger(paths).read()["publish_count"] == 1
    assert _table(database_url) == RunLedger(paths).read()["rows_published"]


def test_full_refuses_a_run_id_that_exists(sample_dataset: Path, fleet, tmp_path: Path) -> None:
    fleet("w0")
    first = workers_cli(
        fleet.env, "full", "--data", str(sample_dataset), "--run-id", "once", "--timeout", "120"
    )
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "runs" / "once" / "scores.parquet").read_bytes()
    again = workers_cli(
        fleet.env, "full", "--data", "/elsewhere", "--batch-size", "7", "--run-id", "once"
    )
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: run once already exists (merged, {tmp_path / 'runs' / 'once'}): choose "
        "another --run-id, or `python -m workers resume once` to finish it"
    ]
    assert (tmp_path / "runs" / "once" / "scores.parquet").read_bytes() == before


def _orphaned_run(sample_dataset: Path, tmp_path: Path, run_id: str) -> RunPaths:
    """A run prepared whose chord never reached the broker (lost with a Redis without AOF)."""
    from scoring.stages.drive import prepare

    paths = RunPaths(tmp_path / "runs" / run_id)
    prepare(paths, sample_dataset, Settings(batch_size=500))
    request = {"run_id": run_id, "data_dir": str(sample_dataset), "overrides": {}, "publish": True}
    paths.request.write_text(json.dumps(request))
    return paths


@pytest.mark.parametrize("max_resumes", ["3", "0"])
def test_the_watchdog_resumes_a_stuck_run_or_fails_it_with_the_command_to_run(
    sample_dataset: Path, fleet, tmp_path: Path, max_resumes: str
) -> None:
    from tests.http_recorder import Recorder

    reference = _reference(sample_dataset, tmp_path, 500)
    paths = _orphaned_run(sample_dataset, tmp_path, "orphan")
    extra = {"CLAIDEX_WATCHDOG_INTERVAL": "1", "CLAIDEX_WATCHDOG_MAX_RESUMES": max_resumes}
    with Recorder() as hook:  # the on-call channel: a stalled run, or a failed one, says so
        extra["CLAIDEX_ALERT_WEBHOOK"] = hook.url + "/hook"  # the watchdog task's worker's
        fleet("w0", **extra)
        watchdog = beat({**fleet.env, **extra}, tmp_path / "beat.log", tmp_path / "beat-schedule")
        try:
            wait_for(lambda: _status(paths) in ("merged", "failed"), timeout=120, every=0.2)
        finally:
            watchdog.stop()
    texts = [json.loads(r.body)["text"] for r in hook.received]
    expected = (
        "claidex run orphan: failed:" if max_resumes == "0" else "claidex run orphan: stalled:"
    )
    assert any(t.startswith(expected) for t in texts), texts
    assert "python -m workers resume orphan" in next(t for t in texts if t.startswith(expected))
    assert not any("redis://" in t for t in texts)  # the broker URL never leaves
    ledger = RunLedger(paths).read()
    if max_resumes == "0":
        assert ledger["status"] == "failed" and ledger["failed_step"] == "scoring"
        total = RunLedger(paths).summary()["batches_total"]
        assert ledger["error"].startswith(f"stalled: {total} batch(es) with no live worker")
        assert ledger["error"].endswith("then run `python -m workers resume orphan`")
        assert not paths.scores.exists()
    else:
        assert ledger["status"] == "merged", ledger
        watchdog_record = json.loads(paths.watchdog.read_text())
        assert watchdog_record["actions"] == 1
        assert watchdog_record["last"].startswith("batches: ")
        assert paths.scores.read_bytes() == reference
