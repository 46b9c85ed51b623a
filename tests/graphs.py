"""Helpers for tests that put a dataset's ownership graph into a Bolt server."""

from __future__ import annotations

from pathlib import Path

from scoring.config import Settings
from scoring.graphdb.connection import Neo4jTarget
from scoring.graphdb.loader import load_graph
from scoring.graphdb.session import graph_session, read_rows, write
from scoring.inputs.contract import read_dataset
from scoring.inputs.validation import validate_reference

WIPE_LIMIT = 12_000  # test graphs stay below ~6,000 nodes: a bigger one is somebody's data


def clear_graph(target: Neo4jTarget) -> None:
    """Empty the test graph; refuses to wipe a large graph (NEO4J_URI pointing at real data)."""
    with graph_session(target, Settings(), "clear graph") as session:
        nodes = read_rows(session, "MATCH (n) RETURN count(n) AS n")[1][0][0]
        if nodes > WIPE_LIMIT:
            msg = (
                f"refusing to wipe {nodes:,} nodes at {target.describe()}: point NEO4J_URI "
                "(and NEO4J_DATABASE) at a test database"
            )
            raise RuntimeError(msg)
        write(session, "MATCH (n) DETACH DELETE n")


def load_dataset_graph(target: Neo4jTarget, data: Path) -> dict[str, int]:
    """What `claidex graph load --data` does, in-process."""
    reference = validate_reference(read_dataset(data, with_graph=True), Settings())
    return load_graph(target, reference, Settings())
