"""neo4j-live (the legacy design): one batched `UNWIND $batch` query per score_batch.

The query implements SPEC §4 component 2 for the batch's NPIs: the SNF whose
lower-cased name contains the provider's lower-cased name (smallest name, then
entity_id); its owners 1..5 hops up; everything 0..5 hops down from that chain;
the providers whose lower-cased name contains one of those entities' names; the
entities' exclusion links. It stays inside the Cypher subset that Neo4j 5 and
ArcadeDB share (checked against ArcadeDB's Bolt server in the test suite):
- SNF candidates are collected once per batch into a list, then filtered per NPI
  with a list comprehension (a per-NPI MATCH with CONTAINS is several times slower).
- The closure anchors on the bound SNF first (`(snf)<-[:OWNS*0..5]-(c)`); anchoring
  on the unbound end is far slower on ArcadeDB.
- Chain providers are found in one pass over the Provider nodes per batch, against
  the distinct entity names of the whole batch, then split per NPI.
Subqueries use the variable-scope form `CALL (x) { ... }` (Neo4j 5.23+, Aura, ArcadeDB);
the older importing `CALL { WITH x ... }` is deprecated in current Neo4j.
Name containment has no index, so the pass over providers is what makes this mode
slow on large graphs; neo4j-snapshot is the recommended Neo4j mode.
"""

from __future__ import annotations

import logging
import time

import polars as pl

from scoring.config import Settings
from scoring.graphdb.connection import GraphError, GraphUnavailableError, Neo4jTarget
from scoring.graphdb.session import graph_error, graph_session, read_rows
from scoring.inputs.npi import npi_to_int, npi_to_str
from scoring.methodology.components.ownership import OWNERSHIP_COLUMNS
from scoring.runs.retry_policy import is_transient

log = logging.getLogger(__name__)

LIVE_QUERY = """
CALL () {
  MATCH (s:CorporateEntity {entityType: 'SNF'})
  RETURN collect({n: toLower(s.name), s: s}) AS snfs
}
UNWIND $batch AS npi
OPTIONAL MATCH (pv:Provider {npi: npi})
WITH snfs, npi, toLower(coalesce(pv.name, '')) AS pname
WITH npi, [x IN snfs WHERE pname <> '' AND x.n CONTAINS pname | x.s] AS cands
CALL (cands) {
  UNWIND cands AS s
  WITH s ORDER BY s.name, s.entity_id
  RETURN head(collect(s)) AS snf
}
CALL (snf) {
  WITH snf WHERE snf IS NOT NULL
  MATCH (snf)<-[:OWNS*0..$hops]-(c)
  WITH DISTINCT c
  MATCH (c)-[:OWNS*0..$hops]->(x:CorporateEntity)
  RETURN collect(DISTINCT x) AS all_entities
}
WITH collect({npi: npi, snf: snf.entity_id,
              names: [e IN all_entities WHERE coalesce(e.name, '') <> '' | toLower(e.name)],
              ox: any(e IN all_entities WHERE EXISTS { (e)-[:EXCLUDED_BY]->(:Exclusion) })}) AS rows
CALL (rows) {
  UNWIND rows AS r
  UNWIND r.names AS n
  RETURN collect(DISTINCT n) AS names
}
CALL (names) {
  MATCH (pr:Provider)
  WITH pr, toLower(coalesce(pr.name, '')) AS ln, names
  WITH pr, [n IN names WHERE ln CONTAINS n] AS hits
  WHERE size(hits) > 0
  RETURN collect({hits: hits, ex: EXISTS { (pr)-[:EXCLUDED_BY]->(:Exclusion) }}) AS ph
}
UNWIND rows AS r
WITH r, [x IN ph WHERE any(h IN x.hits WHERE h IN r.names)] AS mine
RETURN r.npi AS npi, r.snf AS snf_entity_id, size(mine) AS chain_provider_count,
       size([x IN mine WHERE x.ex]) AS chain_excluded_count, r.ox AS owner_excluded
"""

LIVE_SCHEMA = {
    "npi": pl.String,
    "snf_entity_id": pl.String,
    "chain_provider_count": pl.Int64,
    "chain_excluded_count": pl.Int64,
    "owner_excluded": pl.Boolean,
}

LIVE_SCHEMA_NO_NPI = {k: v for k, v in LIVE_SCHEMA.items() if k != "npi"}


def live_query(hops: int) -> str:
    """Variable-length bounds cannot be parameters in Cypher: the hop limit is written in."""
    return LIVE_QUERY.replace("$hops", str(int(hops)))


def live_ownership(npis: pl.Series, target: Neo4jTarget, cfg: Settings) -> pl.DataFrame:
    """Per NPI of one batch: npi (Int64) and the ownership columns; no SNF match gives nulls,
    exactly as the embedded join does."""
    batch = npis.to_frame("npi").select(npi_to_str(pl.col("npi")))["npi"].to_list()
    rows = _query_with_retries(target, cfg, batch)
    found = pl.DataFrame(rows, schema=LIVE_SCHEMA, orient="row")
    matched = pl.col("snf_entity_id").is_not_null()
    return found.select(
        npi_to_int(pl.col("npi")).alias("npi"),
        *[pl.when(matched).then(pl.col(c)).alias(c) for c in OWNERSHIP_COLUMNS],
    )


def _query_once(target: Neo4jTarget, cfg: Settings, batch: list[str]) -> list[tuple]:
    with graph_session(target, cfg, "live ownership query") as session:
        return read_rows(session, live_query(cfg.ownership_max_hops), batch=batch)[1]


def _query_with_retries(target: Neo4jTarget, cfg: Settings, batch: list[str]) -> list[tuple]:
    """Inside a transaction the driver retries transient errors itself; a server that is gone
    is retried here with backoff, then the batch fails (never zeros: SPEC §6.3)."""
    for attempt in range(1, cfg.neo4j_live_attempts + 1):
        try:
            return _query_once(target, cfg, batch)
        except GraphError as exc:
            if not is_transient(exc):
                raise
            if attempt == cfg.neo4j_live_attempts:
                msg = f"{exc} (gave up after {attempt} attempts)"
                raise GraphUnavailableError(msg) from None
            wait = cfg.neo4j_retry_backoff * 2 ** (attempt - 1)
            log.warning(
                "neo4j-live attempt %d of %d failed, retrying in %.1f s: %s",
                attempt,
                cfg.neo4j_live_attempts,
                wait,
                exc,
            )
            time.sleep(wait)
    raise AssertionError("unreachable")


def with_live_ownership(
    providers: pl.DataFrame, target: Neo4jTarget, cfg: Settings
) -> pl.DataFrame:
    """The batch slice with its ownership columns replaced by the live query's answers."""
    live = live_ownership(providers["npi"], target, cfg)
    if live.height != providers.height:
        msg = f"live ownership query returned {live.height} rows for {providers.height} NPIs"
        raise graph_error(RuntimeError(msg), target, "live ownership query")
    return (
        providers.drop(OWNERSHIP_COLUMNS).join(live, on="npi", how="left").select(providers.columns)
    )
