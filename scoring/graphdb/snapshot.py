"""neo4j-snapshot: the whole ownership graph in a few streamed read queries, once per run."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from scoring.config import Settings
from scoring.errors import InputError
from scoring.graphdb.connection import Neo4jTarget
from scoring.graphdb.session import graph_session, ping, read_rows
from scoring.inputs.npi import npi_to_int
from scoring.methodology.components.ownership import OwnershipGraph

QUERIES = {
    "entities": (
        "MATCH (e:CorporateEntity) "
        "RETURN e.entity_id AS entity_id, e.name AS name, e.entityType AS entity_type",
        {"entity_id": pl.String, "name": pl.String, "entity_type": pl.String},
    ),
    "ownership": (
        "MATCH (a:CorporateEntity)-[:OWNS]->(b:CorporateEntity) "
        "RETURN a.entity_id AS owner_id, b.entity_id AS owned_id",
        {"owner_id": pl.String, "owned_id": pl.String},
    ),
    "entity_exclusions": (
        "MATCH (e:CorporateEntity)-[:EXCLUDED_BY]->(:Exclusion) "
        "RETURN DISTINCT e.entity_id AS entity_id",
        {"entity_id": pl.String},
    ),
    "excluded_providers": (
        "MATCH (p:Provider)-[:EXCLUDED_BY]->(:Exclusion) RETURN DISTINCT p.npi AS npi",
        {"npi": pl.String},
    ),
}


@dataclass(frozen=True)
class GraphSnapshot:
    """The graph as embedded mode needs it, and the providers' active exclusion links."""

    graph: OwnershipGraph
    excluded_npis: pl.DataFrame  # npi (Int64), actively_excluded (True)


EMPTY_GRAPH = (
    "the Neo4j graph ({uri}) holds no CorporateEntity: ownership would score 0 for every "
    "provider. Load it first (`claidex graph load`), or set CLAIDEX_ALLOW_EMPTY_GRAPH=1 "
    "if an empty graph is intended"
)


def require_entities(found: bool, target: Neo4jTarget, cfg: Settings) -> None:
    """An empty graph in a Neo4j mode is almost always a graph never loaded: refuse it."""
    if not found and not cfg.allow_empty_graph:
        raise InputError(EMPTY_GRAPH.format(uri=target.describe()))


def verify_graph(target: Neo4jTarget, cfg: Settings) -> None:
    """Fail a run's prepare at once, in one line, when Neo4j is unreachable, refuses us,
    or holds no graph."""
    with graph_session(target, cfg, "graph check") as session:
        ping(session)
        _, rows = read_rows(session, "MATCH (e:CorporateEntity) RETURN e.entity_id AS id LIMIT 1")
    require_entities(bool(rows), target, cfg)


def read_snapshot(target: Neo4jTarget, cfg: Settings) -> GraphSnapshot:
    """Read the four tables in managed read transactions (streamed, retried when transient)."""
    frames: dict[str, pl.DataFrame] = {}
    with graph_session(target, cfg, "graph snapshot") as session:
        for name, (query, schema) in QUERIES.items():
            _, rows = read_rows(session, query)
            frames[name] = pl.DataFrame(rows, schema=schema, orient="row")
    require_entities(frames["entities"].height > 0, target, cfg)
    excluded = (
        frames["excluded_providers"]
        .filter(pl.col("npi").str.contains(r"^[0-9]{10}$"))  # ASCII: Unicode digits are no NPI
        .select(npi_to_int(pl.col("npi")).alias("npi"))
        .unique()
        .sort("npi")
        .with_columns(pl.lit(True).alias("actively_excluded"))
    )
    graph = OwnershipGraph(
        entities=frames["entities"].lazy(),
        ownership=frames["ownership"].lazy(),
        entity_exclusions=frames["entity_exclusions"].lazy(),
    )
    return GraphSnapshot(graph=graph, excluded_npis=excluded)
