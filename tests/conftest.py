from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from claidex.devservices import PrivatePostgres
from claidex.sample_data import generate
from scoring.db.connection import connect
from scoring.db.schema import init_schema


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
