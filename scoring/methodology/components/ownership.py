"""Component 2, ownership chain risk (S_o), embedded graph (SPEC §4 component 2, §5).

Name containment is answered with indexes, never a providers x entities scan:
step 1 runs one Aho-Corasick pass (``str.extract_many``) of the providers'
lower-cased display names over the SNF names; step 4 one of the group entities'
names over the display names. Steps 2-3 depend only on the SNF, so they run once
per SNF. A full run composes the steps in the prepare stages (scoring/stages/reduce.py,
aggregate.py, combine.py): steps 2-3 for every SNF in reduce, steps 1 and 4 per NPI bucket
in aggregate (a provider sits in
one bucket, so the per-SNF counts add up), the chain totals in combine.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from scoring.config import Settings

SNF_TYPE = "SNF"
OWNERSHIP_COLUMNS = [
    "snf_entity_id",
    "chain_provider_count",
    "chain_excluded_count",
    "owner_excluded",
]


@dataclass(frozen=True)
class OwnershipGraph:
    """CorporateEntity nodes, OWNS edges and entity EXCLUDED_BY links."""

    entities: pl.LazyFrame  # entity_id, name, entity_type
    ownership: pl.LazyFrame  # owner_id, owned_id
    entity_exclusions: pl.LazyFrame  # entity_id


def _lower_name(column: str) -> pl.Expr:
    return pl.col(column).fill_null("").str.to_lowercase()


def match_snf(providers: pl.LazyFrame, entities: pl.LazyFrame) -> pl.LazyFrame:
    """Step 1: per provider, the SNF whose lower(name) contains lower(display_name).

    Several candidates: the smallest name as stored, then the smallest entity_id.
    Empty display names match nothing. One Aho-Corasick pass of every distinct display
    name over the SNF names: linear in the text, so no name length can blow it up
    (a table of the SNF names' substrings grows with the cube of the longest name).
    """
    names = providers.select("npi", _lower_name("display_name").alias("needle")).filter(
        pl.col("needle").str.len_chars() > 0
    )
    patterns = names.select("needle").unique().sort("needle").collect()["needle"]
    if patterns.is_empty():
        return pl.LazyFrame(schema={"npi": pl.Int64, "snf_entity_id": pl.String})
    snf = entities.filter(pl.col("entity_type") == SNF_TYPE).select(
        "entity_id", "name", _lower_name("name").alias("hay")
    )
    contained = (
        snf.select(
            "entity_id",
            "name",
            pl.col("hay")
            .str.extract_many(pl.lit(patterns).implode(), overlapping=True)
            .alias("needle"),
        )
        .explode("needle")
        .drop_nulls("needle")
        .unique(["entity_id", "needle"])
    )
    return (
        names.join(contained, on="needle", how="inner")
        .group_by("npi")
        .agg(pl.col("entity_id").sort_by("name", "entity_id").first().alias("snf_entity_id"))
    )


def _reach(start: pl.DataFrame, edges: pl.DataFrame, src: str, dst: str, hops: int) -> pl.DataFrame:
    """All (snf, node, hops) reachable from `start` within `hops` edges (breadth first: `hops`
    is the fewest edges from any start node)."""
    reached = start
    frontier = start
    for step in range(1, hops + 1):
        frontier = (
            frontier.join(edges, left_on="node", right_on=src)
            .select("snf", pl.col(dst).alias("node"))
            .unique()
            .join(reached, on=["snf", "node"], how="anti")
            .with_columns(pl.lit(step, dtype=pl.Int32).alias("hops"))
        )
        if frontier.is_empty():
            break
        reached = pl.concat([reached, frontier])
    return reached


def ownership_groups(snfs: pl.LazyFrame, graph: OwnershipGraph, cfg: Settings) -> pl.LazyFrame:
    """Steps 2-3: (snf, entity) for the chain (1..5 up) and everything 0..5 below a chain entity;
    `up_hops` is a chain entity's distance above the SNF (null off the chain), `down_hops` an
    entity's distance below the nearest chain entity (0 on the chain)."""
    edges = graph.ownership.select("owner_id", "owned_id").drop_nulls().unique().collect()
    start = snfs.select(
        pl.col("snf"), pl.col("snf").alias("node"), pl.lit(0, dtype=pl.Int32).alias("hops")
    ).collect()
    chain = _reach(start, edges, "owned_id", "owner_id", cfg.ownership_max_hops)
    below = _reach(
        chain.with_columns(pl.lit(0, dtype=pl.Int32).alias("hops")),
        edges,
        "owner_id",
        "owned_id",
        cfg.ownership_max_hops,
    )
    return (
        below.rename({"hops": "down_hops"})
        .join(chain.rename({"hops": "up_hops"}), on=["snf", "node"], how="left")
        .lazy()
    )


def chain_providers(
    groups: pl.LazyFrame, providers: pl.LazyFrame, entities: pl.LazyFrame
) -> pl.LazyFrame:
    """Step 4: (snf, npi) for providers whose lower(display_name) contains a group entity's name."""
    named = entities.select(pl.col("entity_id").alias("node"), _lower_name("name").alias("needle"))
    group_names = groups.join(named, on="node").filter(pl.col("needle").str.len_chars() > 0)
    patterns = group_names.select("needle").unique().sort("needle").collect()["needle"]
    if patterns.is_empty():
        return pl.LazyFrame(schema={"snf": pl.String, "npi": pl.Int64})
    hits = (
        providers.select("npi", _lower_name("display_name").alias("hay"))
        .filter(pl.col("hay").str.len_chars() > 0)
        .select(
            "npi",
            pl.col("hay")
            .str.extract_many(pl.lit(patterns).implode(), overlapping=True)
            .alias("needle"),
        )
        .explode("needle")
        .drop_nulls("needle")
        .unique()
    )
    return (
        group_names.select("snf", "needle")
        .unique()
        .join(hits, on="needle")
        .select("snf", "npi")
        .unique()
    )


def ownership_score_expr() -> pl.Expr:
    """S_o = min(100, 100 x excluded / max(providers, 1)), rounded 2; no SNF match gives 0."""
    excluded = pl.col("chain_excluded_count").fill_null(0)
    total = pl.max_horizontal(pl.col("chain_provider_count").fill_null(0), 1)
    return pl.min_horizontal(100.0, 100.0 * excluded / total).round(2).alias("ownership_chain_risk")
