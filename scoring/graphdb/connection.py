"""Neo4j connections from NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD / NEO4J_DATABASE.

Errors are one line naming host and database, never the password. Aura hosts
(`<id>.databases.neo4j.io`) default the database name to the instance id, as the
legacy loader did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from scoring.config import Settings
from scoring.errors import ClaidexError, UnreachableError

SCHEMES = ("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc")
AURA_SUFFIX = ".databases.neo4j.io"


class GraphError(ClaidexError):
    """A Neo4j problem, phrased as one line without secrets."""


class GraphUnavailableError(GraphError, UnreachableError):
    """Neo4j cannot be reached or dropped the connection: worth retrying later."""


def _unquoted(value: str) -> str:
    return value.strip().strip("'\"").strip()


def clean_uri(raw: str) -> str:
    """The URI, also when a whole `NEO4J_URI=...` line (or `export NEO4J_URI=...`) was pasted."""
    value = _unquoted(raw)
    if value.startswith("export "):
        value = value[len("export ") :].strip()
    if value.startswith("NEO4J_URI="):
        value = _unquoted(value.split("=", 1)[1])
    return value


def aura_database(host: str) -> str | None:
    """The instance id of an Aura host (`1a2b3c4d.databases.neo4j.io` -> `1a2b3c4d`)."""
    if host.endswith(AURA_SUFFIX):
        return host[: -len(AURA_SUFFIX)].split(".")[-1] or None
    return None


@dataclass(frozen=True)
class Neo4jTarget:
    """Where and as whom to connect; `repr` never shows the password."""

    uri: str
    user: str
    password: str = field(repr=False)
    database: str | None

    @property
    def host(self) -> str:
        return urlsplit(self.uri).netloc.rsplit("@", 1)[-1]

    def describe(self) -> str:
        return f"{self.host} (database {self.database or 'default'})"

    def scrub(self, text: str) -> str:
        line = text.strip().splitlines()[0] if text.strip() else text
        return line.replace(self.password, "***") if self.password else line


def neo4j_target(env: Mapping[str, str] | None = None) -> Neo4jTarget:
    """The target from the environment; a missing or malformed URI is a clear error."""
    env = os.environ if env is None else env
    uri = clean_uri(env.get("NEO4J_URI", ""))
    if not uri:
        msg = "NEO4J_URI is not set (Neo4j graph modes need NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD)"
        raise GraphError(msg)
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES or not parts.hostname:
        scheme = parts.scheme or "none"
        msg = f"NEO4J_URI must look like neo4j+s://host or bolt://host:7687 (scheme: {scheme})"
        raise GraphError(msg)
    database = _unquoted(env.get("NEO4J_DATABASE", "")) or aura_database(parts.hostname)
    user = _unquoted(env.get("NEO4J_USER", "") or env.get("NEO4J_USERNAME", ""))
    password = _unquoted(env.get("NEO4J_PASSWORD", ""))
    if parts.username or parts.password:  # user:password@host: use them, keep them out of the URI
        user, password = (
            user or unquote(parts.username or ""),
            password or unquote(parts.password or ""),
        )
        host = parts.netloc.rsplit("@", 1)[1]
        uri = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return Neo4jTarget(uri=uri, user=user or "neo4j", password=password, database=database)


def driver_options(cfg: Settings) -> dict[str, float]:
    """Bounded waits: a dead server fails a step in seconds, transient errors retry for a while."""
    return {
        "connection_timeout": cfg.neo4j_connect_timeout,
        "max_transaction_retry_time": cfg.neo4j_retry_seconds,
        "connection_acquisition_timeout": cfg.neo4j_connect_timeout * 2,
    }
