"""Issue 24: run metrics scraped over loopback equal the ledger's; alerts reach a webhook."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scoring.runs.alerts import send_alert
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.builders import claidex_cli
from tests.http_recorder import DeadEndpoint, Recorder

SECRET = "pw-Zq81sekret"


def _families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    parsed: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            parsed.setdefault(sample.name, {})[key] = sample.value
    return parsed


def _value(parsed: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return parsed[name][tuple(sorted(labels.items()))]


def _scrape(root: Path) -> str:
    env = {**os.environ, "CLAIDEX_RUN_ROOT": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", "metrics", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+/metrics)", line).group(1)  # type: ignore[union-attr]
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_metrics_scraped_over_loopback_equal_the_ledger_and_are_pushed(
    sample_dataset: Path, database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    url = database_url  # a fresh database after `db init`
    with Recorder() as gateway:
        env = {
            "DATABASE_URL": url,
            "CLAIDEX_RUN_ROOT": str(root),
            "CLAIDEX_PUSHGATEWAY": gateway.url,
        }
        done = claidex_cli(
            "run", "--data", str(sample_dataset), "--run-dir", str(root / "m1"), "--quiet", env=env
        )
        assert done.returncode == 0, done.stderr
        text = _scrape(root)
        pushed = [r for r in gateway.received if r.path == "/metrics/job/claidex/kind/full"]
    state = RunLedger(RunPaths(root / "m1")).read()
    parsed = _families(text)
    assert _value(parsed, "claidex_run_info", kind="full", run_id="m1", status="published") == 1
    assert _value(parsed, "claidex_run_status", kind="full", status="published") == 1
    assert _value(parsed, "claidex_run_status", kind="full", status="failed") == 0
    for step, seconds in state["timings"].items():
        assert (
            _value(parsed, "claidex_run_step_duration_seconds", kind="full", step=step) == seconds
        )
    for name, n in state["rows"].items():
        assert _value(parsed, "claidex_run_rows", kind="full", rows=name) == n
    assert (
        state["rows"]["providers_scored"] == pl.read_parquet(root / "m1" / "scores.parquet").height
    )
    for check in state["checks"]["checks"]:
        verdict = {"pass": 0, "warn": 1, "block": 2}[check["verdict"]]
        assert (
            _value(parsed, "claidex_run_check_verdict", kind="full", check=check["name"]) == verdict
        )
    published_at = _value(parsed, "claidex_last_successful_publish_timestamp_seconds", kind="full")
    assert abs(published_at - time.time()) < 600
    assert _value(parsed, "claidex_runs", status="published") == 1
    # the run's own push, at its end: the same families, parsed from the PUT body
    assert pushed and pushed[-1].method == "POST"  # pushadd: the group's other families stay
    body = _families(pushed[-1].body.decode())
    assert _value(body, "claidex_run_status", kind="full", status="published") == 1
    if shutil.which("promtool"):
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=text, text=True, capture_output=True
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_failed_and_blocked_runs_alert_without_secrets(
    sample_dataset: Path, database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    url = database_url  # a fresh database after `db init`
    with Recorder() as hook:
        env = {
            "DATABASE_URL": url,
            "CLAIDEX_RUN_ROOT": str(root),
            "CLAIDEX_ALERT_WEBHOOK": hook.url + "/hook",
            "NEO4J_PASSWORD": SECRET,
        }
        first = claidex_cli(
            "run", "--data", str(sample_dataset), "--run-dir", str(root / "a"), "--quiet", env=env
        )
        assert first.returncode == 0 and hook.received == []  # a good run sends nothing
        # blocked: a feed whose payments lost a program
        bad = tmp_path / "bad"
        shutil.copytree(sample_dataset, bad)
        payments = pl.read_parquet(sample_dataset / "payments_combined.parquet")
        payments.filter(pl.col("program") != "Medicaid").write_parquet(
            bad / "payments_combined.parquet"
        )
        held = claidex_cli(
            "run", "--data", str(bad), "--run-dir", str(root / "b"), "--quiet", env=env
        )
        assert held.returncode == 3
        # failed: a publish to a database that refuses the password
        wrong = re.sub(r"://([^:@/]+):[^@]*@", rf"://\1:{SECRET}@", url)
        failed = claidex_cli(
            "run", "--data", str(sample_dataset), "--run-dir", str(root / "c"), "--quiet",
            env={**env, "DATABASE_URL": wrong, "CLAIDEX_DB_OUTAGE_WINDOW": "0"},
        )  # fmt: skip
        assert failed.returncode != 0
    messages = [json.loads(r.body) for r in hook.received]
    assert all(set(m) == {"text"} for m in messages)
    texts = [m["text"] for m in messages]
    blocked = [t for t in texts if t.startswith("claidex run b: blocked:")]
    assert len(blocked) == 1 and "program_rows[Medicaid]" in blocked[0]
    assert "claidex publish b --accept" in blocked[0]
    failures = [t for t in texts if t.startswith("claidex run c: failed:")]
    assert failures and "claidex resume c" in failures[-1]
    assert not any(SECRET in t for t in texts)


def test_a_dead_webhook_costs_no_more_than_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    with DeadEndpoint() as dead:
        monkeypatch.setenv("CLAIDEX_ALERT_WEBHOOK", dead.url)
        monkeypatch.setenv("CLAIDEX_ALERT_TIMEOUT", "1")
        started = time.monotonic()
        assert send_alert("r", "failed", "at score: boom") is False
        assert time.monotonic() - started < 1 + 0.5


def test_the_message_is_scrubbed_of_every_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    with Recorder() as hook:
        monkeypatch.setenv("CLAIDEX_ALERT_WEBHOOK", hook.url + f"/T0/{SECRET}")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-" + SECRET)
        detail = (
            f"postgresql://claidex:{SECRET}@db:5432/x refused; aws-{SECRET}; {hook.url}/T0/{SECRET}"
        )
        assert send_alert("r", "failed", detail, "claidex resume r") is True
    (text,) = [json.loads(r.body)["text"] for r in hook.received]
    assert SECRET not in text and "postgresql://claidex:***@db:5432/x" in text
    assert text.endswith("claidex resume r")


def test_a_webhook_answering_garbage_or_trickling_never_raises_nor_overruns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Non-HTTP bytes, or a status line a byte at a time: the call returns within its
    budget (a socket timeout bounds each read, not the whole reply)."""
    import socket
    import threading

    def serve(sock: socket.socket, reply: bytes, every: float) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
                for byte in reply:
                    conn.sendall(bytes([byte]))
                    time.sleep(every)
            except OSError:
                pass
            finally:
                conn.close()

    monkeypatch.setenv("CLAIDEX_ALERT_TIMEOUT", "1")
    for reply, every in ((b"garbage\r\n\r\n", 0.0), (b"HTTP/1.1 200 OK\r\n" * 50, 0.1)):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        threading.Thread(target=serve, args=(sock, reply, every), daemon=True).start()
        monkeypatch.setenv("CLAIDEX_ALERT_WEBHOOK", f"http://127.0.0.1:{sock.getsockname()[1]}/")
        started = time.monotonic()
        assert send_alert("r", "failed", "boom") is False
        assert time.monotonic() - started < 1 + 0.5
        sock.close()
