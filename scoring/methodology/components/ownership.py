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


def chain_closures(
    snfs: pl.LazyFrame, graph: OwnershipGraph, cfg: Settings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Steps 2-3 as two tables whose size grows with the graph, not with its groups:
    `chains` (snf, node, up_hops): each SNF and what owns it 1..5 hops up; `closures` (node,
    member, down_hops): for every chain node, what lies 0..5 hops below it. An SNF's group is
    the union of its chain nodes' closures, a member's down_hops the least over them
    (`group_of`). Materialising every (SNF, group member) pair instead costs the square of
    an owner's SNFs: 5,000 SNFs of one owner made 25 M rows."""
    edges = graph.ownership.select("owner_id", "owned_id").drop_nulls().unique().collect()
    start = snfs.select(
        pl.col("snf"), pl.col("snf").alias("node"), pl.lit(0, dtype=pl.Int32).alias("hops")
    ).collect()
    chain = _reach(start, edges, "owned_id", "owner_id", cfg.ownership_max_hops)
    heads = chain.select(pl.col("node").alias("snf"), "node").unique()  # keyed by the node
    below = _reach(
        heads.with_columns(pl.lit(0, dtype=pl.Int32).alias("hops")),
        edges,
        "owner_id",
        "owned_id",
        cfg.ownership_max_hops,
    )
    chains = chain.rename({"hops": "up_hops"}).sort("snf", "node")
    closures = below.select(
        pl.col("snf").alias("node"),
        pl.col("node").alias("member"),
        pl.col("hops").alias("down_hops"),
    ).sort("node", "member")
    return chains, closures


def group_of(chains: pl.DataFrame, closures: pl.DataFrame) -> pl.DataFrame:
    """(snf, node, down_hops, up_hops) of the SNFs in `chains`: each SNF's group, composed
    (for a few SNFs at a time: `explain`, tests)."""
    composed = (
        chains.select("snf", pl.col("node").alias("head"))
        .join(closures, left_on="head", right_on="node")
        .group_by("snf", "member")
        .agg(pl.col("down_hops").min())
        .rename({"member": "node"})
    )
    return composed.join(chains, on=["snf", "node"], how="left").sort("snf", "node")


def owners_excluded(
    chains: pl.DataFrame, closures: pl.DataFrame, flagged: pl.DataFrame
) -> pl.DataFrame:
    """(snf) whose group holds an entity with an EXCLUDED_BY link (`flagged`: node)."""
    heads = closures.join(flagged, left_on="member", right_on="node", how="semi")
    return (
        chains.join(heads.select("node").unique(), on="node", how="semi")
        .select("snf")
        .unique()
        .sort("snf")
    )


def chain_capture(
    closures: pl.LazyFrame, providers: pl.LazyFrame, entities: pl.LazyFrame
) -> pl.LazyFrame:
    """Step 4 by provider: (npi, node) for every chain node whose closure holds an entity
    whose name the provider's lower(display_name) contains. A provider belongs to an SNF's
    chain providers when one of the SNF's chain nodes captures it. One row per capturing
    node: a provider's names match few entities, with few owners each."""
    named = entities.select(
        pl.col("entity_id").alias("member"), _lower_name("name").alias("needle")
    )
    member_names = (
        closures.select("member")
        .unique()
        .join(named, on="member")
        .filter(pl.col("needle").str.len_chars() > 0)
    )
    patterns = member_names.select("needle").unique().sort("needle").collect()["needle"]
    if patterns.is_empty():
        return pl.LazyFrame(schema={"npi": pl.Int64, "node": pl.String})
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
        hits.join(member_names, on="needle")
        .select("npi", "member")
        .unique()
        .join(closures.select("node", "member"), on="member")
        .select("npi", "node")
        .unique()
    )


def chain_member_counts(chains: pl.DataFrame, captured: pl.DataFrame) -> pl.DataFrame:
    """(snf, members, excluded): per SNF the distinct captured providers (`captured`: npi,
    node, actively_excluded) of its chain nodes, without a (SNF, provider) pair per member.

    SNFs with the same owners above them (their chain less themselves, `ukey`) share those
    owners' providers: counted once per owner set; what the SNF's own closure captures
    beyond them is added per SNF. An owner of N SNFs is one owner set: linear in N."""
    upper = chains.filter(pl.col("node") != pl.col("snf"))
    keys = (
        chains.select("snf")
        .unique()
        .join(
            upper.group_by("snf").agg(pl.col("node").sort().str.join("\x1f").alias("ukey")),
            on="snf",
            how="left",
        )
        .with_columns(pl.col("ukey").fill_null(""))
    )
    key_nodes = upper.join(keys, on="snf").select("ukey", "node").unique()
    shared = (
        captured.join(key_nodes, on="node")
        .select("ukey", "npi", "actively_excluded")
        .unique(["ukey", "npi"])
    )
    shared_counts = shared.group_by("ukey").agg(
        pl.len().cast(pl.Int64).alias("shared"),
        pl.col("actively_excluded").sum().cast(pl.Int64).alias("shared_excluded"),
    )
    own = (
        captured.join(keys.rename({"snf": "node"}), on="node")
        .join(shared.select("ukey", "npi"), on=["ukey", "npi"], how="anti")
        .group_by("node")
        .agg(
            pl.len().cast(pl.Int64).alias("own"),
            pl.col("actively_excluded").sum().cast(pl.Int64).alias("own_excluded"),
        )
        .rename({"node": "snf"})
    )
    return (
        keys.join(shared_counts, on="ukey", how="left")
        .join(own, on="snf", how="left")
        .select(
            "snf",
            (pl.col("shared").fill_null(0) + pl.col("own").fill_null(0)).alias("members"),
            (pl.col("shared_excluded").fill_null(0) + pl.col("own_excluded").fill_null(0)).alias(
                "excluded"
            ),
        )
        .filter(pl.col("members") > 0)
        .sort("snf")
    )


def ownership_score_expr() -> pl.Expr:
    """S_o = min(100, 100 x excluded / max(providers, 1)), rounded 2; no SNF match gives 0."""
    excluded = pl.col("chain_excluded_count").fill_null(0)
    total = pl.max_horizontal(pl.col("chain_provider_count").fill_null(0), 1)
    return pl.min_horizontal(100.0, 100.0 * excluded / total).round(2).alias("ownership_chain_risk")
