"""Reading the ownership graph from Neo4j during reduce, riding out a restart visibly."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from scoring.config import Settings
from scoring.graphdb.connection import GraphUnavailableError, neo4j_target
from scoring.graphdb.snapshot import GraphSnapshot, read_snapshot, verify_graph
from scoring.runs.ledger import RunLedger
from scoring.runs.outage import through_outage

T = TypeVar("T")


def _ride_out(cfg: Settings, ledger: RunLedger, action: Callable[[], T]) -> T:
    """Neo4j restarting: wait, visibly, up to the outage window."""
    return through_outage(
        action,
        ledger=ledger,
        step="prepare",
        window=cfg.neo4j_outage_window,
        what="Neo4j",
        gave_up=GraphUnavailableError,  # still transient: a task retry may find it back
    )


def neo4j_verify(cfg: Settings, ledger: RunLedger) -> None:
    """neo4j-live: each batch asks Neo4j, but a wrong URI or password fails prepare."""
    target = neo4j_target()
    _ride_out(cfg, ledger, lambda: verify_graph(target, cfg))


def neo4j_snapshot(cfg: Settings, ledger: RunLedger) -> GraphSnapshot:
    target = neo4j_target()
    return _ride_out(cfg, ledger, lambda: read_snapshot(target, cfg))
