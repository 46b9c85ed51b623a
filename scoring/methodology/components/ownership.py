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


def _owner_paths(chains: pl.DataFrame, captured: pl.DataFrame) -> pl.DataFrame:
    """(snf, pos, node, tid): each SNF's chain as a sequence (the nodes capturing most
    providers first, the SNF itself last) and the prefix-tree node `tid` of each prefix.
    Equal prefixes share a `tid`; the ids are integers given level by level (never the
    prefix's text: a key of every owner's name grows with the square of the owners)."""
    sizes = captured.group_by("node").agg(pl.len().alias("captures"))
    seq = (
        chains.select("snf", "node")
        .join(sizes, on="node", how="left")
        .with_columns(
            pl.col("captures").fill_null(0),
            (pl.col("node") == pl.col("snf")).alias("is_self"),
        )
        .sort(["snf", "is_self", "captures", "node"], descending=[False, False, True, False])
        .with_columns(pl.int_range(pl.len()).over("snf").alias("pos"))
        .select("snf", "pos", "node")
    )
    levels = []
    parents = seq.filter(pl.col("pos") == 0).select("snf", pl.lit(-1, pl.Int64).alias("parent"))
    next_id = 0
    for depth in range(int(seq["pos"].max() or 0) + 1 if seq.height else 0):
        level = seq.filter(pl.col("pos") == depth).join(parents, on="snf")
        ids = (
            level.select("parent", "node")
            .unique()
            .sort("parent", "node")
            .with_row_index("tid", offset=next_id)
            .with_columns(pl.col("tid").cast(pl.Int64))
        )
        next_id += ids.height
        level = level.join(ids, on=["parent", "node"])
        levels.append(level)
        parents = level.select("snf", pl.col("tid").alias("parent"))
    if not levels:
        return pl.DataFrame(
            schema={"snf": pl.String, "pos": pl.Int64, "node": pl.String, "parent": pl.Int64,
                    "tid": pl.Int64}
        )  # fmt: skip
    return pl.concat(levels)


def chain_member_counts(chains: pl.DataFrame, captured: pl.DataFrame) -> pl.DataFrame:
    """(snf, members, excluded): per SNF the distinct providers its chain nodes capture
    (`captured`: npi, node, actively_excluded), without a (SNF, provider) pair per member.

    The SNFs' chains form a prefix tree (the biggest capturers first: an owner above many
    SNFs is one shared prefix), walked one depth at a time. A tree node adds the providers
    its last chain node captures that no node above it added; an SNF's count is the sum
    along its path. A provider is looked up where it was added (a few tree nodes), never
    against every node above: linear in the captures for an owner holding its SNFs directly,
    through a company each, or together with many co-owners."""
    paths = _owner_paths(chains, captured)
    tree = paths.select("tid", "parent", "node", pl.col("pos").alias("depth")).unique("tid")
    empty_above = pl.DataFrame(schema={"tid": pl.Int64, "ancestor": pl.Int64})
    added_at = pl.DataFrame(schema={"npi": pl.Int64, "ancestor": pl.Int64})
    above = empty_above  # (tid, ancestor tid) of the current depth's tree nodes
    counts = []
    for depth in range(int(tree["depth"].max()) + 1 if tree.height else 0):
        level = tree.filter(pl.col("depth") == depth).select("tid", "parent", "node")
        if depth:
            parents = level.select("tid", "parent")
            above = pl.concat(
                [
                    parents.join(above.rename({"tid": "parent"}), on="parent").select(
                        "tid", "ancestor"
                    ),
                    parents.select("tid", pl.col("parent").alias("ancestor")),
                ]
            )
        offered = level.join(captured, on="node").select("tid", "npi", "actively_excluded")
        seen = (
            offered.select("tid", "npi")
            .join(added_at, on="npi")
            .join(above, on=["tid", "ancestor"], how="semi")
            .select("tid", "npi")
            .unique()
        )
        new = offered.join(seen, on=["tid", "npi"], how="anti").unique(["tid", "npi"])
        added_at = pl.concat([added_at, new.select("npi", pl.col("tid").alias("ancestor"))])
        counts.append(
            new.group_by("tid").agg(
                pl.len().cast(pl.Int64).alias("members"),
                pl.col("actively_excluded").sum().cast(pl.Int64).alias("excluded"),
            )
        )
    added = pl.concat(counts) if counts else pl.DataFrame(
        schema={"tid": pl.Int64, "members": pl.Int64, "excluded": pl.Int64}
    )  # fmt: skip
    return (
        paths.join(added, on="tid", how="left")
        .group_by("snf")
        .agg(
            pl.col("members").fill_null(0).sum().cast(pl.Int64),
            pl.col("excluded").fill_null(0).sum().cast(pl.Int64),
        )
        .filter(pl.col("members") > 0)
        .sort("snf")
    )


def ownership_score_expr() -> pl.Expr:
    """S_o = min(100, 100 x excluded / max(providers, 1)), rounded 2; no SNF match gives 0."""
    excluded = pl.col("chain_excluded_count").fill_null(0)
    total = pl.max_horizontal(pl.col("chain_provider_count").fill_null(0), 1)
    return pl.min_horizontal(100.0, 100.0 * excluded / total).round(2).alias("ownership_chain_risk")
