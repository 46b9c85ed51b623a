"""A real Bolt + Cypher server for the graph tests: ArcadeDB embedded in a child process.

A child process (not the test process) so a test can kill it mid-run and start it again
on the same data; loopback only, a random root password, stopped at the end.

    python -m tests.bolt_server ROOT BOLT_PORT HTTP_PORT DATABASE   (prints READY, then serves)
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET_LOGGING = """handlers = java.util.logging.ConsoleHandler
.level = WARNING
java.util.logging.ConsoleHandler.level = WARNING
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BoltServer:
    """Start/stop/kill an ArcadeDB server with the Bolt plugin; `env()` gives the NEO4J_* set."""

    def __init__(self, root: Path, database: str = "claidex") -> None:
        self.root = root
        self.database = database
        self.password = secrets.token_hex(12)
        self.bolt_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[str] | None = None
        self.started = False
        self.log = root / "server.log"

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    def host_port(self) -> str:
        return f"127.0.0.1:{self.bolt_port}"

    def env(self) -> dict[str, str]:
        return {
            "NEO4J_URI": self.uri,
            "NEO4J_USER": "root",
            "NEO4J_PASSWORD": self.password,
            "NEO4J_DATABASE": self.database,
        }

    def start(self, timeout: float = 120) -> BoltServer:
        """Start; a first start whose ports another process took (free_port() releases them:
        a second xdist worker may bind them first) tries new ones, a restart keeps its ports."""
        for _ in range(4):
            seen = self.log.stat().st_size if self.log.exists() else 0
            try:
                return self._start(timeout)
            except RuntimeError:
                taken = "Unable to listen" in self.log.read_text(errors="replace")[seen:]
                if self.started or not taken:
                    raise
            self.bolt_port, self.http_port = free_port(), free_port()
        msg = "the Bolt server found no free ports"
        raise RuntimeError(msg)

    def _start(self, timeout: float) -> BoltServer:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [str(self.root / "data"), str(self.bolt_port), str(self.http_port), self.database]
        env = {**os.environ, "CLAIDEX_BOLT_PASSWORD": self.password}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.bolt_server", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log.open("ab"),
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("READY"):
                self.started = True
                return self
            if not line and self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"Bolt server did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """The server dies at once (kill -9), as a crashed or unreachable Neo4j would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


def serve(data: str, bolt_port: int, http_port: int, database: str) -> None:
    import arcadedb_embedded as arcade
    from arcadedb_embedded.jvm import start_jvm

    logging_file = Path(data).parent / "logging.properties"
    logging_file.write_text(QUIET_LOGGING)
    start_jvm(heap_size="1g", jvm_args=[f"-Djava.util.logging.config.file={logging_file}"])
    server = arcade.create_server(
        data,
        root_password=os.environ["CLAIDEX_BOLT_PASSWORD"],
        config={
            "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
            "bolt_port": bolt_port,
            "http_port": http_port,
            "host": "127.0.0.1",
        },
    )
    server.start()
    server.create_database(database)  # get or create
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.wait(0.2):
        pass
    server.stop()
    os._exit(0)  # Bolt connection threads are not daemons: do not wait for them


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
