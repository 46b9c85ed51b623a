"""The ownership graph: SNF entities, owner forests up to six levels, shared holding companies."""

from __future__ import annotations

import numpy as np
import polars as pl

from claidex.dev.sample import vocabulary as vocab
from claidex.dev.sample.common import MAX_OWNER_LEVELS, Draw, Population, join_words, strings


def graph(gen: Draw, pop: Population) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]:
    """Entities and OWNS edges: per chain a forest up to six owner levels, some owners shared.

    Returns entities, edges, the tree of every SNF, and the owner entity each
    chain provider is branded after.
    """
    rng = gen.rng
    n_snf = pop.snf.size
    n_trees = max(1, n_snf // 6)
    tree = rng.integers(0, n_trees, n_snf)
    depth = rng.choice(
        np.arange(1, MAX_OWNER_LEVELS + 1), size=n_trees, p=[0.15, 0.3, 0.25, 0.15, 0.1, 0.05]
    )
    brand_a = rng.integers(0, len(vocab.BRAND_FIRST), n_trees)
    brand_b = rng.integers(0, len(vocab.BRAND_SECOND), n_trees)
    brand = join_words(strings(vocab.BRAND_FIRST, brand_a), strings(vocab.BRAND_SECOND, brand_b))
    position = pl.Series(tree).rank("ordinal").to_numpy() - 1  # unique slot per SNF
    snf_id = pl.Series([f"SNF{i:07d}" for i in range(n_snf)])
    snf_name = join_words(
        brand.gather(tree),
        strings(vocab.SNF_KINDS, rng.integers(0, len(vocab.SNF_KINDS), n_snf)),
        "OF",
        strings(vocab.CITIES, rng.integers(0, len(vocab.CITIES), n_snf)),
        "LLC",
    )
    depths = pl.DataFrame({"tree": np.arange(n_trees), "depth": depth})
    levels = [pl.DataFrame({"entity_id": snf_id, "tree": tree, "slot": position, "level": 0})]
    edges = []
    child = levels[0]
    for level in range(1, MAX_OWNER_LEVELS + 1):
        alive = child.join(depths, on="tree").filter(pl.col("depth") >= level).drop("depth")
        if alive.is_empty():
            break
        parent = alive.with_columns(
            (pl.col("slot") // (2 + (pl.col("tree") % 2))).alias("pslot")
        ).with_columns(
            pl.format("OWN{}-{}-{}", pl.col("tree"), pl.lit(level), pl.col("pslot")).alias(
                "owner_id"
            )
        )
        edges.append(parent.select("owner_id", owned_id="entity_id"))
        child = (
            parent.select(
                pl.col("owner_id").alias("entity_id"),
                "tree",
                pl.col("pslot").alias("slot"),
                pl.lit(level).alias("level"),
            )
            .unique("entity_id", keep="first")
            .sort("entity_id")
        )
        levels.append(child)
    owners = pl.concat(levels[1:])
    kinds = pl.Series(vocab.OWNER_KINDS)
    owners = owners.with_columns(
        join_words(
            brand.gather(owners["tree"]),
            kinds.gather((owners["level"] + owners["slot"]) % len(kinds)),
        ).alias("name")
    )
    # A few holding companies own the roots of several chains (shared owners across trees).
    roots = owners.sort("level", descending=True).unique("tree", keep="first").sort("tree")
    n_mega = max(1, n_trees // 50)
    chosen = roots.sample(n=max(1, roots.height // 20), seed=int(rng.integers(1 << 30)))
    mega = chosen.with_columns(
        pl.format("MEGA{}", pl.col("tree") % n_mega).alias("owner_id")
    ).select("owner_id", owned_id="entity_id")
    mega_entities = mega.select(pl.col("owner_id").alias("entity_id")).unique().sort("entity_id")
    mega_entities = mega_entities.with_columns(
        pl.format("{} NATIONAL HEALTHCARE HOLDINGS", pl.col("entity_id").str.slice(4)).alias("name")
    )
    entities = pl.concat(
        [
            pl.DataFrame({"entity_id": snf_id, "name": snf_name, "entity_type": "SNF"}),
            owners.select(
                "entity_id", "name", pl.lit(gen.owner_type("OWNER")).alias("entity_type")
            ),
            mega_entities.select(
                "entity_id", "name", pl.lit(gen.owner_type("HOLDING")).alias("entity_type")
            ),
        ]
    )
    all_edges = pl.concat([*edges, mega]).unique().sort("owner_id", "owned_id")
    if gen.production:
        all_edges = owners_of_snfs(all_edges, snf_id)
    # Chain providers carry an owner's name ("<owner> PHARMACY LLC").
    branded = owners.filter(pl.col("level") <= 2)
    pick = rng.integers(0, branded.height, pop.chain.size)
    return entities, all_edges, tree, branded["entity_id"].to_numpy()[pick]


def owners_of_snfs(edges: pl.DataFrame, snf_id: pl.Series) -> pl.DataFrame:
    """Every (ancestor, SNF) pair of the forest: each owner of a chain owns the SNF directly."""
    closure = edges.filter(pl.col("owned_id").is_in(snf_id.implode()))
    frontier = closure
    for _ in range(MAX_OWNER_LEVELS + 1):  # loops over owner levels, never over rows
        frontier = edges.join(
            frontier.select(pl.col("owner_id").alias("mid"), "owned_id"),
            left_on="owned_id",
            right_on="mid",
        ).select("owner_id", pl.col("owned_id_right").alias("owned_id"))
        if frontier.is_empty():
            break
        closure = pl.concat([closure, frontier])
    return closure.unique().sort("owner_id", "owned_id")
