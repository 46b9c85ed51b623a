"""The Celery fleet over a private Redis with real worker processes (issue: Celery fleet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.builders import claidex_cli
from tests.devservices import PrivateRedis
from tests.fleet import CeleryProcess, beat, workers_cli


@pytest.mark.parametrize("processes", [1, 2])
def test_chord_run_matches_the_local_engine(
    sample_dataset: Path, fleet, tmp_path: Path, processes: int
) -> None:
    local = run_local(
        sample_dataset, Settings(batch_size=400), run_dir=tmp_path / "local", show_progress=False
    )
    for index in range(processes):
        fleet(f"w{index}", CLAIDEX_REPORT_HTML="true")  # the page too, drawn by a worker
    result = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "400",
        "--run-id",
        "chord-run",
        "--timeout",
        "240",
    )
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "chord-run")
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    ledger = RunLedger(paths).summary()
    assert ledger["status"] == "merged" and ledger["engine"] == "celery"
    assert ledger["batches_done"] == ledger["batches_total"] >= 5
    workers_used = {b["worker"].split("@")[0] for b in RunLedger(paths).batch_states().values()}
    assert workers_used == {f"w{i}" for i in range(processes)}
    compared = claidex_cli("compare", str(local.root), str(paths.root), "--json")
    assert compared.returncode == 0, compared.stdout + compared.stderr  # local vs Celery
    assert json.loads(compared.stdout)["within_tolerance"] is True
    report = json.loads(paths.report.read_text())
    assert report["header"]["engine"] == "celery" and paths.report_html.exists()
    assert report["timeline"]["batches"]["tasks"] >= ledger["batches_total"]
    assert report["timeline"]["batches"]["processes"] >= processes  # a lane per worker process


def _running_batch(paths: RunPaths) -> int | None:
    running = RunLedger(paths).summary().get("batches_running", []) if paths.ledger.exists() else []
    return running[0] if running else None


def _kill_during_a_batch(paths: RunPaths, kill, hit: list[int] | None = None) -> int:
    """Call kill() while a batch is in progress; returns that batch (retries if it finished).
    `hit` collects every batch a kill landed on: one that had just written its chunk dies
    before its ack and runs again too, so it may also count two executions."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = _running_batch(paths)
        if batch is not None:
            kill()
            if hit is not None:
                hit.append(batch)
            if not paths.chunk(batch).exists():
                return batch
        time.sleep(0.005)
    raise AssertionError("never caught a batch in progress")


@pytest.mark.parametrize("target", ["pool child", "main process"])
def test_worker_killed_mid_batch_loses_nothing(
    sample_dataset: Path, fleet, tmp_path: Path, target: str
) -> None:
    import json
    import os
    import signal
    import time

    from polars import read_parquet

    reference = run_local(
        sample_dataset, Settings(batch_size=40), run_dir=tmp_path / "local", show_progress=False
    )
    victim = fleet("victim")
    started = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "40",
        "--run-id",
        "killed",
        "--no-wait",
    )
    assert started.returncode == 0, started.stderr
    paths = RunPaths(tmp_path / "runs" / "killed")
    hit: list[int] = []  # every batch a kill landed on
    if target == "pool child":
        # A killed pool child: reject_on_worker_lost requeues its batch at once.
        batch = _kill_during_a_batch(
            paths, lambda: [os.kill(pid, signal.SIGKILL) for pid in victim.children()], hit
        )
    else:
        # The whole worker dies (main process too): its message would come back only after
        # the broker's visibility timeout. `status` names the silent worker and when the
        # message returns; beat's watchdog re-dispatches the silent delivery meanwhile.
        batch = _kill_during_a_batch(paths, victim.kill, hit)
        time.sleep(5)  # past CLAIDEX_WORKER_SILENCE_SECONDS (4 s)
        status = json.loads(workers_cli(fleet.env, "status", "killed").stdout)
        notes = " | ".join(status["diagnosis"]["notes"])
        assert f"batch-{batch:05d}: worker victim@" in notes and " silent for " in notes, status
        assert f"batch-{batch:05d}: its message returns at " in notes, status
        fleet("rescuer", CLAIDEX_WATCHDOG_INTERVAL="1")
        watchdog = beat(
            {**fleet.env, "CLAIDEX_WATCHDOG_INTERVAL": "1"},
            tmp_path / "beat.log",
            tmp_path / "beat-schedule",
        )
    result = workers_cli(fleet.env, "status", "killed")
    summary = __import__("json").loads(result.stdout)
    assert summary["status"] != "failed", summary
    from workers.cli import follow  # the same follower the CLI uses

    os.environ.update({"CLAIDEX_RUN_ROOT": str(tmp_path / "runs")})
    try:
        final = follow("killed", timeout=180, show_progress=False)
    finally:
        os.environ.pop("CLAIDEX_RUN_ROOT", None)
        if target == "main process":
            watchdog.stop()
    assert final["status"] == "merged", final
    scores = read_parquet(paths.scores)
    assert scores["npi"].is_unique().all() and scores.height == final["providers_scored"]
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.chunk(batch).exists()
    executions = RunLedger(paths).batch_executions()
    assert len(executions) == final["batches_total"]
    assert executions.pop(batch) >= 2  # the killed attempt and the one that finished
    for other in set(hit) - {batch}:  # killed just after its chunk, before its ack: again
        assert executions.pop(other) <= 2, other
    assert set(executions.values()) == {1}, (executions, hit)  # the others: exactly once


def _published_runs(url: str) -> list[tuple[str, str, int]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT run_id, status, (SELECT count(*) FROM provider_risk_scores) FROM claidex_runs"
        ).fetchall()


def test_failing_batch_fails_the_run_then_resume_completes_it(
    sample_dataset: Path, fleet, database_url: str, tmp_path: Path
) -> None:
    import json
    import shutil

    from scoring.stages.drive import prepare

    env = {**fleet.env, "DATABASE_URL": database_url}
    fleet("w0", DATABASE_URL=database_url)
    paths = RunPaths(tmp_path / "runs" / "broken")
    manifest = prepare(paths, sample_dataset, Settings(batch_size=300))
    good = tmp_path / "slice.parquet"
    shutil.copy(paths.batch_provider_years(2), good)
    paths.batch_provider_years(2).write_bytes(b"damaged")

    failed = workers_cli(env, "resume", "broken", "--timeout", "120")
    assert failed.returncode == 1
    assert "failed at score" in failed.stderr and "[2]" in failed.stderr, failed.stderr
    status = json.loads(workers_cli(env, "status", "broken").stdout)
    assert status["status"] == "failed" and status["batches_failed"] == [2]
    assert _published_runs(database_url) == []  # nothing published
    finished = {
        i: paths.chunk(i).stat().st_mtime_ns for i in range(manifest.batches_total) if i != 2
    }
    assert len(finished) == manifest.batches_total - 1

    shutil.copy(good, paths.batch_provider_years(2))  # the cause is fixed
    resumed = workers_cli(env, "resume", "broken", "--timeout", "120")
    assert resumed.returncode == 0, resumed.stderr
    assert {i: paths.chunk(i).stat().st_mtime_ns for i in finished} == finished
    assert RunLedger(paths).read()["status"] == "published"
    assert _published_runs(database_url) == [("broken", "published", manifest.providers_scored)]


def test_redis_restart_mid_run_then_resume_publishes_once(
    sample_dataset: Path, fleet, redis_server: PrivateRedis, database_url: str, tmp_path: Path
) -> None:
    import time

    env = {**fleet.env, "DATABASE_URL": database_url}
    w0 = fleet("w0", DATABASE_URL=database_url)
    started = workers_cli(
        env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "40",
        "--run-id",
        "outage",
        "--no-wait",
    )
    assert started.returncode == 0, started.stderr
    paths = RunPaths(tmp_path / "runs" / "outage")
    deadline = time.monotonic() + 120
    while RunLedger(paths).summary().get("batches_done", 0) < 5:
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.05)
    import os
    import signal

    os.killpg(w0.pid, signal.SIGSTOP)  # the restart lands mid-chord, never after the end
    summary = RunLedger(paths).summary()
    assert summary["batches_done"] < summary["batches_total"], summary
    redis_server.restart()  # queued batches and chord state are gone
    os.killpg(w0.pid, signal.SIGCONT)
    time.sleep(3)
    summary = RunLedger(paths).summary()
    assert summary["status"] == "scoring"  # stalled (no beat here), not failed nor lost silently
    assert summary["batches_done"] < summary["batches_total"]
    resumed = workers_cli(env, "resume", "outage", "--timeout", "180")
    assert resumed.returncode == 0, resumed.stderr
    ledger = RunLedger(paths).read()
    assert ledger["status"] == "published" and ledger["publish_count"] == 1
    assert _published_runs(database_url) == [("outage", "published", ledger["rows_published"])]
    again = workers_cli(env, "resume", "outage", "--timeout", "60")  # a second resume: no-op
    assert again.returncode == 0
    assert RunLedger(paths).read()["publish_count"] == 1


def test_enqueue_reproduces_rows_rejects_malformed_and_skips_the_queue(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    import re
    import time

    import polars as pl
    from polars.testing import assert_frame_equal

    fleet("w0", CLAIDEX_REPORT_HTML="1")  # an incremental run takes its reference's settings
    fleet("inc", queues="incremental")
    first = workers_cli(
        fleet.env, "full", "--data", str(sample_dataset), "--run-id", "ref", "--timeout", "120"
    )
    assert first.returncode == 0, first.stderr
    reference = pl.read_parquet(tmp_path / "runs" / "ref" / "scores.parquet")
    picked = reference.sample(n=5, seed=1).sort("npi")

    bad = workers_cli(fleet.env, "enqueue", "123", picked["npi"][0])
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: malformed NPI(s): '123' (npi not 10 digits)"

    # A long full recompute keeps the batch worker busy ...
    busy = workers_cli(
        fleet.env,
        "full",
        "--data",
        str(sample_dataset),
        "--batch-size",
        "20",
        "--run-id",
        "busy",
        "--no-wait",
    )
    assert busy.returncode == 0
    busy_paths = RunPaths(tmp_path / "runs" / "busy")
    # ... and the enqueue is served by the incremental worker meanwhile.
    served = workers_cli(
        fleet.env, "enqueue", *picked["npi"].to_list(), "1234567893", "--wait", "--timeout", "120"
    )
    assert served.returncode == 0, served.stderr
    busy_state = RunLedger(busy_paths).summary()  # still running: preparing, or scoring
    assert busy_state["status"] in ("preparing", "scoring"), busy_state["status"]
    assert busy_state["status"] == "preparing" or (
        busy_state["batches_done"] < busy_state["batches_total"]
    )
    assert "1234567893  no payment data" in served.stdout
    run_id = re.search(r"run (\S+) \(merged, reference ref\)", served.stdout).group(1)
    redone = pl.read_parquet(tmp_path / "runs" / run_id / "scores.parquet")
    assert_frame_equal(redone, picked)
    for row in picked.iter_rows(named=True):
        assert f"{row['npi']}  {row['risk_score']:6.2f}  {row['risk_label']}" in served.stdout
    # the page is drawn after the scores are out, by a task of its own
    inc = RunPaths(tmp_path / "runs" / run_id)
    assert inc.report.exists()
    deadline = time.monotonic() + 120
    while not inc.report_html.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert inc.report_html.exists(), RunLedger(inc).read().get("report_error")


def test_beat_dispatches_the_weekly_and_daily_jobs(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    import time

    schedule = {
        "CLAIDEX_FULL_SCHEDULE": "2",
        "CLAIDEX_REFRESH_SCHEDULE": "2",
        "CLAIDEX_SCHEDULED_DATA": str(sample_dataset),
    }
    worker_proc = fleet("w0", queues="batches,runs,incremental", **schedule)
    beat = CeleryProcess(
        {**fleet.env, **schedule},
        tmp_path / "beat.log",
        "beat",
        "-s",
        str(tmp_path / "beat-schedule"),
        "-l",
        "INFO",
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = worker_proc.log.read_text()
            weekly = [
                p
                for p in (tmp_path / "runs").glob("*-weekly")
                if RunLedger(RunPaths(p)).read().get("status") == "merged"
            ]
            refreshed = "Task claidex.refresh_changed" in log and "'changed': 0" in log
            if weekly and refreshed:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"beat jobs not seen:\n{beat.log.read_text()[-2000:]}")
        beat_log = beat.log.read_text()
        assert "Sending due task weekly-full-recompute (claidex.scheduled_full_run)" in beat_log
        assert "Sending due task daily-refresh-changed-npis (claidex.refresh_changed)" in beat_log
    finally:
        beat.stop()


def test_flower_lists_workers_and_tasks_and_requires_auth(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    import base64
    import json
    import time
    import urllib.error
    import urllib.request

    from tests.devservices import free_port

    refused = CeleryProcess(fleet.env, tmp_path / "open-flower.log", "flower")
    refused.process.wait(timeout=60)
    assert refused.process.returncode != 0
    assert "Flower requires authentication" in refused.log.read_text()

    port = free_port()
    env = {**fleet.env, "FLOWER_BASIC_AUTH": "ops:s3cret"}
    flower = CeleryProcess(
        env, tmp_path / "flower.log", "flower", f"--port={port}", "--address=127.0.0.1"
    )
    try:
        fleet("w0")
        assert (
            workers_cli(
                fleet.env,
                "full",
                "--data",
                str(sample_dataset),
                "--run-id",
                "seen",
                "--timeout",
                "120",
            ).returncode
            == 0
        )
        token = base64.b64encode(b"ops:s3cret").decode()

        def get(path: str, auth: bool = True) -> dict:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if auth:
                request.add_header("Authorization", f"Basic {token}")
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 120
        while True:
            try:
                tasks = get("/api/tasks")
                if any(
                    t.get("name") == "claidex.merge_and_calibrate" and t.get("state") == "SUCCESS"
                    for t in tasks.values()
                ):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, flower.log.read_text()[-2000:]
            time.sleep(0.5)
        batch = next(t for t in tasks.values() if t.get("name") == "claidex.score_batch")
        assert "seen" in batch["args"]  # task names and arguments are readable
        workers = get("/api/workers?refresh=1")
        assert any(name.startswith("w0@") for name in workers)
        for path in ("/api/workers", "/metrics", "/healthcheck"):
            with pytest.raises(urllib.error.HTTPError) as refused_request:
                get(path, auth=False)
            assert refused_request.value.code == 401, path
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
        request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"flower_events_total" in response.read()
    finally:
        flower.stop()


def test_a_redelivered_start_resumes_instead_of_preparing_again(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    import subprocess
    import sys
    import time

    reference = run_local(
        sample_dataset, Settings(batch_size=100), run_dir=tmp_path / "local", show_progress=False
    )
    fleet("w0")
    send_twice = (
        "import sys; from workers.tasks import start_full_run; "
        "args = ['twice', sys.argv[1], {'batch_size': 100}, False]; "
        "start_full_run.apply_async(args=args); start_full_run.apply_async(args=args)"
    )
    subprocess.run(
        [sys.executable, "-c", send_twice, str(sample_dataset)],
        env=fleet.env,
        check=True,
        timeout=60,
    )
    paths = RunPaths(tmp_path / "runs" / "twice")
    deadline = time.monotonic() + 120
    while RunLedger(paths).read().get("status") != "merged":
        assert RunLedger(paths).read().get("status") != "failed", RunLedger(paths).read()
        assert time.monotonic() < deadline, RunLedger(paths).read()
        time.sleep(0.3)
    time.sleep(2)  # the second start has been handled too (it resumes a merged run)
    assert RunLedger(paths).read()["status"] == "merged"
    assert paths.scores.read_bytes() == reference.scores.read_bytes()


def test_a_batch_that_keeps_killing_its_worker_fails_the_run(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    """Simulate an out-of-memory batch: each attempt dies with the pool child."""
    import json

    from scoring.stages.drive import prepare

    fleet("w0", CLAIDEX_BATCH_MAX_ATTEMPTS="2")
    paths = RunPaths(tmp_path / "runs" / "oom")
    prepare(paths, sample_dataset, Settings(batch_size=500, batch_max_attempts=2))
    # The worker "died" twice on batch 1: its ledger says running, attempt 2.
    state = {
        "batch": 1,
        "status": "running",
        "attempt": 2,
        "worker": "w0@x",
        "redelivered": True,
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    paths.batch_status(1).parent.mkdir(parents=True, exist_ok=True)
    paths.batch_status(1).write_text(json.dumps(state))
    failed = workers_cli(fleet.env, "resume", "oom", "--timeout", "120")
    assert failed.returncode == 1
    assert "worker died 2 times" in failed.stderr, failed.stderr
    assert RunLedger(paths).summary()["batches_failed"] == [1]
    assert not paths.scores.exists()


def test_concurrent_resumes_publish_once(
    sample_dataset: Path, fleet, database_url: str, tmp_path: Path
) -> None:
    import threading

    from scoring.stages.drive import prepare

    env = {**fleet.env, "DATABASE_URL": database_url}
    fleet("w0", DATABASE_URL=database_url)
    fleet("w1", DATABASE_URL=database_url)
    paths = RunPaths(tmp_path / "runs" / "twice")
    prepare(paths, sample_dataset, Settings(batch_size=200))
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(workers_cli(env, "resume", "twice", "--timeout", "180"))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert RunLedger(paths).read()["publish_count"] == 1
    assert _published_runs(database_url) == [
        ("twice", "published", RunLedger(paths).read()["rows_published"])
    ]


def test_weekly_run_handed_to_modal_falls_back_to_the_fleet_without_credentials(
    sample_dataset: Path, fleet, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys
    import time

    no_modal = {
        "CLAIDEX_FULL_ENGINE": "modal",
        "CLAIDEX_SCHEDULED_DATA": str(sample_dataset),
        "HOME": str(tmp_path),  # no ~/.modal.toml
    }
    env = {**fleet.env, **no_modal}
    fleet("w0", **no_modal)
    sent = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from workers.scheduled import scheduled_full_run as t; "
            "print(json.dumps(t.apply_async(queue='runs').get(timeout=120)))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout)
    assert result["engine"] == "celery"
    assert "Modal not usable" in result["modal_error"]
    assert "modal token new" in result["modal_error"]
    paths = RunPaths(tmp_path / "runs" / result["run_id"])
    deadline = time.monotonic() + 120
    while RunLedger(paths).read().get("status") != "merged":
        assert time.monotonic() < deadline, RunLedger(paths).read()
        time.sleep(0.5)


def test_chord_run_in_neo4j_live_mode_matches_the_embedded_local_engine(
    sample_dataset: Path, fleet, tmp_path: Path, graph_target, monkeypatch
) -> None:
    """Workers ask the Bolt server for each batch's ownership (SPEC §5 inside the fleet)."""
    import os

    from scoring.runs.manifest import RunManifest
    from tests.graphs import load_dataset_graph

    load_dataset_graph(graph_target, sample_dataset)
    local = run_local(
        sample_dataset, Settings(batch_size=400), run_dir=tmp_path / "local", show_progress=False
    )
    graph = {k: v for k, v in os.environ.items() if k.startswith("NEO4J_")}
    fleet("w0", **graph)
    result = workers_cli(
        {**fleet.env, **graph},
        "full", "--data", str(sample_dataset), "--batch-size", "400", "--graph", "neo4j-live",
        "--run-id", "live-run", "--timeout", "240",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    paths = RunPaths(tmp_path / "runs" / "live-run")
    assert RunLedger(paths).read()["status"] == "merged"
    assert paths.scores.read_bytes() == local.scores.read_bytes()
    assert RunManifest.load(paths).cfg.graph_mode == "neo4j-live"


def test_fleet_and_enqueue_on_the_production_schema_equal_the_local_engine(
    fleet, production_url: str, tmp_path: Path
) -> None:
    """Issue 10: `--source postgres` through the production objects, fleet and enqueue alike."""
    import re

    import polars as pl
    from polars.testing import assert_frame_equal

    from claidex.dev.sample import generate
    from tests.builders import claidex_cli

    data = tmp_path / "data"
    generate(data, providers=2500, seed=41, layout="production")
    for command in (("db", "init"), ("db", "load", str(data))):
        done = claidex_cli(*command, env={"DATABASE_URL": production_url})
        assert done.returncode == 0, done.stderr
    local = run_local(data, Settings(batch_size=400), run_dir=tmp_path / "l", show_progress=False)
    env = {**fleet.env, "DATABASE_URL": production_url}
    fleet("w0", DATABASE_URL=production_url)
    fleet("inc", queues="incremental", DATABASE_URL=production_url)
    full = workers_cli(
        env, "full", "--source", "postgres", "--batch-size", "400", "--shards", "3",
        "--run-id", "prod", "--timeout", "240",
    )  # fmt: skip
    assert full.returncode == 0, full.stderr + full.stdout
    assert (tmp_path / "runs" / "prod" / "scores.parquet").read_bytes() == local.scores.read_bytes()
    exported = tmp_path / "runs" / "prod" / "source" / "payments_combined"  # one part per task
    assert sorted(p.name for p in exported.glob("*.parquet")) == [
        f"part-{i:05d}.parquet" for i in range(3)
    ]

    picked = pl.read_parquet(local.scores).sample(n=6, seed=3).sort("npi")
    served = workers_cli(env, "enqueue", *picked["npi"].to_list(), "--wait", "--timeout", "120")
    assert served.returncode == 0, served.stderr
    run_id = re.search(r"run (\S+) \(\w+, reference prod\)", served.stdout).group(1)
    assert_frame_equal(pl.read_parquet(tmp_path / "runs" / run_id / "scores.parquet"), picked)
    import psycopg

    with psycopg.connect(production_url) as conn:
        rows = conn.execute(
            "SELECT npi, run_id, risk_score::float8 FROM provider_risk_scores "
            "WHERE npi = ANY(%s) ORDER BY npi",
            (picked["npi"].to_list(),),
        ).fetchall()
        total = conn.execute("SELECT count(*), count(DISTINCT npi) FROM provider_risk_scores")
        assert total.fetchone() == (pl.read_parquet(local.scores).height,) * 2  # no duplicates
    assert rows == [
        (n, run_id, s) for n, s in zip(picked["npi"], picked["risk_score"], strict=True)
    ]


def test_the_fleet_blocks_a_bad_feed_like_the_local_engine(
    sample_dataset: Path, fleet, database_url: str, tmp_path: Path
) -> None:
    """Issue 24: the merge task runs the same checks; `full` exits 3 with their line, the
    table is untouched, and a resume does not re-run the run."""
    from tests.builders import table_bytes, without_medicaid

    fleet("w0", DATABASE_URL=database_url)
    env = {**fleet.env, "DATABASE_URL": database_url}
    first = workers_cli(
        env, "full", "--data", str(sample_dataset), "--run-id", "ref", "--timeout", "120"
    )
    assert first.returncode == 0, first.stderr
    before = table_bytes(database_url)
    bad = without_medicaid(sample_dataset, tmp_path / "bad")
    held = workers_cli(env, "full", "--data", str(bad), "--run-id", "held", "--timeout", "120")
    assert held.returncode == 3, held.stderr
    line = held.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("error: run held blocked before publish")
        and "program_rows[Medicaid]" in line
    )
    assert table_bytes(database_url) == before
    paths = RunPaths(tmp_path / "runs" / "held")
    assert RunLedger(paths).read()["status"] == "blocked"
    merged_at = paths.scores.stat().st_mtime_ns
    again = workers_cli(env, "resume", "held", "--timeout", "60")
    assert again.returncode == 3
    assert paths.scores.stat().st_mtime_ns == merged_at and table_bytes(database_url) == before
    status = workers_cli(env, "status", "held")
    assert status.returncode == 3 and '"verdict": "block"' in status.stdout
