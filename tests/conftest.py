from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from claidex.devservices import PrivatePostgres
from claidex.sample_data import generate
from scoring.db.connection import connect
from scoring.db.schema import init_schema
from scoring.graphdb.connection import Neo4jTarget, neo4j_target
from tests.bolt_server import BoltServer
from tests.graphs import clear_graph


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


@pytest.fixture
def database_url(postgres_server: PrivatePostgres) -> Iterator[str]:
    """A fresh database with the Claidex schema, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
    with connect(url) as conn:
        init_schema(conn)
    yield url
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')  # type: ignore[arg-type]


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
