"""ownership.py: component 2, ownership chain risk S_o, embedded graph (SPEC §4):
step 1 the SNF by name containment, steps 2-3 the chain (1..5 up) and its group (0..5
down), step 4 the chain providers by name containment, step 5 the score.

The per-SNF counts and owner_excluded are assembled from these steps by the run stages;
here they are worked out from the module's steps and the SPEC's definitions.
"""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.components.ownership import (
    OwnershipGraph,
    chain_capture,
    chain_closures,
    chain_member_counts,
    group_of,
    match_snf,
    owners_excluded,
    ownership_score_expr,
)

CFG = Settings()


def ownership_groups(snfs: pl.LazyFrame, g: OwnershipGraph, cfg: Settings) -> pl.LazyFrame:
    """Each SNF's whole group, composed from the two linear tables (what `explain` does)."""
    return (
        group_of(*chain_closures(snfs, g, cfg)).select("snf", "node", "down_hops", "up_hops").lazy()
    )


def entities(rows: list[tuple[str, str, str]]) -> pl.LazyFrame:
    return pl.LazyFrame(
        rows,
        schema={"entity_id": pl.String, "name": pl.String, "entity_type": pl.String},
        orient="row",
    )


def providers(rows: list[tuple[int, str | None]]) -> pl.LazyFrame:
    return pl.LazyFrame(rows, schema={"npi": pl.Int64, "display_name": pl.String}, orient="row")


def test_snf_match_by_substring_first_by_name_then_entity_id() -> None:
    graph_entities = entities(
        [
            ("E1", "Sunrise Care Center", "SNF"),
            ("E2", "Sunrise Care", "SNF"),
            ("E9", "Oak Manor", "SNF"),
            ("E3", "Oak Manor", "SNF"),
            ("E5", "alpha Lodge", "SNF"),
            ("E6", "Beta Lodge", "SNF"),
            ("E7", "Sunrise Holdings", "OWNER"),
        ]
    )
    people = providers(
        [
            (1, "sunrise care"),  # in E1 and E2: "Sunrise Care" < "Sunrise Care Center"
            (2, "SUNRISE CARE CENTER"),  # only E1 contains it (case-insensitive)
            (3, "Oak Manor"),  # E9 and E3 share the name: entity_id E3 first
            (4, "lodge"),  # stored-name order: "Beta Lodge" < "alpha Lodge" (B < a)
            (5, "Sunrise Holdings"),  # not an SNF
            (6, ""),  # empty names match nothing
            (7, None),
            (8, "Maple Grove"),  # no entity
        ]
    )
    out = match_snf(people, graph_entities).collect().sort("npi")
    expected = pl.DataFrame(
        {"npi": [1, 2, 3, 4], "snf_entity_id": ["E2", "E1", "E3", "E6"]},
    )
    assert_frame_equal(out, expected)


def test_snf_match_finds_every_display_name_nested_in_one_snf_name() -> None:
    # display names that overlap, nest and share prefixes/suffixes inside one SNF name: each
    # is contained in lower("Sunrise Care Center"), so each matches it (the index must report
    # every pattern, not only the longest or leftmost)
    names = ["sunrise care center", "sunrise care", "care", "car", "rise", "sun", "e cent", "r"]
    people = providers(list(enumerate(names, start=1)))
    out = match_snf(people, entities([("E1", "Sunrise Care Center", "SNF")])).collect()
    expected = pl.DataFrame({"npi": list(range(1, 9)), "snf_entity_id": ["E1"] * 8})
    assert_frame_equal(out.sort("npi"), expected)


def test_a_cycle_of_ownership_ends() -> None:
    # S -> T -> S (each owns the other), U owned by T: the chain is {S, T}; U is 1 below T
    cyclic = OwnershipGraph(
        entities=entities([("S", "s", "SNF"), ("T", "t", "LLC"), ("U", "u", "LLC")]),
        ownership=pl.LazyFrame(
            [("S", "T"), ("T", "S"), ("T", "U")], schema=["owner_id", "owned_id"], orient="row"
        ),
        entity_exclusions=pl.LazyFrame(schema={"entity_id": pl.String}),
    )
    out = ownership_groups(pl.LazyFrame({"snf": ["S"]}), cyclic, CFG).collect().sort("node")
    expected = pl.DataFrame(
        [("S", "S", 0, 0), ("S", "T", 0, 1), ("S", "U", 1, None)],
        schema={"snf": pl.String, "node": pl.String, "down_hops": pl.Int32, "up_hops": pl.Int32},
        orient="row",
    )
    assert_frame_equal(out, expected)


# S is the SNF. Upward: A1 owns S, A2 owns A1, ... A6 owns A5 (6 edges above S: outside).
# Downward from chain entities: A1 owns B1 (a sibling of S); A5 owns C1 -> C2 -> ... -> C6
# (C6 is 6 edges below A5) but A2 also owns C6 directly (1 edge): a path of <= 5 exists.
# C7 hangs below C6 (2 below A2). X owns Y, unconnected.
EDGES = [
    ("A1", "S"),
    ("A2", "A1"),
    ("A3", "A2"),
    ("A4", "A3"),
    ("A5", "A4"),
    ("A6", "A5"),
    ("A1", "B1"),
    ("A5", "C1"),
    ("C1", "C2"),
    ("C2", "C3"),
    ("C3", "C4"),
    ("C4", "C5"),
    ("C5", "C6"),
    ("A2", "C6"),
    ("C6", "C7"),
    ("X", "Y"),
]


def graph(excluded: list[str]) -> OwnershipGraph:
    names = {"S": "Sunrise Care", "A1": "Acme Health", "B1": "Oak Manor", "C2": ""}
    ids = sorted({e for edge in EDGES for e in edge})
    return OwnershipGraph(
        entities=entities(
            [(e, names.get(e, f"entity {e}"), "SNF" if e == "S" else "LLC") for e in ids]
        ),
        ownership=pl.LazyFrame(EDGES, schema=["owner_id", "owned_id"], orient="row"),
        entity_exclusions=pl.LazyFrame({"entity_id": excluded}, schema={"entity_id": pl.String}),
    )


def test_chain_up_to_five_hops_and_group_down_zero_to_five() -> None:
    snfs = pl.LazyFrame({"snf": ["S"]})
    out = ownership_groups(snfs, graph([]), CFG).collect().sort("node")
    expected = pl.DataFrame(
        [
            ("S", "A1", 0, 1),
            ("S", "A2", 0, 2),
            ("S", "A3", 0, 3),
            ("S", "A4", 0, 4),
            ("S", "A5", 0, 5),  # A6 is 6 up: not in the chain, and nothing leads down to it
            ("S", "B1", 1, None),
            ("S", "C1", 1, None),
            ("S", "C2", 2, None),
            ("S", "C3", 3, None),
            ("S", "C4", 4, None),
            ("S", "C5", 5, None),
            ("S", "C6", 1, None),  # below A2 directly: the fewest edges count
            ("S", "C7", 2, None),
            ("S", "S", 0, 0),
        ],
        schema={"snf": pl.String, "node": pl.String, "down_hops": pl.Int32, "up_hops": pl.Int32},
        orient="row",
    )
    assert_frame_equal(out, expected)


def owner_excluded(excluded: list[str]) -> bool:
    """SPEC §4 step 4: any entity of all_entities has EXCLUDED_BY."""
    g = graph(excluded)
    chains, closures = chain_closures(pl.LazyFrame({"snf": ["S"]}), g, CFG)
    flagged = g.entity_exclusions.select(pl.col("entity_id").alias("node")).collect()
    return owners_excluded(chains, closures, flagged).height > 0


def test_owner_excluded_within_the_group_only() -> None:
    assert owner_excluded(["A5"])  # 5 up
    assert owner_excluded(["C5"])  # 5 below a chain entity
    assert owner_excluded(["B1"])  # a sibling
    assert not owner_excluded(["A6"])  # 6 up
    assert not owner_excluded(["Y"])  # another graph
    assert not owner_excluded([])


def test_chain_providers_by_entity_name_containment() -> None:
    g = graph([])
    chains, closures = chain_closures(pl.LazyFrame({"snf": ["S"]}), g, CFG)
    people = providers(
        [
            (1, "ACME HEALTH CLINIC"),  # contains "acme health" (A1)
            (2, "Sunrise Care"),  # S itself
            (3, "Acme"),  # too short to contain "acme health"
            (4, "Oak Manor and Acme Health"),  # two group names: counted once
            (5, ""),  # empty names match nothing (C2's empty name neither)
            (6, "entity A6 Medical"),  # A6 is outside the group
            (7, "entity C7 Medical"),
            (8, None),
        ]
    )
    captured = chain_capture(closures.lazy(), people, g.entities).collect()
    mine = captured.join(chains.filter(pl.col("snf") == "S"), on="node", how="semi")
    assert sorted(mine["npi"].unique().to_list()) == [1, 2, 4, 7]
    flagged = captured.with_columns((pl.col("npi") == 4).alias("actively_excluded"))
    counts = chain_member_counts(chains, flagged)
    assert counts.rows() == [("S", 4, 1)]


def test_ownership_score() -> None:
    counts = pl.DataFrame(
        {
            "chain_excluded_count": [1, 3, 0, 2, None, 5, 1],
            "chain_provider_count": [3, 3, 0, 3, None, 0, 32],
        },
        schema={"chain_excluded_count": pl.Int64, "chain_provider_count": pl.Int64},
    )
    out = counts.select(ownership_score_expr())
    # 100 x excluded / max(providers, 1), at most 100, rounded 2: 1/3 -> 33.33, 3/3 -> 100,
    # 0 -> 0, 2/3 -> 66.67, no SNF match -> 0, min(100, 500) -> 100,
    # 1/32 -> 3.125 exactly -> 3.12 (half to even)
    expected = [33.33, 100.0, 0.0, 66.67, 0.0, 100.0, 3.12]
    assert_frame_equal(out, pl.DataFrame({"ownership_chain_risk": expected}))
