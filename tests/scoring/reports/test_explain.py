"""`claidex explain NPI` (issue 14): for providers on every branch of the methodology, the
numbers shown recombine, by SPEC §4's formulas written out here, into the published row."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from claidex.explain_view import explain
from scoring.config import Settings
from scoring.runs.store import RunPaths
from tests.builders import by_npi, claidex_cli, npi, score, write_dataset

CFG = Settings()
TAXONOMY = "207Q00000X"
YEARS = range(2019, 2024)
# provider index -> the branch it covers
FALLBACK, SINGLE_YEAR, NO_RECENT, SNF_CHAIN, OWNER_EXCLUDED, EXCLUDED = 100, 101, 102, 103, 106, 107
CHAIN_EXCLUDED_MEMBER, CHAIN_MEMBER = 104, 105


def _payments() -> list[dict[str, Any]]:
    rows = []
    for i in range(60):  # the primary group: 60 eligible members in CA each year
        for year in YEARS:
            rows.append(
                {"npi": npi(i), "year": year, "claims": 200.0 + i, "beneficiaries": 50.0 + i % 5,
                 "payments": 1000.0 * (1 + i % 7) + 13.0 * i + 40.0 * (year - 2019) * (i % 3)}
            )  # fmt: skip
        if i % 4 == 0:
            rows.append({"npi": npi(i), "year": 2023, "program": "Medicaid", "payments": 700.0})
    for i in (FALLBACK, SNF_CHAIN, OWNER_EXCLUDED, EXCLUDED):
        for year in YEARS:
            state = "NV" if i == FALLBACK else "CA"
            rows.append(
                {"npi": npi(i), "year": year, "claims": 150.0, "beneficiaries": 30.0,
                 "payments": 9000.0 * (1.6 ** (year - 2019)), "state": state}
            )  # fmt: skip
    rows.append({"npi": npi(SINGLE_YEAR), "year": 2023, "claims": 300.0, "payments": 50000.0})
    for year in (2019, 2020):
        rows.append({"npi": npi(NO_RECENT), "year": year, "claims": 120.0, "payments": 3000.0})
    return rows


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunPaths, dict[str, dict[str, Any]]]:
    base = tmp_path_factory.mktemp("explain")
    providers = [{"npi": npi(i)} for i in range(60)] + [
        {"npi": npi(FALLBACK), "state": "NV"},
        {"npi": npi(SINGLE_YEAR)},
        {"npi": npi(NO_RECENT)},
        {"npi": npi(SNF_CHAIN), "display_name": "Sunny Acres"},
        {"npi": npi(CHAIN_EXCLUDED_MEMBER), "display_name": "SUNNY HOLDINGS PHARMACY"},
        {"npi": npi(CHAIN_MEMBER), "display_name": "Sunny Holdings Clinic"},
        {"npi": npi(OWNER_EXCLUDED), "display_name": "PINE VIEW"},
        {"npi": npi(EXCLUDED)},
    ]
    data = write_dataset(
        base / "data",
        providers=providers,
        payments=_payments(),
        exclusions=[
            {"exclusion_id": "L-member", "npi": npi(CHAIN_EXCLUDED_MEMBER)},
            {"exclusion_id": "L-active", "npi": npi(EXCLUDED)},
            {"exclusion_id": "L-old", "npi": npi(EXCLUDED), "reinstated": True},
        ],
        entities=[
            {"entity_id": "S1", "name": "SUNNY ACRES NURSING LLC"},
            {"entity_id": "O1", "name": "SUNNY HOLDINGS", "entity_type": "OWNER"},
            {"entity_id": "O0", "name": "SUNNY PARENT CO", "entity_type": "OWNER"},
            {"entity_id": "S2", "name": "SUNNY SIDE [/bold] WEST LLC"},  # markup is text
            {"entity_id": "S3", "name": "PINE VIEW CARE LLC"},
            {"entity_id": "O2", "name": "PINE GROUP", "entity_type": "OWNER"},
        ],
        ownership=[
            {"owner_id": "O1", "owned_id": "S1"},
            {"owner_id": "O0", "owned_id": "O1"},
            {"owner_id": "O1", "owned_id": "S2"},
            {"owner_id": "O2", "owned_id": "S3"},
        ],
        entity_exclusions=[{"entity_id": "O2"}],
    )
    scores = score(data, base / "run", batch_size=25)  # the targets sit in several batches
    return RunPaths(base / "run"), by_npi(scores)


def _logistic(z: float) -> float:
    return round(100.0 / (1.0 + math.exp(-z / CFG.logistic_scale)), 2)


def _robust_z(x: float, median: float, mad: float) -> float:
    z = (x - median) / (CFG.mad_scale * max(mad, CFG.mad_floor))
    return min(CFG.z_cap, max(-CFG.z_cap, z))


def assert_recombines(e: dict[str, Any], row: dict[str, Any]) -> None:
    """SPEC §4 from the shown numbers alone, compared with the published row."""
    assert all(check["equal"] for check in e["checks"].values()), e["checks"]
    years = e["years"]
    assert [y["year"] for y in years] == row["data_window_years"]
    weighted = weights = 0.0
    for y in years:
        group = y["peer_group"]
        for m, x in y["x"].items():
            expected = 0.0
            if group["used"] != "none":
                chosen = group[group["used"]]
                expected = _robust_z(x, chosen[m]["median"], chosen[m]["mad"])
            assert y["z"][m] == pytest.approx(expected, abs=1e-12), (y["year"], m)
        year_score = sum(max(z, 0.0) for z in y["z"].values()) / 3
        assert y["year_score"] == pytest.approx(year_score, abs=1e-12)
        n = group[group["used"]]["n"] if group["used"] != "none" else 0
        if y["eligible"] and n > 1:
            ranks = y["m1_rank_counts"]
            pct = (ranks["below"] + (ranks["equal"] + 1) / 2 - 1) / (n - 1)
        else:
            pct = 0.5
        assert y["m1_percentile"] == round(pct * 100, 2)
        weighted += y["weight"] * y["year_score"]
        weights += y["weight"]
    assert _logistic(weighted / weights) == row["billing_outlier_score"]
    mean_pct = sum(y["m1_percentile"] for y in years) / len(years)
    assert round(mean_pct, 2) == row["billing_outlier_percentile"]
    growth = [(y["weight"], y["growth"]) for y in years if y["growth"] is not None]
    for _, g in growth:
        z = _robust_z(g["g"], g["group_median"], g["group_mad"])
        assert g["z"] == pytest.approx(z, abs=1e-12) and g["z_positive"] == max(g["z"], 0.0)
    if growth:
        z = sum(w * g["z_positive"] for w, g in growth) / sum(w for w, _ in growth)
        assert round(z, 4) == row["payment_trajectory_zscore"]
        assert _logistic(z) == row["payment_trajectory_score"]
    else:
        assert row["payment_trajectory_score"] == row["payment_trajectory_zscore"] == 0.0
    c = e["concentration"]
    if c["programs"]:
        assert c["top_share"] == pytest.approx(max(p["share"] for p in c["programs"]), abs=1e-12)
    share = c["top_share"]
    s_p = 0.0 if share <= 0.5 else min(100.0, 200.0 * (share - 0.5))
    assert round(s_p, 2) == row["program_concentration_score"]
    o = e["ownership"]
    assert o["chain_excluded_count"] == len(o["excluded_chain_providers"])
    assert o["chain_excluded_count"] == row["chain_excluded_count"]
    s_o = min(100.0, 100.0 * o["chain_excluded_count"] / max(o["chain_provider_count"], 1))
    assert round(s_o, 2) == row["ownership_chain_risk"]
    x = e["exclusion"]
    active = any(not r["reinstated"] for r in x["rows"])
    s_e = (
        100.0
        if active
        else 80.0
        if o["owner_excluded"]
        else 50.0
        if o["chain_excluded_count"]
        else 0.0
    )
    assert s_e == row["exclusion_proximity_score"]
    comp = e["composite"]
    r_raw = sum(t["term"] for t in comp["terms"].values())
    assert round(r_raw, 4) == row["r_raw"]
    risk = 100.0 * comp["smaller"] / (comp["population"] - 1)
    assert round(risk, 2) == row["risk_score"] and comp["risk_label"] == row["risk_label"]
    assert comp["flags"] == row["flags"]


@pytest.mark.parametrize(
    "index", [0, 7, FALLBACK, SINGLE_YEAR, NO_RECENT, SNF_CHAIN, OWNER_EXCLUDED, EXCLUDED]
)
def test_explain_recombines_into_the_published_row(run, index: int) -> None:
    paths, rows = run
    e = explain(paths, npi(index))
    assert_recombines(e, rows[npi(index)])


def test_explain_branches(run) -> None:
    paths, rows = run
    assert json.loads(paths.manifest.read_text())["member_counts"]  # the batches' own path
    primary = explain(paths, npi(0))
    assert {y["peer_group"]["used"] for y in primary["years"]} == {"primary"}
    # 2019: the 60, the three CA targets with five years, and the one billing 2019-2020 only
    assert primary["years"][0]["peer_group"]["primary"]["n"] == 60 + 3 + 1
    fallback = explain(paths, npi(FALLBACK))
    assert {y["peer_group"]["used"] for y in fallback["years"]} == {"fallback"}
    assert fallback["years"][0]["peer_group"]["primary"]["n"] == 1  # NV: itself only
    assert fallback["years"][0]["peer_group"]["fallback"]["key"] == {
        "peer_taxonomy": TAXONOMY, "year": 2019
    }  # fmt: skip
    single = explain(paths, npi(SINGLE_YEAR))
    assert len(single["years"]) == 1 and single["years"][0]["growth"] is None
    assert single["trajectory"]["years_with_growth"] == 0 and single["trajectory"]["score"] == 0
    no_recent = explain(paths, npi(NO_RECENT))
    assert no_recent["concentration"]["programs"] == []
    assert no_recent["concentration"]["top_program"] is None
    assert no_recent["concentration"]["score"] == 0
    chain = explain(paths, npi(SNF_CHAIN))["ownership"]
    assert chain["snf"] == {"entity_id": "S1", "name": "SUNNY ACRES NURSING LLC"}
    assert [(e["entity_id"], e["up_hops"]) for e in chain["chain"]] == [
        ("S1", 0), ("O1", 1), ("O0", 2)
    ]  # fmt: skip
    assert [(e["entity_id"], e["down_hops"]) for e in chain["group"]] == [("S2", 1)]
    assert chain["chain_provider_count"] == 2 and chain["chain_excluded_count"] == 1
    member = chain["excluded_chain_providers"][0]
    assert member["npi"] == npi(CHAIN_EXCLUDED_MEMBER)
    assert [r["exclusion_id"] for r in member["leie"]] == ["L-member"]
    assert rows[npi(SNF_CHAIN)]["exclusion_proximity_score"] == 50
    owner = explain(paths, npi(OWNER_EXCLUDED))
    assert owner["ownership"]["owner_excluded"] and owner["ownership"]["excluded_entities"] == [
        "O2"
    ]
    assert owner["exclusion"]["score"] == 80
    excluded = explain(paths, npi(EXCLUDED))["exclusion"]
    assert sorted(r["exclusion_id"] for r in excluded["rows"]) == ["L-active", "L-old"]
    assert excluded["actively_excluded"] and excluded["score"] == 100


def test_explain_cli_json_and_terminal_view(run) -> None:
    paths, rows = run
    result = claidex_cli("explain", npi(SNF_CHAIN), "--run", str(paths.root), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["composite"]["r_raw"] == rows[npi(SNF_CHAIN)]["r_raw"]
    text = claidex_cli("explain", npi(SNF_CHAIN), "--run", str(paths.root))
    assert text.returncode == 0, text.stderr
    assert "SUNNY ACRES NURSING LLC" in text.stdout and "L-member" in text.stdout
    assert "recomputes the published row exactly" in text.stdout
    assert "SUNNY SIDE [/bold] WEST LLC" in text.stdout


@pytest.mark.parametrize("given", [npi(999), "12345", "1234567890"])
def test_unknown_or_malformed_npi_is_a_one_line_error(run, given: str) -> None:
    paths, _ = run
    result = claidex_cli("explain", given, "--run", str(paths.root))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert given in result.stderr


def test_explain_finds_the_latest_run_without_run(run, tmp_path: Path) -> None:
    paths, rows = run
    result = claidex_cli(
        "explain", npi(EXCLUDED), "--json", env={"CLAIDEX_RUN_ROOT": str(paths.root.parent)}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["composite"]["risk_score"] == rows[npi(EXCLUDED)]["risk_score"]


def test_explain_of_an_incremental_run_uses_its_reference(run, tmp_path: Path) -> None:
    from scoring.stages.incremental import prepare_incremental
    from scoring.stages.merge import merge_and_calibrate
    from scoring.stages.score_batch import score_batch

    paths, rows = run
    data = Path(json.loads(paths.manifest.read_text())["source"])
    inc = RunPaths(paths.root.parent / "inc")
    prepare_incremental(inc, paths, data, [npi(SNF_CHAIN), npi(EXCLUDED)])
    score_batch(inc, 0)
    merge_and_calibrate(inc, reference=paths)
    for index in (SNF_CHAIN, EXCLUDED):
        e = explain(inc, npi(index))
        assert_recombines(e, rows[npi(index)])  # unchanged inputs: the full run's row
        assert e["composite"]["population"] == len(rows)
    assert explain(inc, npi(EXCLUDED))["exclusion"]["score"] == 100
    assert pl.read_parquet(inc.scores).height == 2


def test_explain_of_a_run_made_before_the_chain_tables(run, tmp_path: Path) -> None:
    """A run from before issue 26 keeps one row per (SNF, group member) in
    ownership_entities and its excluded members per SNF: explain reads those, and says
    what it says of the same run in the new tables."""
    import shutil

    from scoring.stages.combine import explain_chain

    paths, _rows = run
    old = RunPaths(tmp_path / "old-run")
    shutil.copytree(paths.root, old.root)
    chains = pl.read_parquet(old.stat("ownership_chains"))
    closures = pl.read_parquet(old.stat("ownership_closures"))
    excluded = pl.read_parquet(old.stat("chain_excluded"))
    parts = [explain_chain(s, chains, closures, excluded) for s in chains["snf"].unique().sort()]
    pl.concat([e for e, _ in parts]).write_parquet(old.stat("ownership_entities"))
    pl.concat([m for _, m in parts]).write_parquet(old.stat("chain_excluded"))
    for name in ("ownership_chains", "ownership_closures"):
        old.stat(name).unlink()
    for index in (SNF_CHAIN, OWNER_EXCLUDED, EXCLUDED):  # scored NPIs, with and without a chain
        assert explain(old, npi(index))["ownership"] == explain(paths, npi(index))["ownership"]
