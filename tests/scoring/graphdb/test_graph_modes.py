"""Neo4j graph modes against a real Bolt server (issue: Neo4j ownership graph).

`embedded`, `neo4j-snapshot` and `neo4j-live` must give byte-identical scores (SPEC §5);
failures must be visible, one line, never zeros and never a publish (SPEC §6.3).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import psycopg
import pytest

from claidex.dev.sample import generate
from claidex.local_engine import resume_local, run_local
from scoring.config import Settings
from scoring.graphdb.connection import (
    GraphError,
    Neo4jTarget,
    aura_database,
    clean_uri,
    neo4j_target,
)
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from scoring.stages.drive import prepare
from tests.bolt_server import BoltServer, free_port
from tests.builders import claidex_cli

ROOT = Path(__file__).resolve().parents[3]
MODES = ("embedded", "neo4j-snapshot", "neo4j-live")


@pytest.fixture(scope="module")
def graph_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("graph-data")
    generate(directory, providers=5000, seed=11)
    return directory


def graph_load(data: Path, env: dict[str, str] | None = None) -> dict[str, int]:
    result = claidex_cli("graph", "load", "--data", str(data), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_loader_is_idempotent_and_writes_the_validated_graph(
    graph_dataset: Path, graph_target: Neo4jTarget
) -> None:
    first = graph_load(graph_dataset)
    second = graph_load(graph_dataset)
    assert first == second
    entities = pl.read_parquet(graph_dataset / "entities.parquet")
    ownership = pl.read_parquet(graph_dataset / "ownership.parquet").unique()
    leie = pl.read_parquet(graph_dataset / "exclusions.parquet")
    active_links = leie.filter(pl.col("npi").is_not_null() & ~pl.col("reinstated").fill_null(False))
    flagged = pl.read_parquet(graph_dataset / "entity_exclusions.parquet")["entity_id"].n_unique()
    providers = pl.read_parquet(graph_dataset / "providers.parquet")["npi"].n_unique()
    assert first["CorporateEntity"] == entities.height
    assert first["OWNS"] == ownership.height
    assert first["Provider"] == providers
    assert first["Exclusion"] == leie["exclusion_id"].n_unique() + flagged
    assert first["EXCLUDED_BY"] == active_links.select("npi", "exclusion_id").n_unique() + flagged


def test_three_graph_modes_give_byte_identical_scores(
    graph_dataset: Path, graph_target: Neo4jTarget, tmp_path: Path
) -> None:
    graph_load(graph_dataset)
    scores = {}
    for mode in MODES:  # the Neo4j modes sharded (issue 13): the same bytes still
        cfg = Settings(batch_size=1000, graph_mode=mode, shards=1 if mode == "embedded" else 5)
        paths = run_local(graph_dataset, cfg, run_dir=tmp_path / mode, show_progress=False)
        scores[mode] = paths.scores.read_bytes()
    assert scores["neo4j-snapshot"] == scores["embedded"]
    assert scores["neo4j-live"] == scores["embedded"]
    embedded = pl.read_parquet(tmp_path / "embedded" / "scores.parquet")
    assert embedded.height >= 3000
    assert embedded.filter(pl.col("chain_excluded_count") > 0).height >= 5  # chains matter here
    assert embedded["owner_excluded"].fill_null(False).sum() >= 1


def test_snapshot_batches_never_talk_to_neo4j(
    graph_dataset: Path, graph_target: Neo4jTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph_load(graph_dataset)
    paths = RunPaths(tmp_path / "snapshot")
    prepare(paths, graph_dataset, Settings(batch_size=1000, graph_mode="neo4j-snapshot"))
    monkeypatch.setenv("NEO4J_URI", f"bolt://127.0.0.1:{free_port()}")  # nothing listens there
    resume_local(paths, 1, show_progress=False)
    embedded = run_local(
        graph_dataset, Settings(batch_size=1000), run_dir=tmp_path / "emb", show_progress=False
    )
    assert paths.scores.read_bytes() == embedded.scores.read_bytes()


@pytest.fixture
def own_server(tmp_path: Path, graph_dataset: Path, monkeypatch: pytest.MonkeyPatch):
    """A Bolt server this test may kill, holding the dataset's graph."""
    server = BoltServer(tmp_path / "bolt").start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    graph_load(graph_dataset)
    yield server
    server.stop()


def _kill_after_first_batch(paths: RunPaths, kill) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 300
        while not paths.chunk(0).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_live_batches_retry_then_the_run_fails_with_nothing_published(
    graph_dataset: Path, own_server: BoltServer, tmp_path: Path, database_url: str
) -> None:
    run_dir = tmp_path / "live"
    env = {
        "DATABASE_URL": database_url,
        "CLAIDEX_NEO4J_LIVE_ATTEMPTS": "3",
        "CLAIDEX_NEO4J_RETRY_BACKOFF": "0.5",
        "CLAIDEX_NEO4J_CONNECT_TIMEOUT": "2",
        "CLAIDEX_NEO4J_RETRY_SECONDS": "1",
    }
    paths = RunPaths(run_dir)
    watcher = _kill_after_first_batch(paths, own_server.kill)
    result = claidex_cli(
        "run", "--data", str(graph_dataset), "--graph", "neo4j-live", "--batch-size", "500",
        "--run-dir", str(run_dir), "--quiet", env=env,
    )  # fmt: skip
    watcher.join(timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "gave up after 3 attempts" in lines[0], result.stderr
    assert f"Neo4j 127.0.0.1:{own_server.bolt_port} (database claidex)" in lines[0]
    assert own_server.password not in result.stderr + result.stdout
    ledger = RunLedger(paths).summary()
    assert ledger["status"] == "failed" and ledger["failed_step"] == "score"
    assert ledger["batches_failed"] and 0 not in ledger["batches_failed"]
    assert not paths.scores.exists()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone() == (0,)


def test_live_batch_retry_survives_a_server_restart(
    graph_dataset: Path,
    own_server: BoltServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CLAIDEX_NEO4J_RETRY_BACKOFF", "1")
    monkeypatch.setenv("CLAIDEX_NEO4J_CONNECT_TIMEOUT", "2")
    # Our retry, not the driver's: a restart that lands mid-query is otherwise ridden out by
    # the driver's own transaction retries (30 s) and nothing here is tested. 1+2+4+8+16 s of
    # backoff: the JVM's restart outlasted 1+2+4 s on a loaded box (xdist, other suites).
    monkeypatch.setenv("CLAIDEX_NEO4J_RETRY_SECONDS", "1")
    monkeypatch.setenv("CLAIDEX_NEO4J_LIVE_ATTEMPTS", "6")
    paths = RunPaths(tmp_path / "live")

    def bounce() -> None:
        own_server.stop()
        time.sleep(1.0)
        own_server.start()

    watcher = _kill_after_first_batch(paths, bounce)
    cfg = Settings(batch_size=500, graph_mode="neo4j-live")
    try:
        run_local(graph_dataset, cfg, run_dir=paths.root, show_progress=False)
    finally:  # a failed run must not leave the bounce starting a server after teardown
        watcher.join(timeout=120)
    embedded = run_local(
        graph_dataset, Settings(batch_size=500), run_dir=tmp_path / "emb", show_progress=False
    )
    assert paths.scores.read_bytes() == embedded.scores.read_bytes()
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries and retries[0].startswith("neo4j-live attempt 1 of 6 failed")


@pytest.mark.parametrize("mode", ["neo4j-snapshot", "neo4j-live"])
def test_unreachable_server_fails_prepare_in_one_line(
    graph_dataset: Path, tmp_path: Path, mode: str
) -> None:
    port = free_port()
    env = {"NEO4J_URI": f"bolt://127.0.0.1:{port}", "NEO4J_PASSWORD": "s3cret-value",
           "NEO4J_DATABASE": "claidex", "CLAIDEX_NEO4J_CONNECT_TIMEOUT": "2",
           "CLAIDEX_NEO4J_OUTAGE_WINDOW": "3"}  # fmt: skip
    started = time.monotonic()
    result = claidex_cli(
        "run", "--data", str(graph_dataset), "--graph", mode, "--run-dir",
        str(tmp_path / "run"), "--quiet", env=env,
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"failed at Neo4j 127.0.0.1:{port} (database claidex)" in lines[0]
    assert "s3cret-value" not in result.stderr + result.stdout
    ledger = RunLedger(RunPaths(tmp_path / "run")).summary()
    assert ledger["status"] == "failed" and ledger["failed_step"] == "prepare"


@pytest.mark.parametrize("mode", ["neo4j-snapshot", "neo4j-live"])
def test_wrong_password_is_one_clear_line_without_the_password(
    graph_dataset: Path, arcadedb_server: BoltServer, tmp_path: Path, mode: str
) -> None:
    env = {**arcadedb_server.env(), "NEO4J_PASSWORD": "wrong-Pa55word"}
    result = claidex_cli(
        "run", "--data", str(graph_dataset), "--graph", mode, "--run-dir",
        str(tmp_path / "run"), "--quiet", env=env,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "authentication failed for user 'root'" in lines[0]
    assert arcadedb_server.host_port() in lines[0]
    assert "wrong-Pa55word" not in result.stderr + result.stdout
    assert arcadedb_server.password not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "raw",
    [
        "neo4j+s://1a2b3c4d.databases.neo4j.io",
        "NEO4J_URI=neo4j+s://1a2b3c4d.databases.neo4j.io",
        "export NEO4J_URI='neo4j+s://1a2b3c4d.databases.neo4j.io'",
        ' "NEO4J_URI=neo4j+s://1a2b3c4d.databases.neo4j.io" ',
    ],
)
def test_pasted_uri_and_aura_database_name(raw: str) -> None:
    assert clean_uri(raw) == "neo4j+s://1a2b3c4d.databases.neo4j.io"
    target = neo4j_target({"NEO4J_URI": raw, "NEO4J_USER": "neo4j", "NEO4J_PASSWORD": "pw"})
    assert target.uri == "neo4j+s://1a2b3c4d.databases.neo4j.io"
    assert target.database == "1a2b3c4d"
    assert "pw" not in repr(target)


def test_database_name_defaults_and_overrides() -> None:
    assert aura_database("1a2b3c4d.databases.neo4j.io") == "1a2b3c4d"
    assert aura_database("localhost") is None
    local = neo4j_target({"NEO4J_URI": "bolt://localhost:7687", "NEO4J_PASSWORD": "x"})
    assert local.database is None and local.user == "neo4j"
    chosen = neo4j_target(
        {"NEO4J_URI": "neo4j+s://abc.databases.neo4j.io", "NEO4J_DATABASE": "scores"}
    )
    assert chosen.database == "scores"


@pytest.mark.parametrize("env", [{}, {"NEO4J_URI": "http://host:7474"}, {"NEO4J_URI": "host"}])
def test_missing_or_malformed_uri_is_a_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(GraphError, match="NEO4J_URI"):
        neo4j_target(env)


def test_credentials_inside_the_uri_never_reach_a_message(
    graph_dataset: Path, tmp_path: Path
) -> None:
    target = neo4j_target({"NEO4J_URI": "bolt://scorer:Secr3t%21PW@127.0.0.1:1"})
    assert (target.uri, target.user) == ("bolt://127.0.0.1:1", "scorer")
    assert target.password == "Secr3t!PW"
    env = {"NEO4J_URI": f"bolt://scorer:Secr3tPW@127.0.0.1:{free_port()}",
           "CLAIDEX_NEO4J_CONNECT_TIMEOUT": "2", "CLAIDEX_NEO4J_OUTAGE_WINDOW": "3"}  # fmt: skip
    result = claidex_cli(
        "run", "--data", str(graph_dataset), "--graph", "neo4j-snapshot", "--run-dir",
        str(tmp_path / "run"), "--quiet", env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "graph snapshot failed at Neo4j 127.0.0.1:" in result.stderr
    assert "Secr3tPW" not in result.stderr + result.stdout
    ledger = (tmp_path / "run" / "ledger.json").read_text()
    assert "failed at Neo4j" in ledger and "Secr3tPW" not in ledger


def test_a_reload_removes_what_the_tables_no_longer_hold(
    graph_dataset: Path, graph_target: Neo4jTarget, tmp_path: Path
) -> None:
    import shutil

    first = graph_load(graph_dataset)
    changed = tmp_path / "changed"
    shutil.copytree(graph_dataset, changed)
    leie = pl.read_parquet(changed / "exclusions.parquet")
    active = pl.col("npi").is_not_null() & ~pl.col("reinstated").fill_null(False)
    reinstated_id = leie.filter(active)["exclusion_id"][0]
    leie.with_columns(
        pl.when(pl.col("exclusion_id") == reinstated_id)
        .then(True)
        .otherwise(pl.col("reinstated"))
        .alias("reinstated")
    ).write_parquet(changed / "exclusions.parquet")
    ownership = pl.read_parquet(changed / "ownership.parquet")
    ownership.slice(1).write_parquet(changed / "ownership.parquet")
    second = graph_load(changed)
    assert second["OWNS"] == first["OWNS"] - 1
    assert second["EXCLUDED_BY"] == first["EXCLUDED_BY"] - 1
    assert second["Provider"] == first["Provider"]
    embedded = run_local(changed, Settings(), run_dir=tmp_path / "e", show_progress=False)
    live = run_local(
        changed, Settings(graph_mode="neo4j-live"), run_dir=tmp_path / "l", show_progress=False
    )
    assert live.scores.read_bytes() == embedded.scores.read_bytes()


def test_graph_load_from_postgres_equals_the_dataset_load(
    graph_target: Neo4jTarget, database_url: str, tmp_path: Path
) -> None:
    """From the production tables: ownership_snf + corporate_entities (+ entity_exclusions)."""
    data = tmp_path / "data"
    generate(data, providers=3000, seed=12, layout="production")
    loaded = claidex_cli("db", "load", str(data), env={"DATABASE_URL": database_url})
    assert loaded.returncode == 0, loaded.stderr
    from_dataset = graph_load(data)
    result = claidex_cli(
        "graph", "load", "--source", "postgres", "--quiet", env={"DATABASE_URL": database_url}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == from_dataset
    # The neo4j-* modes need no Postgres graph table at all (issue 10).
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE ownership_snf, corporate_entities, entity_exclusions")
    embedded = run_local(data, Settings(), run_dir=tmp_path / "embedded", show_progress=False)
    for mode in ("neo4j-snapshot", "neo4j-live"):
        run = claidex_cli(
            "run", "--source", "postgres", "--graph", mode, "--no-publish", "--quiet",
            "--run-dir", str(tmp_path / mode), env={"DATABASE_URL": database_url},
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert (tmp_path / mode / "scores.parquet").read_bytes() == embedded.scores.read_bytes()


@pytest.mark.parametrize("mode", ["neo4j-snapshot", "neo4j-live"])
def test_an_empty_graph_fails_prepare_unless_allowed(
    graph_dataset: Path, graph_target: Neo4jTarget, tmp_path: Path, mode: str
) -> None:
    """A graph never loaded would score ownership 0 for everyone: one line, then nothing."""
    args = ["run", "--data", str(graph_dataset), "--graph", mode, "--quiet", "--run-dir"]
    refused = claidex_cli(*args, str(tmp_path / "refused"))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds no CorporateEntity" in lines[0], refused.stderr
    assert "claidex graph load" in lines[0] and "CLAIDEX_ALLOW_EMPTY_GRAPH=1" in lines[0]
    assert not (tmp_path / "refused" / "scores.parquet").exists()
    allowed = claidex_cli(*args, str(tmp_path / "allowed"), env={"CLAIDEX_ALLOW_EMPTY_GRAPH": "1"})
    assert allowed.returncode == 0, allowed.stderr
    scores = pl.read_parquet(tmp_path / "allowed" / "scores.parquet")
    assert scores["ownership_chain_risk"].max() == 0
