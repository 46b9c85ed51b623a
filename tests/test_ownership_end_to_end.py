"""SPEC §4 component 2 (ownership chain risk) and component 4 (exclusion proximity)
on hand-built ownership graphs, scored end to end through the real run steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from scoring.graphdb.connection import neo4j_target
from tests.builders import by_npi, npi, score, write_dataset
from tests.conftest import GRAPH_SERVERS, use_graph_server
from tests.graphs import load_dataset_graph

MODES = ["embedded"] + [
    f"{mode}@{server}" for server in GRAPH_SERVERS for mode in ("neo4j-snapshot", "neo4j-live")
]


@pytest.fixture(autouse=True, params=MODES)
def graph_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every hand-built graph is scored in all three graph modes (SPEC §5: identical results);
    the Neo4j modes read it from a real Bolt server after `run` loads it there."""
    mode, _, server = request.param.partition("@")
    monkeypatch.setenv("CLAIDEX_GRAPH_MODE", mode)
    if server:
        use_graph_server(server, request, monkeypatch)
    return mode


def approx(value: float) -> Any:
    return pytest.approx(value, abs=1e-9)


def run(
    tmp_path: Path,
    *,
    providers: list[dict[str, Any]],
    scored: list[int],
    entities: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ownership: list[tuple[str, str]] = (),  # type: ignore[assignment]
    exclusions: list[int] = (),  # type: ignore[assignment]
    reinstated: dict[int, bool | None] | None = None,
    entity_exclusions: list[str] = (),  # type: ignore[assignment]
) -> dict[str, dict[str, Any]]:
    """Score a graph. `scored` are the provider indexes given a 2023 payment row (the only
    providers that appear in the output); `exclusions` are LEIE rows (reinstated false unless
    `reinstated` says otherwise); `ownership` is a list of (owner_id, owned_id) OWNS edges."""
    reinstated = reinstated or {}
    leie = [
        {"exclusion_id": f"L{i}", "npi": npi(i), "reinstated": reinstated.get(i, False)}
        for i in exclusions
    ]
    data = write_dataset(
        tmp_path / "data",
        providers=providers,
        payments=[{"npi": npi(i), "year": 2023} for i in scored],
        exclusions=leie,
        entities=list(entities),
        ownership=[{"owner_id": a, "owned_id": b} for a, b in ownership],
        entity_exclusions=[{"entity_id": e} for e in entity_exclusions],
    )
    if os.environ["CLAIDEX_GRAPH_MODE"] != "embedded":
        load_dataset_graph(neo4j_target(), data)
    return by_npi(score(data, tmp_path / "run"))


def provider(i: int, name: str, **kw: Any) -> dict[str, Any]:
    return {"npi": npi(i), "display_name": name, **kw}


def entity(entity_id: str, name: str, entity_type: str = "SNF") -> dict[str, Any]:
    return {"entity_id": entity_id, "name": name, "entity_type": entity_type}


def ownership_of(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["snf_entity_id"],
        row["chain_provider_count"],
        row["chain_excluded_count"],
        row["owner_excluded"],
    )


# --------------------------------------------------------------------------- step 1: SNF match


def test_snf_match_is_case_insensitive_containment_first_name_then_entity_id(tmp_path):
    entities = [
        # "sunrise" candidates: plain order puts "SUNRISE C" before "sunrise b"
        # (a lower-cased order would pick "sunrise b")
        entity("S-B", "sunrise b"),
        entity("S-C", "SUNRISE C"),
        # not an SNF: never a candidate even though its name sorts first
        entity("H-1", "Aaa Sunrise Holdings", "LLC"),
        # identical names: the smaller entity_id wins
        entity("OAK-2", "Oak Manor"),
        entity("OAK-1", "Oak Manor"),
        entity("P-1", "Pine Ridge Nursing"),
    ]
    providers = [
        provider(1, "Sunrise"),
        provider(2, "oak manor"),
        provider(3, "PINE RIDGE"),  # contained, case-insensitively
        provider(4, "Pine Ridge Nursing Home"),  # longer than the SNF name: not contained
        provider(5, "Aaa Sunrise"),  # only contained in the non-SNF entity
    ]
    scores = run(tmp_path, providers=providers, entities=entities, scored=[1, 2, 3, 4, 5])
    assert scores[npi(1)]["snf_entity_id"] == "S-C"
    assert scores[npi(2)]["snf_entity_id"] == "OAK-1"
    assert scores[npi(3)]["snf_entity_id"] == "P-1"
    assert scores[npi(4)]["snf_entity_id"] is None
    assert scores[npi(5)]["snf_entity_id"] is None


# --------------------------------------------------------------------------- steps 2-3: hops


def _upward_chain() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """SNF S owned by O1, O1 by O2, ..., O5 by O6 (O6 is 6 hops above S)."""
    entities = [entity("S", "Sunset Care Center")]
    entities += [entity(f"O{k}", f"Owner Level {k}", "LLC") for k in range(1, 7)]
    edges = [("O1", "S")] + [(f"O{k + 1}", f"O{k}") for k in range(1, 6)]
    return entities, edges


def test_chain_reaches_five_hops_up_not_six(tmp_path):
    entities, edges = _upward_chain()
    providers = [
        provider(1, "Sunset Care"),  # matches S; contains no entity name itself
        provider(11, "Owner Level 1 Group"),
        provider(15, "Owner Level 5 Clinic"),  # 5 hops up: in the chain
        provider(16, "Owner Level 6 Clinic"),  # 6 hops up: not in the chain
    ]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=edges,
        scored=[1],
        exclusions=[15, 16],
        entity_exclusions=["O6"],  # EXCLUDED_BY above the 5-hop limit
    )
    row = scores[npi(1)]
    # chain providers {11, 15}; excluded {15}; O6 is outside all_entities
    assert ownership_of(row) == ("S", 2, 1, False)
    assert row["ownership_chain_risk"] == approx(round(100 * 1 / 2, 2))
    assert row["exclusion_proximity_score"] == approx(50.0)


def test_excluded_owner_five_hops_up_sets_owner_excluded(tmp_path):
    entities, edges = _upward_chain()
    providers = [provider(1, "Sunset Care")]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=edges,
        scored=[1],
        entity_exclusions=["O5"],
    )
    row = scores[npi(1)]
    assert ownership_of(row) == ("S", 0, 0, True)
    assert row["ownership_chain_risk"] == approx(0.0)
    assert row["exclusion_proximity_score"] == approx(80.0)


def test_group_reaches_five_edges_down_from_chain_entities_not_six(tmp_path):
    # A owns the SNF S and its sibling B; B -> C1 -> C2 -> C3 -> C4 -> C5 is a line
    # (A->B 1, ->C1 2, ->C2 3, ->C3 4, ->C4 5, ->C5 6 edges from A, the nearest chain
    # entity). Below S: S -> D1 -> ... -> D6 (D5 at 5 edges, D6 at 6).
    # Z is 6 edges below A via C4 but also 2 edges below A via B: a path of <= 5 exists.
    names = ["A", "B", "C1", "C2", "C3", "C4", "C5", "D1", "D2", "D3", "D4", "D5", "D6", "Z"]
    entities = [entity("S", "Sunset Manor")]
    entities += [entity(n, f"Node {n} Holdings", "LLC") for n in names]
    edges = [
        ("A", "S"),
        ("A", "B"),
        ("B", "C1"),
        ("C1", "C2"),
        ("C2", "C3"),
        ("C3", "C4"),
        ("C4", "C5"),
        ("S", "D1"),
        ("D1", "D2"),
        ("D2", "D3"),
        ("D3", "D4"),
        ("D4", "D5"),
        ("D5", "D6"),
        ("C4", "Z"),
        ("B", "Z"),
    ]
    providers = [
        provider(1, "Sunset"),
        provider(10, "Clinic of Node B Holdings"),
        provider(11, "Clinic of Node C4 Holdings"),  # excluded, inside
        provider(12, "Clinic of Node D5 Holdings"),
        provider(13, "Clinic of Node Z Holdings"),
        provider(20, "Clinic of Node C5 Holdings"),  # excluded, outside
        provider(21, "Clinic of Node D6 Holdings"),  # excluded, outside
    ]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=edges,
        scored=[1],
        exclusions=[11, 20, 21],
        entity_exclusions=["C5", "D6"],  # both outside the group
    )
    row = scores[npi(1)]
    assert ownership_of(row) == ("S", 4, 1, False)
    assert row["ownership_chain_risk"] == approx(round(100 * 1 / 4, 2))
    assert row["exclusion_proximity_score"] == approx(50.0)


def test_shared_owner_puts_both_snfs_in_one_group(tmp_path):
    entities = [
        entity("S1", "Maple Grove SNF"),
        entity("S2", "Willow Creek SNF"),
        entity("S3", "Pine Hill SNF"),
        entity("H", "Harbor Holdings", "LLC"),
    ]
    edges = [("H", "S1"), ("H", "S2")]
    providers = [
        provider(1, "Maple Grove"),  # SNF S1
        provider(2, "Willow Creek"),  # SNF S2
        provider(3, "Pine Hill"),  # SNF S3, unrelated
        provider(11, "Maple Grove SNF Therapy"),
        provider(12, "Willow Creek SNF Rehab"),  # excluded
        provider(13, "Harbor Holdings Pharmacy"),
        provider(14, "Pine Hill SNF Labs"),
    ]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=edges,
        scored=[1, 2, 3],
        exclusions=[12],
    )
    # S1's group = {S1, H} up, + S2 below H: chain providers {11, 12, 13}, excluded {12}
    assert ownership_of(scores[npi(1)]) == ("S1", 3, 1, False)
    assert ownership_of(scores[npi(2)]) == ("S2", 3, 1, False)
    for i in (1, 2):
        assert scores[npi(i)]["ownership_chain_risk"] == approx(round(100 * 1 / 3, 2))
        assert scores[npi(i)]["exclusion_proximity_score"] == approx(50.0)
    assert ownership_of(scores[npi(3)]) == ("S3", 1, 0, False)
    assert scores[npi(3)]["ownership_chain_risk"] == approx(0.0)


# --------------------------------------------------------------------------- no match


def test_no_snf_match_and_empty_display_name_give_zero_ownership(tmp_path):
    entities = [
        entity("S", "Alpha SNF"),
        entity("P", "Alpha Parent", "LLC"),
        entity("Q", "Nowhere Holdings", "LLC"),
    ]
    providers = [
        provider(1, "Nowhere"),  # only contained in a non-SNF entity
        provider(2, ""),  # empty names match nothing
        provider(3, "Alpha"),  # control: does match
        provider(11, "Alpha SNF Staff"),
    ]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=[("P", "S")],
        scored=[1, 2, 3, 4],  # npi(4) is not in providers at all
        exclusions=[11],
        entity_exclusions=["P"],
    )
    for i in (1, 2, 4):
        row = scores[npi(i)]
        assert ownership_of(row) == (None, 0, 0, False), i
        assert row["ownership_chain_risk"] == approx(0.0), i
        assert row["exclusion_proximity_score"] == approx(0.0), i
    assert ownership_of(scores[npi(3)]) == ("S", 1, 1, True)
    assert scores[npi(3)]["ownership_chain_risk"] == approx(100.0)


# --------------------------------------------------------------------------- step 4-5: counts


def test_chain_counts_use_all_providers_and_active_leie_rows(tmp_path):
    entities = [entity("S", "Cedar SNF"), entity("P", "Cedar Parent", "LLC")]
    providers = [
        provider(1, "Cedar"),  # the scored provider (not a chain provider itself)
        provider(11, "Cedar SNF Therapy"),  # active LEIE (reinstated false)
        provider(12, "Cedar Parent Pharmacy"),  # LEIE reinstated true: not excluded
        provider(13, "Cedar Parent Labs"),  # LEIE reinstated null: excluded
        provider(14, "The Cedar SNF & Cedar Parent Clinic"),  # two names, counted once
        provider(15, "Cedar SNF Rehab"),  # no payments: still a chain provider
        provider(16, "Cedar Parent Dental", is_excluded=True),  # no LEIE row: not excluded
    ]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=[("P", "S")],
        scored=[1, 11],
        exclusions=[11, 12, 13],
        reinstated={11: False, 12: True, 13: None},
    )
    row = scores[npi(1)]
    assert ownership_of(row) == ("S", 6, 2, False)
    assert row["ownership_chain_risk"] == approx(round(min(100.0, 100 * 2 / max(6, 1)), 2))
    assert row["ownership_chain_risk"] == approx(33.33)
    assert row["exclusion_proximity_score"] == approx(50.0)
    # S_o < 50 and S_e < 80: no ownership or exclusion flag (Medicare-only: S_p = 100)
    assert row["flags"] == ["Highly concentrated in a single payer program (Medicare)."]
    # a chain provider that matches no SNF has no ownership result of its own
    assert ownership_of(scores[npi(11)]) == (None, 0, 0, False)
    assert scores[npi(11)]["exclusion_proximity_score"] == approx(100.0)


# --------------------------------------------------------------------------- S_e precedence


def test_exclusion_proximity_precedence(tmp_path):
    entities = [
        entity("D", "Delta SNF"),
        entity("DP", "Delta Parent", "LLC"),
        entity("E", "Echo SNF"),
        entity("EP", "Echo Parent", "LLC"),
        entity("F", "Foxtrot SNF"),
        entity("G", "Golf SNF"),
    ]
    edges = [("DP", "D"), ("EP", "E")]
    providers = [
        provider(1, "Delta"),  # directly excluded, owner excluded, chain excluded -> 100
        provider(2, "Delta S"),  # owner excluded (and chain excluded) -> 80
        provider(3, "Echo"),  # only an excluded chain provider -> 50
        provider(4, "Foxtrot"),  # nothing -> 0
        provider(5, "Golf"),  # the SNF itself has EXCLUDED_BY, no chain providers -> 80
        provider(6, "Hotel"),  # no SNF, directly excluded -> 100
        provider(11, "Delta SNF Staff"),
        provider(12, "Echo SNF Staff"),
    ]
    scores = run(
        tmp_path,
        providers=providers,
        entities=entities,
        ownership=edges,
        scored=[1, 2, 3, 4, 5, 6],
        exclusions=[1, 6, 11, 12],
        entity_exclusions=["DP", "G"],
    )
    expected = {
        1: (("D", 1, 1, True), 100.0),
        2: (("D", 1, 1, True), 80.0),
        3: (("E", 1, 1, False), 50.0),
        4: (("F", 0, 0, False), 0.0),
        5: (("G", 0, 0, True), 80.0),
        6: ((None, 0, 0, False), 100.0),
    }
    for i, (counts, s_e) in expected.items():
        row = scores[npi(i)]
        assert ownership_of(row) == counts, i
        assert row["exclusion_proximity_score"] == approx(s_e), i


def test_links_to_unknown_entities_are_quarantined_in_every_mode(tmp_path, graph_mode):
    """A->X->S with X missing from entities: no path through a phantom node in any mode."""
    result = run(
        tmp_path,
        providers=[provider(1, "Oak SNF")],
        scored=[1],
        entities=[entity("S", "Oak SNF Center"), entity("A", "Acme Holding", "HOLDING")],
        ownership=[("A", "X"), ("X", "S")],
        entity_exclusions=["A", "Y"],
    )
    assert ownership_of(result[npi(1)]) == ("S", 0, 0, False)
    if graph_mode == "embedded":  # Neo4j modes read the graph, not the dataset's graph tables
        quarantine = pl.read_parquet(tmp_path / "run" / "quarantine.parquet")
        graph_rows = quarantine.filter(pl.col("source").is_in(["ownership", "entity_exclusions"]))
        assert sorted(graph_rows["reason"]) == [
            "entity_id not in entities",
            "owned_id not in entities",
            "owner_id not in entities",
        ]
