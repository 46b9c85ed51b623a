"""Postgres as source and destination, against a private real PostgreSQL (issue: Postgres)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal

from claidex.dev.sample import generate
from claidex.local_engine import run_local, run_local_from_postgres
from scoring.config import Settings
from scoring.db.connection import DatabaseError, connect
from scoring.db.export import export_dataset
from scoring.db.load import load_dataset
from scoring.db.publish import publish_scores
from scoring.inputs.contract import CANONICAL, SCHEMAS
from scoring.runs.ledger import RunLedger
from scoring.runs.retry_policy import is_transient
from scoring.runs.store import RunPaths
from scoring.stages.publish import publish
from tests.builders import claidex_cli
from tests.devservices import free_port

CLI = [sys.executable, "-m", "claidex.cli"]


@pytest.fixture(autouse=True)
def _publish_mechanics_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests publish unrelated datasets one over the other to test the publish itself
    (atomicity, order, outages): the checks before publish, which would hold them, are
    tests/scoring/checks' subject, so runs here are made with CLAIDEX_CHECKS=0."""
    monkeypatch.setenv("CLAIDEX_CHECKS", "0")


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return claidex_cli(*args, env={"DATABASE_URL": url})


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def _published(url: str) -> pl.DataFrame:
    """provider_risk_scores as Python values (NUMERIC as float, JSONB parsed), sorted by npi."""
    with connect(url) as conn:
        cur = conn.execute("SELECT * FROM provider_risk_scores ORDER BY npi")
        names = [d.name for d in cur.description]
        rows = [
            {n: float(v) if isinstance(v, Decimal) else v for n, v in zip(names, row, strict=True)}
            for row in cur.fetchall()
        ]
    return pl.DataFrame(rows, infer_schema_length=None)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pg-data")
    generate(root / "a", providers=2000, seed=21, layout="production")
    generate(root / "b", providers=1500, seed=22, layout="production")
    return root / "a", root / "b"


def test_round_trip_load_export_and_scoring_from_postgres(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    data, _ = datasets
    load = _cli("db", "load", str(data), url=database_url)
    assert load.returncode == 0, load.stderr
    assert json.loads(load.stdout)["providers"] == 2000
    exported = tmp_path / "exported"
    assert _cli("export", "--to", str(exported), url=database_url).returncode == 0
    for name in SCHEMAS:
        original = pl.read_parquet(data / f"{name}.parquet")
        again = pl.read_parquet(exported / f"{name}.parquet")
        canonical = original.select(pl.col(c).cast(CANONICAL[k]) for c, k in SCHEMAS[name].items())
        assert again.schema == canonical.schema  # the dataset types, not text
        assert_frame_equal(_sorted(again), _sorted(canonical), check_column_order=False)

    from_files = run_local(data, Settings(), run_dir=tmp_path / "files", show_progress=False)
    from_db = run_local_from_postgres(
        database_url, Settings(), run_dir=tmp_path / "db", show_progress=False
    )
    assert from_db.scores.read_bytes() == from_files.scores.read_bytes()


def test_published_table_equals_scores_parquet(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    paths = run_local(
        datasets[0],
        Settings(),
        run_dir=tmp_path / "run",
        show_progress=False,
        database_url=database_url,
    )
    scores = pl.read_parquet(paths.scores)
    table = _published(database_url)
    assert table["npi"].to_list() == scores["npi"].to_list()
    for column in scores.columns:
        expected, actual = scores[column], table[column]
        if column == "components" or column in ("flags", "data_window_years"):
            assert actual.to_list() == expected.to_list(), column
        elif expected.dtype.is_float():  # NUMERIC keeps the value; nulls must line up too
            assert actual.cast(pl.Float64).eq_missing(expected).all(), column
        else:
            assert actual.cast(expected.dtype).to_list() == expected.to_list(), column
    assert set(table["run_id"]) == {paths.run_id}
    assert table["updated_at"].n_unique() == 1
    ledger = RunLedger(paths).read()
    assert ledger["status"] == "published" and ledger["rows_published"] == scores.height
    with connect(database_url) as conn:
        status = conn.execute("SELECT status, rows_published FROM claidex_runs").fetchall()
    assert status == [("published", scores.height)]


def test_full_run_replaces_the_table_and_incremental_touches_only_its_npis(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    a = run_local(
        datasets[0],
        Settings(),
        run_dir=tmp_path / "a",
        show_progress=False,
        database_url=database_url,
    )
    b = run_local(
        datasets[1],
        Settings(),
        run_dir=tmp_path / "b",
        show_progress=False,
        database_url=database_url,
    )
    b_scores = pl.read_parquet(b.scores)
    assert _published(database_url)["npi"].to_list() == b_scores["npi"].to_list()
    assert RunLedger(b).read()["rows_removed"] == pl.read_parquet(a.scores).height

    subset = pl.read_parquet(a.scores).head(5).with_columns(pl.lit(99.0).alias("risk_score"))
    with connect(database_url) as conn:
        result = publish_scores(conn, subset, run_id="incr-1", kind="incremental", fingerprint="x")
    assert (result.rows_published, result.rows_removed) == (5, 0)
    table = _published(database_url)
    assert table.height == b_scores.height + 5
    assert table.filter(pl.col("run_id") == "incr-1")["risk_score"].to_list() == [99.0] * 5


def test_readers_see_the_old_or_the_new_run_never_a_mix(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    a = run_local(
        datasets[0],
        Settings(),
        run_dir=tmp_path / "a",
        show_progress=False,
        database_url=database_url,
    )
    b = run_local(datasets[1], Settings(), run_dir=tmp_path / "b", show_progress=False)
    states = {
        (pl.read_parquet(a.scores).height, a.run_id),
        (pl.read_parquet(b.scores).height, b.run_id),
    }
    seen: list[tuple[int, int, str]] = []
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(database_url, autocommit=True) as reader:
            while not done.is_set() or len(seen) < 3:
                seen.append(
                    reader.execute(
                        "SELECT count(*), count(DISTINCT run_id), min(run_id) "
                        "FROM provider_risk_scores"
                    ).fetchone()
                )

    reader = threading.Thread(target=poll)
    reader.start()
    time.sleep(0.2)
    publish(b, database_url)
    time.sleep(0.2)
    done.set()
    reader.join(timeout=30)
    assert len(seen) > 10
    assert all(distinct == 1 and (count, run) in states for count, distinct, run in seen), seen
    assert {run for _, _, run in seen} == {a.run_id, b.run_id}


def test_publish_killed_half_way_keeps_the_old_run_and_can_be_completed(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    a = run_local(
        datasets[0],
        Settings(),
        run_dir=tmp_path / "a",
        show_progress=False,
        database_url=database_url,
    )
    before = _published(database_url)
    b = run_local(datasets[1], Settings(), run_dir=tmp_path / "b", show_progress=False)
    # Hold a lock the publish needs after its COPY, DELETE and INSERT: it stops half-way.
    blocker = psycopg.connect(database_url)
    # EXCLUSIVE: the publish may still read claidex_runs (its stale check), not write it.
    blocker.execute("LOCK TABLE claidex_runs IN EXCLUSIVE MODE")
    failure: list[BaseException] = []

    def publish_b() -> None:
        try:
            publish(b, database_url, outage_window=0)  # one attempt: it is killed
        except Exception as exc:  # the test inspects it
            failure.append(exc)

    worker = threading.Thread(target=publish_b)
    worker.start()
    with psycopg.connect(database_url, autocommit=True) as admin:
        for _ in range(300):
            waiting = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO claidex_runs%'"
            ).fetchall()
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "publish never reached its last statement"
        admin.execute("SELECT pg_terminate_backend(%s)", (waiting[0][0],))
    blocker.rollback()
    blocker.close()
    worker.join(timeout=60)
    assert failure and isinstance(failure[0], DatabaseError)
    assert "scores stay in" in str(failure[0])
    assert_frame_equal(_published(database_url), before)  # the old run, untouched
    ledger = RunLedger(b).read()
    assert (ledger["status"], ledger["failed_step"]) == ("failed", "publish")
    assert b.scores.exists()

    completed = _cli("publish", str(b.root), url=database_url)
    assert completed.returncode == 0, completed.stderr
    assert _published(database_url)["run_id"].unique().to_list() == [b.run_id]
    assert RunLedger(b).read()["status"] == "published"
    assert RunLedger(a).read()["status"] == "published"


@pytest.mark.parametrize("problem", ["down", "wrong password"])
def test_unreachable_database_is_one_clear_line_and_scores_stay(
    sample_dataset: Path, postgres_server, tmp_path: Path, problem: str
) -> None:
    if problem == "down":
        url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{free_port()}/postgres"
    else:
        url = postgres_server.url.replace(postgres_server.password, "s3cret-pw")
    run = _cli(
        "run", "--data", str(sample_dataset), "--run-dir", str(tmp_path / "r"), "--quiet", url=url
    )
    assert run.returncode == 2
    err = run.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(
        "error: publish of run r failed: cannot connect to Postgres at 127.0.0.1:"
    )
    assert "/postgres as postgres" in err and "claidex publish r" in err
    paths = RunPaths(tmp_path / "r")
    assert paths.scores.exists()
    for text in (
        err,
        paths.ledger.read_text(),
        paths.report.read_text(),
        paths.manifest.read_text(),
    ):
        assert "s3cret-pw" not in text
    assert RunLedger(paths).read()["failed_step"] == "publish"
    with pytest.raises(DatabaseError) as raised:  # with no outage window, Celery retries it
        publish(paths, url, outage_window=0)
    # A server that is down may come back; one that refuses the password will not.
    assert is_transient(raised.value) == (problem == "down")


def test_no_publish_keeps_results_in_the_run_directory(
    sample_dataset: Path, database_url: str, tmp_path: Path
) -> None:
    run = _cli(
        "run",
        "--data",
        str(sample_dataset),
        "--run-dir",
        str(tmp_path / "r"),
        "--quiet",
        "--no-publish",
        url=database_url,
    )
    assert run.returncode == 0, run.stderr
    assert "status: merged" in run.stdout
    with connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone() == (0,)


def test_load_and_export_are_copy_not_row_inserts(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    """The counts come back from COPY; a second load replaces rather than appends."""
    with connect(database_url) as conn:
        first = load_dataset(conn, datasets[1])
        second = load_dataset(conn, datasets[1], replace=True)
        assert first == second
        exported = export_dataset(conn, tmp_path / "x", with_graph=True)
    payment_rows = pl.scan_parquet(datasets[1] / "payments_combined.parquet").select(pl.len())
    assert exported["payments_combined"] == payment_rows.collect().item()
    assert (
        sum(v for k, v in first.items() if k.startswith(("payments", "medicare")))
        == (exported["payments_combined"])
    )


def test_db_init_is_idempotent_and_creates_the_indexes(database_url: str) -> None:
    for _ in range(2):
        result = _cli("db", "init", url=database_url)
        assert result.returncode == 0, result.stderr
        assert "schema ready at 127.0.0.1:" in result.stdout
    with connect(database_url) as conn:
        indexes = {
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'provider_risk_scores'"
            ).fetchall()
        }
    assert any("(risk_score DESC)" in i for i in indexes)
    assert any("(risk_label)" in i for i in indexes)
    assert any("(updated_at DESC)" in i for i in indexes)
    assert any("(npi)" in i and "UNIQUE" in i for i in indexes)


def test_database_commands_without_a_database_say_how_to_configure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    result = subprocess.run(
        [*CLI, "export", "--to", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: no database configured: set DATABASE_URL (or the PGHOST/PGDATABASE/... variables)"
    )


def test_non_ascii_flags_and_programs_publish_as_valid_json(
    sample_dataset: Path, database_url: str, tmp_path: Path
) -> None:
    paths = run_local(sample_dataset, Settings(), run_dir=tmp_path / "r", show_progress=False)
    scores = (
        pl.read_parquet(paths.scores)
        .head(3)
        .with_columns(
            pl.lit(['Highly concentrated in a single payer program (Médicaid ☃ "x\\y").']).alias(
                "flags"
            )
        )
    )
    with connect(database_url) as conn:
        publish_scores(conn, scores, run_id="unicode", kind="incremental", fingerprint="f")
    assert _published(database_url)["flags"].to_list() == scores["flags"].to_list()


def test_malformed_database_url_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://postgres:Sup3r$ecret x@127.0.0.1/claidex"
    result = _cli("export", "--to", str(tmp_path / "x"), url=url)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: DATABASE_URL is not a valid connection string (postgresql://user:pass@host/db)"
    )
    assert "Sup3r" not in result.stderr + result.stdout


def test_missing_schema_is_one_line(postgres_server, tmp_path: Path) -> None:
    name = f"empty_{os.getpid()}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
        result = _cli("export", "--to", str(tmp_path / "x"), url=url)
        assert result.returncode == 2
        err = result.stderr.strip()
        assert err.count("\n") == 0 and "Traceback" not in err
        assert 'relation "providers" does not exist' in err
        assert postgres_server.password not in err
    finally:
        with psycopg.connect(postgres_server.url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_concurrent_full_publishes_never_mix(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    runs = [
        run_local(data, Settings(), run_dir=tmp_path / f"r{i}", show_progress=False)
        for i, data in enumerate(datasets)
    ]
    errors: list[BaseException] = []

    def go(paths: RunPaths) -> None:
        try:
            publish(paths, database_url)
        except Exception as exc:  # the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(paths,)) for paths in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # The newer run wins whichever gets the lock first: the older one is refused if it comes
    # second, or overwritten if it comes first.
    assert all(
        isinstance(e, DatabaseError) and "older than the published" in str(e) for e in errors
    )
    table = _published(database_url)
    assert table["run_id"].unique().to_list() == [runs[-1].run_id]
    winner = runs[-1]
    assert table["npi"].to_list() == pl.read_parquet(winner.scores)["npi"].to_list()


def test_an_older_full_run_never_rolls_the_table_back(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    """Issue 11.4: a stale full run is refused unless --force; incremental runs then use the
    run actually on the table (publish order), not the newest run directory."""
    from scoring.stages.incremental import latest_full_run

    old = run_local(datasets[0], Settings(), run_dir=tmp_path / "old", show_progress=False)
    new = run_local(datasets[1], Settings(), run_dir=tmp_path / "new", database_url=database_url,
                    show_progress=False)  # fmt: skip
    refused = _cli("publish", str(old.root), url=database_url)
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1
    assert f"run old (prepared {RunLedger(old).read()['created_at']}) is older than" in line
    assert "--force" in line
    assert _published(database_url)["run_id"].unique().to_list() == ["new"]
    assert RunLedger(old).read()["status"] == "failed"
    assert latest_full_run(tmp_path, published_only=True, database_url=database_url) == new

    forced = _cli("publish", str(old.root), "--force", url=database_url)
    assert forced.returncode == 0, forced.stderr
    assert _published(database_url)["run_id"].unique().to_list() == ["old"]
    # The newest directory is 'new', but the table holds 'old': that is the reference.
    assert latest_full_run(tmp_path, published_only=True, database_url=database_url) == old
    assert latest_full_run(tmp_path, published_only=False) == new


def test_an_incremental_run_publishes_only_over_its_own_reference(
    datasets: tuple[Path, Path], database_url: str, tmp_path: Path
) -> None:
    """Review of issue 11.4: incremental rows scored against full run A must not land on a
    table that holds full run B (they would mix two references)."""
    from scoring.inputs.npi import checked_npis
    from scoring.stages.incremental import prepare_incremental
    from scoring.stages.merge import merge_and_calibrate
    from scoring.stages.score_batch import score_batch

    a = run_local(datasets[0], Settings(), run_dir=tmp_path / "a", database_url=database_url,
                  show_progress=False)  # fmt: skip
    picked = pl.read_parquet(a.scores)["npi"].head(3).to_list()
    inc = RunPaths(tmp_path / "inc")
    prepare_incremental(inc, a, datasets[0], checked_npis(picked))
    score_batch(inc, 0)
    merge_and_calibrate(inc, a)
    run_local(datasets[1], Settings(), run_dir=tmp_path / "b", database_url=database_url,
              show_progress=False)  # fmt: skip
    with pytest.raises(DatabaseError, match="was scored against full run a, but the table holds"):
        publish(inc, database_url)
    assert _published(database_url)["run_id"].unique().to_list() == ["b"]
