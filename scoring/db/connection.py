"""Connections from DATABASE_URL or the libpq PG* variables; errors never show the password."""

from __future__ import annotations

import os
import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

from scoring.errors import ClaidexError, TransientError, UnreachableError
from scoring.runs.retry_policy import Verdict, verdict


class DatabaseError(ClaidexError):
    """A database problem, phrased as one line without secrets."""


class DatabaseUnavailableError(DatabaseError, UnreachableError):
    """The database cannot be reached (down, restarting, wrong host): an outage."""


class DatabaseBusyError(DatabaseError, TransientError):
    """The database is there but this try lost (deadlock, serialization, resources, a lock
    timeout): the step is retried later, no outage is ridden out."""


def error_class(exc: BaseException) -> type[DatabaseError]:
    """The one-line error's class: the retry policy's verdict on `exc`, kept in the type."""
    found = verdict(exc)
    if found is Verdict.OUTAGE:
        return DatabaseUnavailableError
    return DatabaseBusyError if found is Verdict.TRANSIENT else DatabaseError


def database_url() -> str | None:
    """DATABASE_URL, or '' when only PG* variables are set (libpq reads them), else None."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    if any(os.environ.get(name) for name in ("PGHOST", "PGDATABASE", "PGSERVICE")):
        return ""
    return None


def required_database_url() -> str:
    """database_url(), or a DatabaseError saying how to configure one (commands that need it)."""
    url = database_url()
    if url is None:
        msg = "no database configured: set DATABASE_URL (or the PGHOST/PGDATABASE/... variables)"
        raise DatabaseError(msg)
    return url


def _params(url: str) -> dict[str, object]:
    """Parsed connection parameters; a malformed string is an error that never quotes it."""
    if not url:
        return {}
    try:
        return dict(conninfo_to_dict(url))
    except psycopg.Error:
        msg = "DATABASE_URL is not a valid connection string (postgresql://user:pass@host/db)"
        raise DatabaseError(msg) from None


def describe(url: str) -> str:
    """'host:port/dbname as user' — what we connect to, without the password."""
    params = _params(url)
    host = params.get("host") or os.environ.get("PGHOST", "localhost")
    port = params.get("port") or os.environ.get("PGPORT", "5432")
    dbname = params.get("dbname") or os.environ.get("PGDATABASE", "postgres")
    user = params.get("user") or os.environ.get("PGUSER", "?")
    return f"{host}:{port}/{dbname} as {user}"


def scrub(text: str, url: str) -> str:
    """Remove any password (from the URL or PGPASSWORD) from a message; keep the first line."""
    line = text.strip().splitlines()[0] if text.strip() else text
    secrets = [os.environ.get("PGPASSWORD", "")]
    try:
        secrets.append(str(_params(url).get("password") or ""))
    except DatabaseError:
        return "details withheld: the connection string is malformed"
    for secret in filter(None, secrets):
        line = line.replace(secret, "***")
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@", r"\1***@", line)


def database_error(exc: psycopg.Error, url: str, doing: str) -> DatabaseError:
    """Any psycopg failure as one line without secrets (transient ones stay retryable)."""
    reason = f"{doing} failed at {describe(url)}: {scrub(str(exc), url)}"
    return error_class(exc)(reason)


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection:
    """Open a connection, or raise one clear line: DatabaseUnavailableError while the
    server cannot be reached, DatabaseError when it answers and refuses us."""
    _params(url)  # a malformed string fails here, without echoing it
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)
    except psycopg.Error as exc:
        reason = scrub(str(exc), url)
        reason = reason.split(": ", 1)[-1] if "connection" in reason else reason
        msg = f"cannot connect to Postgres at {describe(url)}: {reason}"
        raise error_class(exc)(msg) from None
