"""scoring.runs.retry_policy on real exception objects: raised by the libraries against a closed
port, a private Postgres or /dev/full where that is cheap, else built as the library builds
them (psycopg's class for a SQLSTATE, the driver's own classes)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import kombu
import kombu.exceptions
import modal.exception
import neo4j
import neo4j.exceptions
import psycopg
import psycopg.errors
import pytest
import redis
import redis.backoff
import redis.exceptions
import redis.retry

from scoring.db.connection import (
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    connect,
    error_class,
)
from scoring.errors import (
    BatchGaveUpError,
    InputError,
    RunFileError,
    StepGaveUpError,
    TransientError,
)
from scoring.graphdb.connection import GraphError, GraphUnavailableError, Neo4jTarget
from scoring.graphdb.session import graph_error
from scoring.runs.ledger import RETRY_PENDING, RunLedger
from scoring.runs.outage import OutageError, through_outage
from scoring.runs.retry_policy import (
    PG_BUSY,
    PG_GONE,
    Verdict,
    exhausted,
    final_types,
    graph_verdict,
    is_outage,
    is_transient,
    out_of_attempts,
    retried_by_type,
    transient_types,
    verdict,
)
from scoring.runs.store import RunPaths
from tests.conftest import fresh_database
from tests.devservices import PrivatePostgres, free_port

FINAL, EXHAUSTED, TRANSIENT, OUTAGE = (
    Verdict.FINAL,
    Verdict.EXHAUSTED,
    Verdict.TRANSIENT,
    Verdict.OUTAGE,
)


def raised(action: Callable[[], object]) -> BaseException:
    """The exception `action` raises (the test fails if it raises none)."""
    try:
        action()
    except BaseException as exc:  # the caller judges it
        return exc
    pytest.fail("expected an exception")


def pg_error(sqlstate: str) -> psycopg.Error:
    """What psycopg raises for a server error: the class registered for its SQLSTATE."""
    return psycopg.errors.lookup(sqlstate)(f"server said {sqlstate}")


def closed_url() -> str:
    return f"postgresql://postgres:pw@127.0.0.1:{free_port()}/postgres"


# --- Postgres -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("08006", OUTAGE),  # connection failure
        ("08P01", OUTAGE),  # protocol violation: class 08
        ("57P01", OUTAGE),  # admin shutdown (a restart terminates us)
        ("57P02", OUTAGE),  # crash shutdown
        ("57P03", OUTAGE),  # cannot connect now (starting up)
        ("53100", TRANSIENT),  # disk full (the server's)
        ("53300", TRANSIENT),  # too many connections
        ("40001", TRANSIENT),  # serialization failure
        ("40P01", TRANSIENT),  # deadlock
        ("55P03", TRANSIENT),  # lock timeout (publish sets one)
        ("57014", FINAL),  # query canceled (a statement timeout, a Ctrl-C)
        ("57P04", FINAL),  # database dropped
        ("28P01", FINAL),  # invalid password, when the server reports it on a query
        ("42P01", FINAL),  # undefined table
        ("23505", FINAL),  # unique violation
        ("22012", FINAL),  # division by zero
    ],
)
def test_postgres_by_sqlstate(sqlstate: str, expected: Verdict) -> None:
    assert verdict(pg_error(sqlstate)) is expected


def test_postgres_sqlstate_without_a_class_is_judged_by_its_sqlstate_class() -> None:
    """psycopg raises the base class of a code it has no class for, the SQLSTATE set on it."""
    future = psycopg.OperationalError("a connection exception PostgreSQL 99 invented")
    future.sqlstate = "08ZZZ"
    assert verdict(future) is OUTAGE
    busy = psycopg.OperationalError("insufficient resources of a new kind")
    busy.sqlstate = "53ZZZ"
    assert verdict(busy) is TRANSIENT


def test_postgres_closed_port_is_an_outage_raw_and_wrapped() -> None:
    url = closed_url()
    raw = raised(lambda: psycopg.connect(url, connect_timeout=5))
    assert isinstance(raw, psycopg.OperationalError) and raw.sqlstate is None  # libpq: no code
    assert verdict(raw) is OUTAGE
    wrapped = raised(lambda: connect(url))
    assert type(wrapped) is DatabaseUnavailableError
    assert is_outage(wrapped) and is_transient(wrapped)


def test_postgres_interface_errors_are_final() -> None:
    assert verdict(psycopg.InterfaceError("the cursor is closed")) is FINAL
    assert verdict(psycopg.ProgrammingError("query has no results")) is FINAL


def test_postgres_real_server_errors(postgres_server: PrivatePostgres) -> None:
    """A refusal (no SQLSTATE while connecting: libpq's text decides) is final, a terminated
    backend an outage, a serialization failure transient, a bad query final."""
    pg = postgres_server
    wrong_password = pg.url.replace(pg.password, "not-it")
    refused = raised(lambda: psycopg.connect(wrong_password, connect_timeout=5))
    assert refused.sqlstate is None and verdict(refused) is FINAL
    no_database = pg.url.rsplit("/", 1)[0] + "/no_such_db"
    assert verdict(raised(lambda: psycopg.connect(no_database, connect_timeout=5))) is FINAL
    wrapped = raised(lambda: connect(wrong_password))
    assert type(wrapped) is DatabaseError and not is_transient(wrapped)
    assert "not-it" not in str(wrapped)

    with psycopg.connect(pg.url, autocommit=True) as admin, psycopg.connect(pg.url) as victim:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        terminated = raised(lambda: victim.execute("SELECT 1"))
    assert isinstance(terminated, psycopg.errors.AdminShutdown)
    assert verdict(terminated) is OUTAGE

    with fresh_database(pg) as url:
        with psycopg.connect(url, autocommit=True) as setup:
            setup.execute("CREATE TABLE t (k int PRIMARY KEY, v int)")
            setup.execute("INSERT INTO t VALUES (1, 0)")
        with psycopg.connect(url) as first, psycopg.connect(url, autocommit=True) as other:
            first.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            first.execute("SELECT v FROM t WHERE k = 1")
            other.execute("UPDATE t SET v = v + 1 WHERE k = 1")
            lost = raised(lambda: first.execute("UPDATE t SET v = v + 1 WHERE k = 1"))
            first.rollback()
            bad = raised(lambda: other.execute("SELECT 1 / 0"))
    assert isinstance(lost, psycopg.errors.SerializationFailure)
    assert verdict(lost) is TRANSIENT and error_class(lost) is DatabaseBusyError
    assert verdict(bad) is FINAL and error_class(bad) is DatabaseError


# --- Neo4j ----------------------------------------------------------------------------------
def test_neo4j_closed_port_is_an_outage_and_graph_error_keeps_it_retryable() -> None:
    port = free_port()
    target = Neo4jTarget(f"bolt://127.0.0.1:{port}", "neo4j", "pw", "neo4j")

    def connect_graph() -> None:
        with neo4j.GraphDatabase.driver(target.uri, auth=("neo4j", "pw")) as driver:
            driver.verify_connectivity()

    gone = raised(connect_graph)
    assert isinstance(gone, neo4j.exceptions.ServiceUnavailable)
    assert verdict(gone) is OUTAGE
    assert isinstance(graph_error(gone, target, "ping"), GraphUnavailableError)
    assert is_outage(GraphUnavailableError("gone")) and is_transient(GraphUnavailableError("x"))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (neo4j.exceptions.SessionExpired("routing table gone"), OUTAGE),
        (neo4j.exceptions.IncompleteCommit("connection lost during commit"), OUTAGE),
        (neo4j.exceptions.TransientError("deadlock"), OUTAGE),
        (neo4j.exceptions.DatabaseError("database shutting down"), OUTAGE),
        (neo4j.exceptions.AuthError("unauthorized"), FINAL),
        (neo4j.exceptions.CypherSyntaxError("bad query"), FINAL),
        (neo4j.exceptions.ConfigurationError("bad uri"), FINAL),
    ],
)
def test_neo4j_by_class(error: BaseException, expected: Verdict) -> None:
    assert verdict(error) is expected


def test_graph_context_makes_any_socket_error_the_links() -> None:
    refused = raised(lambda: socket.create_connection(("127.0.0.1", free_port()), timeout=5))
    assert graph_verdict(refused) is OUTAGE
    assert graph_verdict(OSError(113, "No route to host")) is OUTAGE
    assert verdict(OSError(113, "No route to host")) is FINAL  # outside a Neo4j conversation
    target = Neo4jTarget("bolt://h:7687", "neo4j", "pw", "neo4j")
    assert type(graph_error(RuntimeError("rows missing"), target, "q")) is GraphError
    assert type(graph_error(neo4j.exceptions.AuthError("no"), target, "q")) is GraphError


# --- Redis and kombu ------------------------------------------------------------------------
def test_redis_closed_port_is_transient_a_refused_password_is_not() -> None:
    no_retry = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
    client = redis.Redis(port=free_port(), socket_connect_timeout=2, retry=no_retry)
    down = raised(client.ping)
    assert isinstance(down, redis.exceptions.ConnectionError)
    assert verdict(down) is TRANSIENT
    assert verdict(redis.exceptions.TimeoutError("Timeout reading from socket")) is TRANSIENT
    assert verdict(redis.exceptions.BusyLoadingError("loading the dataset")) is TRANSIENT
    assert verdict(redis.exceptions.AuthenticationError("invalid password")) is FINAL
    assert verdict(redis.exceptions.ResponseError("WRONGTYPE")) is FINAL


def test_kombu_closed_broker_is_transient() -> None:
    def reach() -> None:
        with kombu.Connection(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)

    down = raised(reach)
    assert isinstance(down, kombu.exceptions.OperationalError)
    assert verdict(down) is TRANSIENT
    assert verdict(kombu.exceptions.EncodeError("not JSON")) is FINAL


# --- Modal ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (modal.exception.ConnectionError("cannot reach api.modal.com"), TRANSIENT),
        (modal.exception.InternalFailure("input lost"), TRANSIENT),
        (modal.exception.ServiceError("stream reset"), TRANSIENT),
        (modal.exception.ResourceExhaustedError("rate limited"), TRANSIENT),
        (modal.exception.AuthError("token rejected"), FINAL),
        (modal.exception.NotFoundError("app not deployed"), FINAL),
        (modal.exception.FunctionTimeoutError("ran past its timeout"), FINAL),
        (modal.exception.InvalidError("bad argument"), FINAL),
    ],
)
def test_modal_by_class(error: BaseException, expected: Verdict) -> None:
    assert verdict(error) is expected


def test_modal_body_hands_back_only_what_is_exhausted() -> None:
    gave_up = BatchGaveUpError("batch 2: its worker died 3 times")
    assert verdict(gave_up) is EXHAUSTED and exhausted(gave_up) and not is_transient(gave_up)
    assert exhausted(StepGaveUpError("stage count shard 1: its worker died 3 times"))
    assert not exhausted(RunFileError("torn chunk"))  # raised: Modal retries it, as before
    assert [out_of_attempts(attempt, 3) for attempt in (1, 3, 4)] == [False, False, True]


# --- disk and sockets -----------------------------------------------------------------------
def test_disk_full_and_permission_errors_are_final(tmp_path: Path) -> None:
    def fill() -> None:
        with open("/dev/full", "wb") as device:
            device.write(b"x")

    full = raised(fill)
    assert isinstance(full, OSError) and full.errno == 28  # ENOSPC, a real one
    assert verdict(full) is FINAL
    assert verdict(raised(lambda: (tmp_path / "missing" / "f").read_bytes())) is FINAL
    assert verdict(raised(lambda: tmp_path.write_bytes(b"x"))) is FINAL  # a directory
    assert verdict(PermissionError(13, "Permission denied")) is FINAL


def test_socket_errors_are_transient() -> None:
    refused = raised(lambda: socket.create_connection(("127.0.0.1", free_port()), timeout=5))
    assert isinstance(refused, ConnectionRefusedError) and verdict(refused) is TRANSIENT
    assert verdict(TimeoutError("timed out")) is TRANSIENT
    assert verdict(ValueError("a bug")) is FINAL and verdict(KeyError("x")) is FINAL


# --- ours, and the engines' views -----------------------------------------------------------
def test_our_types() -> None:
    assert verdict(DatabaseUnavailableError("down")) is OUTAGE
    assert verdict(DatabaseBusyError("deadlock")) is TRANSIENT
    assert verdict(TransientError("hiccup")) is TRANSIENT
    assert verdict(OutageError("unreachable for 900 s")) is FINAL  # the window is spent
    assert verdict(DatabaseError("relation does not exist")) is FINAL
    assert verdict(InputError("missing column npi")) is FINAL


def test_celery_types_agree_with_the_policy() -> None:
    """autoretry_for matches types: each of them, built, is transient; each exclusion is not;
    every SQLSTATE the policy names has a psycopg class among them."""
    retried, excluded = transient_types(), final_types()
    assert all(is_transient(kind("x")) for kind in retried)
    assert all(not is_transient(kind("x")) for kind in excluded)
    assert all(issubclass(kind, retried) for kind in excluded)
    assert {psycopg.errors.lookup(code) for code in PG_GONE | PG_BUSY} <= set(retried)
    assert not any(issubclass(kind, modal.exception.Error) for kind in retried)


def test_the_ledger_says_retrying_only_when_celery_will_retry(tmp_path: Path) -> None:
    """A SQLSTATE-less OperationalError is transient to the policy, but no type can tell
    Celery so: the ledger must record the run failed, not wait for a retry that never comes."""
    raw = raised(lambda: psycopg.connect(closed_url(), connect_timeout=2))
    assert isinstance(raw, psycopg.OperationalError) and raw.sqlstate is None
    assert is_transient(raw) and not retried_by_type(raw)
    wrapped = DatabaseUnavailableError("gone")
    assert is_transient(wrapped) and retried_by_type(wrapped)
    for error, expected in ((wrapped, "preparing"), (raw, "failed")):
        ledger = RunLedger(RunPaths(tmp_path / expected))
        ledger.start(kind="full", source="test", fingerprint="")
        token = RETRY_PENDING.set(True)
        try:
            ledger.fail("prepare", error)
        finally:
            RETRY_PENDING.reset(token)
        state = ledger.read()
        assert state["status"] == expected, state
        assert ("retrying" in state) is (expected == "preparing")


def test_outage_rider_waits_out_an_outage_and_passes_anything_else(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path / "r")
    paths.root.mkdir()
    ledger = RunLedger(paths)
    ledger.start(kind="full", source="test", fingerprint="f")
    failures = [DatabaseUnavailableError("down"), pg_error("57P03")]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert through_outage(flaky, ledger=ledger, step="publish", window=30) == "done"
    assert ledger.read().get("retrying") is None
    for error in (pg_error("40P01"), DatabaseError("refused"), ValueError("bug")):

        def fails(error: BaseException = error) -> None:
            raise error

        assert raised(lambda: through_outage(fails, ledger=ledger, step="p", window=30)) is error


def test_importing_the_policy_and_the_ledger_imports_no_client_library() -> None:
    code = (
        "import sys, scoring.runs.retry_policy, scoring.runs.ledger; "
        "print(sorted({'psycopg', 'neo4j', 'redis', 'kombu', 'modal'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
