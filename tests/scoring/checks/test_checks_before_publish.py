"""Issue 24: a run its checks block never reaches the table; `publish --accept` puts it there."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import psycopg
import pytest

from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths, read_json
from tests.builders import claidex_cli, table_bytes


def _variant(source: Path, target: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """The dataset with `change` applied to its payments and its providers."""
    shutil.copytree(source, target)
    for name in ("payments_combined", "providers"):
        frame = pl.read_parquet(source / f"{name}.parquet")
        change(frame).write_parquet(target / f"{name}.parquet")
    return target


def _lost_medicaid(p: pl.DataFrame) -> pl.DataFrame:
    return p.filter(pl.col("program") != "Medicaid") if "program" in p.columns else p


def _lost_half_a_year(p: pl.DataFrame) -> pl.DataFrame:
    if "year" not in p.columns:
        return p
    return p.filter((pl.col("year") != 2021) | (pl.int_range(pl.len()) % 2 == 0))


def _recoded_taxonomy(p: pl.DataFrame) -> pl.DataFrame:
    """Half the providers' taxonomy codes recoded (a new code per old one), in both tables:
    every peer group split in two."""
    column = "taxonomy" if "taxonomy" in p.columns else "taxonomy_1"
    half = pl.col("npi").str.slice(9, 1).cast(pl.Int32, strict=False) % 2 == 0
    recoded = pl.lit("X") + pl.col(column).str.slice(1)
    return p.with_columns(pl.when(half).then(recoded).otherwise(pl.col(column)).alias(column))


def _quarantine_jump(p: pl.DataFrame) -> pl.DataFrame:
    if "payments" not in p.columns:
        return p
    broken = pl.int_range(pl.len()) % 20 == 0  # 5 % of the rows
    return p.with_columns(
        pl.when(broken).then(-1.0).otherwise(pl.col("payments")).alias("payments")
    )


SCENARIOS = {
    "lost-medicaid": (_lost_medicaid, "program_rows[Medicaid]"),
    "lost-half-a-year": (_lost_half_a_year, "year_rows[2021]"),
    "recoded-taxonomy": (_recoded_taxonomy, "peer_taxonomy_changed"),
    "quarantine-jump": (_quarantine_jump, "quarantine_share"),
}


@pytest.fixture(scope="module")
def published_dir(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run on the table, computed once (published into each test's own database)."""
    root = tmp_path_factory.mktemp("checks-ref")
    done = claidex_cli(
        "run", "--data", str(sample_dataset), "--run-dir", str(root / "ref"), "--no-publish",
        "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root / "ref"


@pytest.fixture
def table(database_url: str, published_dir: Path) -> tuple[str, dict[str, str]]:
    """A fresh database whose table holds the reference run (its first publish: a note)."""
    env = {"DATABASE_URL": database_url, "CLAIDEX_RUN_ROOT": str(published_dir.parent)}
    first = claidex_cli("publish", str(published_dir), env=env)
    assert first.returncode == 0, first.stderr
    checks = read_json(published_dir / "checks.json")
    assert checks["verdict"] == "pass" and checks["note"] == "first publish"
    return database_url, env


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_bad_feed_is_blocked_leaves_the_table_alone_and_accept_publishes_it(
    scenario: str, sample_dataset: Path, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    url, env = table
    change, failing = SCENARIOS[scenario]
    data = _variant(sample_dataset, tmp_path / "data", change)
    before = table_bytes(url)
    run_dir = tmp_path / "runs" / "bad"
    held = claidex_cli("run", "--data", str(data), "--run-dir", str(run_dir), "--quiet", env=env)
    assert held.returncode == 3, held.stderr
    lines = held.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run bad blocked before publish")
    assert failing in lines[0] and "claidex publish bad --accept" in lines[0]
    assert table_bytes(url) == before  # nothing written
    state = RunLedger(RunPaths(run_dir)).read()
    assert state["status"] == "blocked" and failing in state["checks"]["blocking"]
    checks = read_json(run_dir / "checks.json")
    named = {c["name"]: c for c in checks["checks"]}
    assert named[failing]["verdict"] == "block" and named[failing]["reason"]
    assert named[failing]["value"] > named[failing]["threshold"]
    report = read_json(run_dir / "report.json")
    assert report["checks"]["verdict"] == "block" and report["header"]["status"] == "blocked"
    status = claidex_cli("status", str(run_dir), env=env)
    assert status.returncode == 3 and failing in status.stdout
    again = claidex_cli("resume", str(run_dir), "--quiet", env=env)  # not re-run, still held
    assert again.returncode == 3 and RunLedger(RunPaths(run_dir)).read()["status"] == "blocked"
    assert table_bytes(url) == before

    accepted = claidex_cli(
        "publish", str(run_dir), "--accept", "upstream truncated on purpose",
        env={**env, "CLAIDEX_ACCEPTED_BY": "on-call"},
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr
    assert table_bytes(url) != before
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, accepted_reason, accepted_by FROM claidex_runs WHERE run_id = 'bad'"
        ).fetchone()
    assert row == ("published", "upstream truncated on purpose", "on-call")
    state = RunLedger(RunPaths(run_dir)).read()
    assert state["status"] == "published"
    assert state["accepted"]["reason"] == "upstream truncated on purpose"
    assert state["accepted"]["by"] == "on-call"


def test_a_rerun_of_the_same_data_publishes_with_every_check_passing(
    sample_dataset: Path, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _url, env = table
    run_dir = tmp_path / "runs" / "again"
    done = claidex_cli(
        "run", "--data", str(sample_dataset), "--run-dir", str(run_dir), "--quiet", env=env
    )
    assert done.returncode == 0, done.stderr
    checks = read_json(run_dir / "checks.json")
    assert checks["verdict"] == "pass" and checks["reference_run"] == "ref"
    assert {c["verdict"] for c in checks["checks"]} == {"pass"}
    names = {c["name"] for c in checks["checks"]}
    assert {
        "payment_rows",
        "quarantine_share",
        "label_churn",
        "movers",
        "providers_scored",
    } <= names
    assert "checks before publish: pass against ref" in done.stdout
    assert RunLedger(RunPaths(run_dir)).read()["status"] == "published"


def test_an_incremental_run_checks_its_quarantine_and_movers(
    sample_dataset: Path, published_dir: Path, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Rescored NPIs: their rows' quarantined share blocks; movers among them only warn."""
    from scoring.inputs.npi import checked_npis
    from scoring.stages.finish import publish_checked
    from scoring.stages.incremental import prepare_incremental
    from scoring.stages.merge import merge_and_calibrate
    from scoring.stages.score_batch import score_batch

    url, _env = table
    reference = RunPaths(published_dir)
    picked = pl.read_parquet(reference.scores).sample(n=40, seed=5)["npi"].sort().to_list()

    def incremental(data: Path, name: str) -> tuple[RunPaths, dict]:  # type: ignore[type-arg]
        paths = RunPaths(tmp_path / name)
        prepare_incremental(paths, reference, data, checked_npis(picked))
        score_batch(paths, 0)
        scores = merge_and_calibrate(paths, reference, draw=False)
        return paths, publish_checked(paths, url, scores=scores, reference=reference)

    same, outcome = incremental(sample_dataset, "same")
    assert outcome["status"] == "published"
    checks = read_json(same.root / "checks.json")
    assert [c["name"] for c in checks["checks"]] == ["quarantine_share", "movers"]
    assert checks["verdict"] == "pass" and checks["reference_run"] == "ref"

    def broken(p: pl.DataFrame) -> pl.DataFrame:  # a third of these NPIs' rows unusable
        if "payments" not in p.columns:
            return p
        bad = pl.col("npi").is_in(picked) & (pl.int_range(pl.len()) % 3 == 0)
        return p.with_columns(
            pl.when(bad).then(-1.0).otherwise(pl.col("payments")).alias("payments")
        )

    before = table_bytes(url)
    held, outcome = incremental(_variant(sample_dataset, tmp_path / "broken", broken), "held")
    assert outcome["status"] == "blocked" and "quarantine_share" in outcome["blocked"]
    assert RunLedger(held).read()["status"] == "blocked"
    assert table_bytes(url) == before


def test_accept_is_only_for_a_blocked_run_and_a_lost_reference_blocks(
    sample_dataset: Path, published_dir: Path, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _url, env = table
    run_dir = tmp_path / "runs" / "fine"
    done = claidex_cli(
        "run", "--data", str(sample_dataset), "--run-dir", str(run_dir), "--no-publish", "--quiet",
        env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    refused = claidex_cli("publish", str(run_dir), "--accept", "skip the checks", env=env)
    assert refused.returncode == 2 and "not blocked by its checks" in refused.stderr
    # the run on the table has no directory here any more: nothing to compare with, held
    moved = published_dir.parent / "elsewhere"
    published_dir.rename(moved)
    try:
        held = claidex_cli("publish", str(run_dir), env=env)
    finally:
        moved.rename(published_dir)
    assert held.returncode == 3 and "reference (the run on the table (ref)" in held.stderr
