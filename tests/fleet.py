"""Real Celery worker/beat/flower processes for tests, on a private Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def fleet_env(
    redis_url: str, run_root: Path | str, database_url: str | None = None, **extra: str
) -> dict[str, str]:
    env = {  # never the developer's database or Modal account
        k: v
        for k, v in os.environ.items()
        if k != "DATABASE_URL" and not k.startswith(("PG", "MODAL_"))
    }
    env.update(
        {
            "REDIS_URL": redis_url,
            "CLAIDEX_RUN_ROOT": str(run_root),
            "CLAIDEX_VISIBILITY_TIMEOUT": "20",  # above the time limit (Settings checks)
            "CLAIDEX_TASK_TIME_LIMIT": "18",
            "CLAIDEX_TASK_SOFT_TIME_LIMIT": "15",
            "CLAIDEX_LEASE_SECONDS": "3",
            "CLAIDEX_HEARTBEAT_SECONDS": "0.5",
            "CLAIDEX_WORKER_SILENCE_SECONDS": "4",
            "CLAIDEX_STALL_SECONDS": "4",
            "CLAIDEX_TASK_MAX_RETRIES": "2",
            "CLAIDEX_RETRY_BACKOFF_MAX": "1",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


class CeleryProcess:
    """`celery -A workers <role> ...` in its own process group, logged to a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, cwd: Path = ROOT) -> None:
        self.log = log
        self.handle = log.open("ab")
        if cwd != ROOT:  # a worker of its own directory still imports this checkout
            env = {**env, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", *args],
            cwd=cwd,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.pid).children(recursive=True)]

    def wait_ready(self, text: str = "ready.", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery exited early:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"celery not ready:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (main process and pool children)."""
        if self.process.poll() is None:
            os.killpg(self.pid, sig)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.handle.close()


def worker(
    env: dict[str, str],
    log: Path,
    name: str,
    queues: str = "batches,runs",
    concurrency: int = 1,
    cwd: Path = ROOT,
) -> CeleryProcess:
    proc = CeleryProcess(
        env,
        log,
        "worker",
        "-Q",
        queues,
        "-n",
        f"{name}@%h",
        "--concurrency",
        str(concurrency),
        "--pool",
        "prefork",
        "-l",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        cwd=cwd,
    )
    proc.wait_ready()
    return proc


def workers_cli(
    env: dict[str, str], *args: str, timeout: float = 300, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers", *args, "--quiet"]
        if args[0] in ("full", "resume")
        else [sys.executable, "-m", "workers", *args],
        cwd=cwd,
        env=env if cwd == ROOT else {**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def beat(env: dict[str, str], log: Path, schedule_file: Path) -> CeleryProcess:
    """celery beat: the watchdog (and the schedules) as the fleet runs them."""
    proc = CeleryProcess(env, log, "beat", "-s", str(schedule_file), "-l", "INFO")
    proc.wait_ready("beat: Starting")
    return proc


def workers_cli_background(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`python -m workers ...` still following while a test injects a fault."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers", *args, "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float = 120, every: float = 0.002, what: str = "") -> None:
    """Poll `predicate` (fast: faults are injected the moment a state shows)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never saw {what or predicate}")
        time.sleep(every)
