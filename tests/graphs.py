"""Helpers for tests that put a dataset's ownership graph into a Bolt server."""

from __future__ import annotations

from pathlib import Path

from scoring.config import Settings
from scoring.graphdb.connection import Neo4jTarget
from scoring.graphdb.loader import load_graph
from scoring.graphdb.session import graph_session, write
from scoring.inputs import read_dataset
from scoring.validation import validate_reference


def clear_graph(target: Neo4jTarget) -> None:
    with graph_session(target, Settings(), "clear graph") as session:
        write(session, "MATCH (n) DETACH DELETE n")


def load_dataset_graph(target: Neo4jTarget, data: Path) -> dict[str, int]:
    """What `claidex graph load --data` does, in-process."""
    reference = validate_reference(read_dataset(data, with_graph=True))
    return load_graph(target, reference, Settings())
