"""Private, throw-away server instances for tests and benchmarks (never the shared ones).

PostgreSQL refuses to run as root, so when we are root the cluster is created
and run as the `postgres` system user. Everything lives in one temporary
directory (data, socket, log) that `stop()` removes.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        msg = f"{name} not found: install PostgreSQL (apt-get install -y postgresql)"
        raise RuntimeError(msg)
    return found


class PrivatePostgres:
    """A PostgreSQL cluster on a free loopback port with password authentication."""

    def __init__(self, *, durable: bool = False) -> None:
        """durable=False turns fsync and friends off: right for tests, wrong for benchmarks."""
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="claidex-pg-"))
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.user = "postgres"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_postgres, *args], capture_output=True, timeout=120)
        if done.returncode != 0:
            self.stop()
            msg = f"{Path(args[0]).name} failed: {done.stderr.decode(errors='replace')[-2000:]}"
            raise RuntimeError(msg)

    def start(self) -> PrivatePostgres:
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            self.root.chmod(0o755)
            shutil.chown(sock, "postgres")
            shutil.chown(pwfile, "postgres")
            shutil.chown(self.root, "postgres")
        self._run(
            _postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            *([] if self.durable else ["--no-sync"]),
        )
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        """pg_ctl start on the cluster's port and socket (first start and every resume)."""
        data, sock = self.root / "data", self.root / "sock"
        options = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            _postgres_bin("pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage); `resume()` starts it again."""
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"
        )

    def resume(self) -> None:
        """Start a paused server again on the same port, with its data."""
        self._pg_ctl_start()

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [
                    *self._as_postgres,
                    _postgres_bin("pg_ctl"),
                    "-D",
                    str(data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        msg = "redis-server not found: install Redis (apt-get install -y redis-server)"
        raise RuntimeError(msg)
    return found


class PrivateRedis:
    """A redis-server on a free loopback port; nothing is kept on disk unless `persistent`
    (append-only file, fsync every second, as in docker-compose.yml)."""

    def __init__(self, *, persistent: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="claidex-redis-"))
        self.port = free_port()
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [
                _redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.root / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        msg = f"redis-server did not start on port {self.port}"
        raise RuntimeError(msg)

    def kill(self) -> None:
        """Stop the server abruptly (its data is gone: nothing is persisted)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self, *, graceful: bool = False) -> None:
        """Kill and start again on the same port: without persistence an outage that loses
        everything queued; `graceful` (SIGTERM) lets a persistent server flush its AOF."""
        if graceful and self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
