"""The Neo4j graph model (SPEC §3) and the tables written to / read from it.

(:CorporateEntity {entity_id, name, entityType})-[:OWNS]->(:CorporateEntity)
(:CorporateEntity)-[:EXCLUDED_BY]->(:Exclusion {exclusion_id})
(:Provider {npi, name})-[:EXCLUDED_BY]->(:Exclusion {exclusion_id, reinstated})

Provider EXCLUDED_BY links are written for active LEIE rows only (reinstated false
or null), so every query can treat a link as an active exclusion. Entity
exclusions get one Exclusion node each, `entity:<entity_id>`.
"""

from __future__ import annotations

import polars as pl

from scoring.inputs.npi import npi_to_str
from scoring.inputs.validation import CleanReference

ENTITY_EXCLUSION_PREFIX = "entity:"

SCHEMA = (  # Neo4j 5 syntax; ArcadeDB's Cypher accepts it too
    "CREATE CONSTRAINT corporate_entity_id IF NOT EXISTS "
    "FOR (n:CorporateEntity) REQUIRE n.entity_id IS UNIQUE",
    "CREATE CONSTRAINT provider_npi IF NOT EXISTS FOR (n:Provider) REQUIRE n.npi IS UNIQUE",
    "CREATE CONSTRAINT exclusion_id IF NOT EXISTS "
    "FOR (n:Exclusion) REQUIRE n.exclusion_id IS UNIQUE",
    "CREATE INDEX corporate_entity_type IF NOT EXISTS FOR (n:CorporateEntity) ON (n.entityType)",
)

# (name, query over $rows): nodes first, then the relationships that MATCH them. Every node and
# relationship written is stamped with the load's id; `STALE` then removes what this load did
# not write (a reinstated exclusion, a sold facility), so the graph equals the validated tables.
LOADS = (
    (
        "entities",
        "UNWIND $rows AS r MERGE (e:CorporateEntity {entity_id: r.entity_id}) "
        "SET e.name = r.name, e.entityType = r.entity_type, e.load_id = $load_id",
    ),
    (
        "providers",
        "UNWIND $rows AS r MERGE (p:Provider {npi: r.npi}) "
        "SET p.name = r.name, p.load_id = $load_id",
    ),
    (
        "exclusions",
        "UNWIND $rows AS r MERGE (x:Exclusion {exclusion_id: r.exclusion_id}) "
        "SET x.reinstated = r.reinstated, x.load_id = $load_id",
    ),
    (
        "ownership",
        "UNWIND $rows AS r MATCH (a:CorporateEntity {entity_id: r.owner_id}) "
        "MATCH (b:CorporateEntity {entity_id: r.owned_id}) "
        "MERGE (a)-[o:OWNS]->(b) SET o.load_id = $load_id",
    ),
    (
        "provider_exclusions",
        "UNWIND $rows AS r MATCH (p:Provider {npi: r.npi}) "
        "MATCH (x:Exclusion {exclusion_id: r.exclusion_id}) "
        "MERGE (p)-[e:EXCLUDED_BY]->(x) SET e.load_id = $load_id",
    ),
    (
        "entity_exclusions",
        "UNWIND $rows AS r MATCH (c:CorporateEntity {entity_id: r.entity_id}) "
        "MATCH (x:Exclusion {exclusion_id: r.exclusion_id}) "
        "MERGE (c)-[e:EXCLUDED_BY]->(x) SET e.load_id = $load_id",
    ),
)

STALE = (
    "MATCH ()-[r:OWNS]->() WHERE coalesce(r.load_id, '') <> $load_id DELETE r",
    "MATCH ()-[r:EXCLUDED_BY]->() WHERE coalesce(r.load_id, '') <> $load_id DELETE r",
    *(
        f"MATCH (n:{label}) WHERE coalesce(n.load_id, '') <> $load_id DETACH DELETE n"
        for label in ("CorporateEntity", "Provider", "Exclusion")
    ),
)

COUNTS = {
    "CorporateEntity": "MATCH (n:CorporateEntity) RETURN count(n) AS n",
    "Provider": "MATCH (n:Provider) RETURN count(n) AS n",
    "Exclusion": "MATCH (n:Exclusion) RETURN count(n) AS n",
    "OWNS": "MATCH (:CorporateEntity)-[r:OWNS]->(:CorporateEntity) RETURN count(r) AS n",
    "EXCLUDED_BY": "MATCH ()-[r:EXCLUDED_BY]->(:Exclusion) RETURN count(r) AS n",
}


def graph_tables(reference: CleanReference) -> dict[str, pl.DataFrame]:
    """The loader's rows per LOADS entry, from validated tables (quarantined rows never load)."""
    if reference.graph is None:
        msg = "the dataset has no ownership graph tables (entities, ownership, entity_exclusions)"
        raise ValueError(msg)
    graph = reference.graph
    leie = reference.exclusions.select(
        "exclusion_id", npi_to_str(pl.col("npi")).alias("npi"), "reinstated"
    )
    flagged = graph.entity_exclusions.select("entity_id").unique().sort("entity_id").collect()
    entity_exclusion_ids = (pl.lit(ENTITY_EXCLUSION_PREFIX) + pl.col("entity_id")).alias(
        "exclusion_id"
    )
    return {
        "entities": graph.entities.select("entity_id", "name", "entity_type").collect(),
        "providers": reference.providers.select(
            npi_to_str(pl.col("npi")).alias("npi"), pl.col("display_name").alias("name")
        ),
        "exclusions": pl.concat(
            [
                leie.group_by("exclusion_id")
                .agg(pl.col("reinstated").fill_null(False).all())
                .sort("exclusion_id"),
                flagged.select(entity_exclusion_ids, pl.lit(False).alias("reinstated")),
            ]
        ),
        "ownership": graph.ownership.select("owner_id", "owned_id")
        .unique()
        .sort(pl.all())
        .collect(),
        "provider_exclusions": leie.filter(
            pl.col("npi").is_not_null() & ~pl.col("reinstated").fill_null(False)
        )
        .select("npi", "exclusion_id")
        .unique()
        .sort(pl.all()),
        "entity_exclusions": flagged.select("entity_id", entity_exclusion_ids),
    }
