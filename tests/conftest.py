from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from claidex.dev.sample import generate
from scoring.db.connection import connect
from scoring.db.schema import init_schema
from scoring.graphdb.connection import Neo4jTarget, neo4j_target
from tests.bolt_server import BoltServer
from tests.devservices import PrivatePostgres, PrivateRedis, PrivateS3
from tests.fleet import CeleryProcess, fleet_env, worker
from tests.graphs import clear_graph

# Drawing report.html costs ~0.6 s a run (more in a fresh process) and the suite makes
# hundreds of runs: off unless a test asks (report.json is always written). The report page
# tests and the Celery chord test switch it on (CLAIDEX_REPORT_HTML / Settings(report_html)).
os.environ.setdefault("CLAIDEX_REPORT_HTML", "false")


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated CMS-like dataset shared by the slower end-to-end tests."""
    directory = tmp_path_factory.mktemp("sample")
    generate(directory, providers=3000, seed=11)
    return directory


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster for the whole session (loopback, random password)."""
    server = PrivatePostgres().start()
    try:
        yield server
    finally:
        server.stop()


PRODUCTION_SCHEMA = Path(__file__).parent / "fixtures" / "production_schema.sql"


@contextmanager
def fresh_database(server: PrivatePostgres) -> Iterator[str]:
    """An empty database on the private server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        yield server.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def database_url(postgres_server: PrivatePostgres) -> Iterator[str]:
    """A fresh database after `db init` (the production layout laid down by us)."""
    with fresh_database(postgres_server) as url:
        with connect(url) as conn:
            init_schema(conn)
        yield url


@pytest.fixture
def production_url(postgres_server: PrivatePostgres) -> Iterator[str]:
    """A fresh database holding the production objects as issue 10 states them, no `db init`."""
    with fresh_database(postgres_server) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PRODUCTION_SCHEMA.read_text())  # type: ignore[arg-type]
        yield url


GRAPH_SERVERS = ["arcadedb"] + (["neo4j"] if os.environ.get("NEO4J_URI") else [])
NEO4J_VARIABLES = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")
DEVELOPER_NEO4J = {k: os.environ[k] for k in NEO4J_VARIABLES if k in os.environ}


@pytest.fixture(scope="session")
def arcadedb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BoltServer]:
    """ArcadeDB's Bolt server for the whole session (loopback, random password)."""
    server = BoltServer(tmp_path_factory.mktemp("bolt")).start()
    try:
        yield server
    finally:
        server.stop()


def use_graph_server(
    server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Neo4jTarget:
    """NEO4J_* pointed at an emptied graph: ArcadeDB's Bolt server, or the developer's Neo4j
    when NEO4J_URI is set (its graph is replaced by the tests' graphs)."""
    env = DEVELOPER_NEO4J if server == "neo4j" else request.getfixturevalue("arcadedb_server").env()
    for name in NEO4J_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    target = neo4j_target()
    clear_graph(target)
    return target


@pytest.fixture(params=GRAPH_SERVERS)
def graph_target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Neo4jTarget:
    return use_graph_server(request.param, request, monkeypatch)


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    """A private Redis for one test (nothing persisted)."""
    with PrivateRedis() as server:
        yield server


@pytest.fixture
def fleet(redis_server: PrivateRedis, tmp_path: Path):
    """Start worker processes on demand; all stopped after the test."""
    started: list[CeleryProcess] = []
    env = fleet_env(redis_server.url, tmp_path / "runs")

    def start(
        name: str, queues: str = "batches,runs", concurrency: int = 1, **extra: str
    ) -> CeleryProcess:
        """A worker process; extra environment (e.g. DATABASE_URL) on top of the fleet's."""
        proc = worker({**env, **extra}, tmp_path / f"{name}.log", name, queues, concurrency)
        started.append(proc)
        return proc

    start.env = env  # type: ignore[attr-defined]
    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[PrivateS3]:
    """A private SeaweedFS S3 server (loopback, random credentials) for the session."""
    with PrivateS3() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: PrivateS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS variables of the private server, set in this process (and so in the
    processes it spawns); a fresh prefix per test: `s3_env["root"]`."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return {**s3_server.env(), "root": f"s3://{s3_server.bucket}/t-{uuid.uuid4().hex[:10]}"}
