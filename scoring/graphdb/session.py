"""Driver lifetime and error phrasing: every Neo4j failure becomes one line without secrets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import neo4j
from neo4j import exceptions as neo4j_errors

from scoring.config import Settings
from scoring.graphdb.connection import (
    GraphError,
    GraphUnavailableError,
    Neo4jTarget,
    driver_options,
)
from scoring.runs.retry_policy import Verdict, graph_verdict

NEO4J_FAILURES = (neo4j_errors.Neo4jError, neo4j_errors.DriverError, OSError)


def graph_error(exc: BaseException, target: Neo4jTarget, doing: str) -> GraphError:
    """One line: what failed, where (host, database) and why; transient kinds stay retryable."""
    if isinstance(exc, GraphError):
        return exc
    if isinstance(exc, neo4j_errors.AuthError):
        reason = f"authentication failed for user {target.user!r}"
    else:
        reason = target.scrub(str(exc)) or type(exc).__name__
    msg = f"{doing} failed at Neo4j {target.describe()}: {reason}"
    if graph_verdict(exc) is not Verdict.FINAL:  # worth retrying the batch (step) later
        return GraphUnavailableError(msg)
    return GraphError(msg)


@contextmanager
def graph_session(target: Neo4jTarget, cfg: Settings, doing: str) -> Iterator[neo4j.Session]:
    """A verified session on the target database. Any Neo4j failure, in connecting or in the
    caller's queries inside the `with` block, raises GraphError (one line) naming `doing`."""
    try:
        with neo4j.GraphDatabase.driver(
            target.uri, auth=(target.user, target.password), **driver_options(cfg)
        ) as driver:
            driver.verify_connectivity()
            with driver.session(database=target.database) as session:
                yield session
    except NEO4J_FAILURES as exc:
        raise graph_error(exc, target, doing) from None


def read_rows(session: neo4j.Session, query: str, **params: Any) -> tuple[list[str], list[tuple]]:
    """(columns, rows) of a read query in a managed transaction (retried on transient errors)."""

    def work(tx: neo4j.ManagedTransaction) -> tuple[list[str], list[tuple]]:
        result = tx.run(query, **params)
        return list(result.keys()), [tuple(record.values()) for record in result]

    return session.execute_read(work)


def write(session: neo4j.Session, query: str, **params: Any) -> None:
    """One write query in a managed transaction (retried on transient errors)."""

    def work(tx: neo4j.ManagedTransaction) -> None:
        tx.run(query, **params).consume()

    session.execute_write(work)


def ping(session: neo4j.Session) -> None:
    """A trivial read in the target database: a wrong database name fails here, not later."""
    read_rows(session, "RETURN 1 AS ok")
