"""Issue 26, defect 1: chain counts without a (SNF, group member) table. On random small
graphs around one owner of many SNFs (layers above and below it, cycles, EXCLUDED_BY links,
providers named after entities), the linear tables give exactly what a plain breadth-first
search per SNF gives (an independent count, written here from SPEC §4's definitions)."""

from __future__ import annotations

import random
from collections import deque

import polars as pl
import pytest

from scoring.config import Settings
from scoring.methodology.components.ownership import (
    OwnershipGraph,
    chain_capture,
    chain_closures,
    chain_member_counts,
    group_of,
    owners_excluded,
)

CFG = Settings()
HOPS = CFG.ownership_max_hops


def random_graph(seed: int, snfs: int) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """One owner O of most SNFs, a holding H above O (and a 6-deep line above H), middle
    owners each holding a few SNFs, LLCs below some SNFs, a cycle, stray edges."""
    rng = random.Random(seed)
    entities = [("O", "Grand Owner Group", "OWNER"), ("H", "Holding Trust", "OWNER")]
    edges = [("H", "O")]
    for level in range(1, 7):  # T1 above H, T2 above T1, ...: T6 is 7 above an SNF
        entities.append((f"T{level}", f"top level {level}", "OWNER"))
        edges.append((f"T{level}", "H" if level == 1 else f"T{level - 1}"))
    for k in range(snfs // 10 + 1):
        entities.append((f"M{k}", f"middle {k} care", "OWNER"))
        edges.append(("O", f"M{k}"))
    for i in range(snfs):
        entities.append((f"S{i}", f"sunrise {i} manor", "SNF"))
        owner = rng.choice(["O", "O", "O", f"M{i // 10}"])
        edges.append((owner, f"S{i}"))
        if rng.random() < 0.2:  # an LLC below the SNF, another below that
            entities.append((f"L{i}", f"llc {i} holdings", "LLC"))
            edges.append((f"S{i}", f"L{i}"))
            entities.append((f"L{i}b", f"llc {i}b", "LLC"))
            edges.append((f"L{i}", f"L{i}b"))
    edges += [("S0", "O"), ("S1", "S2"), ("M0", "M0")]  # a cycle, an SNF owning an SNF, a loop
    # a holding owned by many owners at once (each SNF of it has them all above it), and
    # ids that hold the separator a text key of owner sets would use
    entities.append(("CO", "co owned holding", "OWNER"))
    for w in range(snfs // 8):
        entities.append((f"W{w}\x1f", f"partner {w}", "OWNER"))
        edges.append((f"W{w}\x1f", "CO"))
    for i in range(0, snfs, 7):
        edges.append(("CO", f"S{i}"))
    entities += [
        ("a\x1fb", "weird one", "OWNER"),
        ("a", "weird a", "OWNER"),
        ("b", "weird b", "OWNER"),
    ]
    edges += [("a\x1fb", "S3"), ("a", "S4"), ("b", "S4")]
    entities.append(("Z", "", "LLC"))  # an empty name matches nothing
    edges.append(("O", "Z"))
    return entities, edges


def brute_force(
    entities: list[tuple[str, str, str]],
    edges: list[tuple[str, str]],
    flagged: set[str],
    people: list[tuple[int, str, bool]],
) -> dict[str, tuple[int, int, bool]]:
    """Per SNF: (chain providers, excluded chain providers, owner_excluded), by BFS."""
    up: dict[str, set[str]] = {}
    down: dict[str, set[str]] = {}
    for owner, owned in edges:
        up.setdefault(owned, set()).add(owner)
        down.setdefault(owner, set()).add(owned)
    names = {e: n.lower() for e, n, _ in entities}

    def within(start: set[str], links: dict[str, set[str]]) -> set[str]:
        seen = set(start)
        queue = deque((node, 0) for node in start)
        while queue:
            node, hops = queue.popleft()
            if hops == HOPS:
                continue
            for nxt in links.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, hops + 1))
        return seen

    found = {}
    for snf in (e for e, _, t in entities if t == "SNF"):
        group = within(within({snf}, up), down)
        needles = [names[n] for n in group if names.get(n)]
        members = [p for p in people if any(needle in p[1].lower() for needle in needles)]
        found[snf] = (len(members), sum(p[2] for p in members), bool(group & flagged))
    return found


@pytest.mark.parametrize(("seed", "snfs"), [(1, 40), (2, 120), (3, 200)])
def test_linear_tables_count_what_a_breadth_first_search_counts(seed: int, snfs: int) -> None:
    entities, edges = random_graph(seed, snfs)
    rng = random.Random(seed + 100)
    flagged = {rng.choice([e for e, _, _ in entities]) for _ in range(3)}
    names = [n for _, n, _ in entities if n]
    people = [
        (i, f"{rng.choice(names)} {rng.choice(['clinic', 'llc', 'md'])}", rng.random() < 0.3)
        for i in range(400)
    ] + [(1000, "nobody at all", True)]
    graph = OwnershipGraph(
        entities=pl.LazyFrame(entities, schema=["entity_id", "name", "entity_type"], orient="row"),
        ownership=pl.LazyFrame(edges, schema=["owner_id", "owned_id"], orient="row"),
        entity_exclusions=pl.LazyFrame({"entity_id": sorted(flagged)}),
    )
    snf_ids = pl.LazyFrame({"snf": [e for e, _, t in entities if t == "SNF"]})
    chains, closures = chain_closures(snf_ids, graph, CFG)
    providers = pl.LazyFrame(
        [(i, name) for i, name, _ in people], schema=["npi", "display_name"], orient="row"
    )
    excluded = pl.DataFrame(
        [(i, bad) for i, _, bad in people], schema=["npi", "actively_excluded"], orient="row"
    )
    captured = (
        chain_capture(closures.lazy(), providers, graph.entities)
        .collect()
        .join(excluded, on="npi", how="left")
    )
    counts = {s: (m, x) for s, m, x in chain_member_counts(chains, captured).iter_rows()}
    flags = set(owners_excluded(chains, closures, pl.DataFrame({"node": sorted(flagged)}))["snf"])
    expected = brute_force(entities, edges, flagged, people)
    for snf, (members, bad, owner) in expected.items():
        assert counts.get(snf, (0, 0)) == (members, bad), snf
        assert (snf in flags) == owner, snf
    # closures: a row per (node, what lies within 5 below it) -- no row per (SNF, member)
    widest = closures.group_by("member").len()["len"].max()
    assert closures.height <= widest * len(entities)
    some = pl.DataFrame({"snf": ["S3"]})
    group = group_of(chains.join(some, on="snf", how="semi"), closures)
    assert set(group["node"]) >= {"S3", "O", "H"}
