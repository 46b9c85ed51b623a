"""`claidex graph load`: write the ownership graph into Neo4j in UNWIND batches.

Idempotent, and a reload replaces: what the current tables no longer hold is removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import neo4j
import polars as pl

from scoring.config import Settings
from scoring.graphdb.connection import Neo4jTarget
from scoring.graphdb.model import COUNTS, LOADS, SCHEMA, STALE, graph_tables
from scoring.graphdb.session import graph_session, read_rows, write
from scoring.inputs.validation import CleanReference

Progress = Callable[[str, int, int], None]  # (table, rows written, rows total)


def load_graph(
    target: Neo4jTarget,
    reference: CleanReference,
    cfg: Settings,
    on_progress: Progress | None = None,
) -> dict[str, int]:
    """Constraints and index first, then MERGE every table; returns the graph's counts."""
    tables = graph_tables(reference)
    load_id = uuid.uuid4().hex
    with graph_session(target, cfg, "graph load") as session:
        for statement in SCHEMA:
            write(session, statement)
        for name, query in LOADS:
            frame: pl.DataFrame = tables[name]
            for start in range(0, frame.height, cfg.graph_load_batch):
                rows = frame.slice(start, cfg.graph_load_batch).to_dicts()
                write(session, query, rows=rows, load_id=load_id)
                if on_progress:
                    on_progress(name, min(frame.height, start + len(rows)), frame.height)
            if on_progress and frame.is_empty():
                on_progress(name, 0, 0)
        for statement in STALE:
            write(session, statement, load_id=load_id)
        return graph_counts_in(session)


def graph_counts_in(session: neo4j.Session) -> dict[str, int]:
    return {label: int(read_rows(session, q)[1][0][0]) for label, q in COUNTS.items()}


def graph_counts(target: Neo4jTarget, cfg: Settings) -> dict[str, int]:
    """Node and relationship counts (the loader's idempotence check)."""
    with graph_session(target, cfg, "graph counts") as session:
        return graph_counts_in(session)
