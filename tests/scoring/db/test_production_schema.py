"""The production Claidex database as it is (issue 10): `db init` changes nothing that exists,
`db load` writes the production layout, and every source read goes through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

from claidex.dev.sample import generate
from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.db.connection import DatabaseError, connect
from scoring.db.export import export_dataset
from scoring.db.load import SOURCE_TABLES
from scoring.runs.ledger import RunLedger
from tests.builders import claidex_cli

SOURCE_OBJECTS = (*SOURCE_TABLES, "payments_combined_v")


def _cli(url: str, *args: str):
    return claidex_cli(*args, env={"DATABASE_URL": url})


def _catalog(url: str) -> dict[str, Any]:
    """Every table's and view's definition: columns, constraints, indexes, view text."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, ordinal_position, data_type, numeric_precision, "
            "numeric_scale, character_maximum_length, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' ORDER BY 1, 2"
        ).fetchall()
        views = conn.execute(
            "SELECT viewname, pg_get_viewdef(viewname::regclass, true) FROM pg_views "
            "WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    catalog: dict[str, Any] = {}
    for table, *rest in columns:
        catalog.setdefault(table, {"columns": [], "constraints": [], "indexes": []})
        catalog[table]["columns"].append(tuple(rest))
    for table, *rest in constraints:
        catalog[table]["constraints"].append(tuple(rest))
    for table, *rest in indexes:
        catalog[table]["indexes"].append(tuple(rest))
    for view, definition in views:
        catalog[view]["view"] = definition
    return catalog


@pytest.fixture(scope="module")
def production_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("production-data")
    generate(directory, providers=2500, seed=31, layout="production")
    return directory


def test_db_init_twice_changes_no_existing_object(production_url: str) -> None:
    before = _catalog(production_url)
    for _ in range(2):
        result = _cli(production_url, "db", "init")
        assert result.returncode == 0, result.stderr
    after = _catalog(production_url)
    for name in [*SOURCE_OBJECTS, "api_high_risk_v"]:
        assert after[name] == before[name], name
    scores_before, scores_after = before["provider_risk_scores"], after["provider_risk_scores"]
    # The SPEC §3 columns keep their definition; only the additive ones are appended.
    kept = scores_after["columns"][: len(scores_before["columns"])]
    assert kept == scores_before["columns"]
    added = [c[0] for c in scores_after["columns"][len(scores_before["columns"]) :]]
    assert added == [
        "run_id", "top_program", "snf_entity_id", "chain_provider_count",
        "chain_excluded_count", "owner_excluded", "actively_excluded",
    ]  # fmt: skip
    # Its five indexes exist already under other names: none is created twice.
    assert scores_after["indexes"] == scores_before["indexes"]
    assert scores_after["constraints"] == scores_before["constraints"] == []
    assert {"claidex_runs"} == set(after) - set(before)
    # A third init is a no-op on every object, ours included.
    assert _cli(production_url, "db", "init").returncode == 0
    assert _catalog(production_url) == after


def test_db_init_creates_the_billing_index_the_api_sorts_on(production_url: str) -> None:
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_prs_billing")
    assert _cli(production_url, "db", "init").returncode == 0
    indexes = [i[1] for i in _catalog(production_url)["provider_risk_scores"]["indexes"]]
    billing = [i for i in indexes if "(billing_outlier_score DESC)" in i]
    assert len(billing) == 1 and len(indexes) == 5


def test_an_empty_database_gets_the_production_layout(
    production_url: str, database_url: str, production_dataset: Path
) -> None:
    """`db init` on an empty database lays down the objects the fixture transcribes from the
    issue; after `db load` of the same dataset both read back the same rows."""
    ours, theirs = _catalog(database_url), _catalog(production_url)
    for name in SOURCE_TABLES:
        assert ours[name]["columns"] == theirs[name]["columns"], name
        keys = [c[1] for c in ours[name]["constraints"]]
        assert keys == [c[1] for c in theirs[name]["constraints"]], name
    assert ours["payments_combined_v"]["columns"] == theirs["payments_combined_v"]["columns"]
    for url in (database_url, production_url):
        assert _cli(url, "db", "init").returncode == 0
        loaded = _cli(url, "db", "load", str(production_dataset))
        assert loaded.returncode == 0, loaded.stderr
    counts = json.loads(loaded.stdout)
    assert counts["ownership_snf"] > counts["corporate_entities"] > 0
    assert counts["payments_medicaid"] > 0 and counts["medicare_part_d"] > 0
    query = "SELECT * FROM {} ORDER BY 1, 2, 3"
    with psycopg.connect(database_url) as a, psycopg.connect(production_url) as b:
        for name in SOURCE_OBJECTS:
            rows = a.execute(query.format(name)).fetchall()  # type: ignore[arg-type]
            assert rows == b.execute(query.format(name)).fetchall(), name  # type: ignore[arg-type]
            assert rows, name


def test_postgres_run_on_the_production_schema_equals_the_dataset_run(
    production_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    assert _cli(production_url, "db", "init").returncode == 0
    assert _cli(production_url, "db", "load", str(production_dataset)).returncode == 0
    exported = export_dataset(
        psycopg.connect(production_url), tmp_path / "exported", with_graph=True
    )
    original = pl.read_parquet(production_dataset / "payments_combined.parquet")
    assert exported["payments_combined"] == original.height
    again = pl.read_parquet(tmp_path / "exported" / "payments_combined.parquet")
    columns = ["npi", "year", "program"]
    assert again.sort(columns).equals(original.sort(columns).cast(again.schema))  # exact floats

    from_files = run_local(
        production_dataset, Settings(), run_dir=tmp_path / "files", show_progress=False
    )
    result = _cli(
        production_url, "run", "--source", "postgres", "--run-dir", str(tmp_path / "db"), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "db" / "scores.parquet").read_bytes() == from_files.scores.read_bytes()
    # Published into the legacy table (no primary key): one row per NPI, twice over.
    again_run = _cli(
        production_url, "run", "--source", "postgres", "--run-dir", str(tmp_path / "db2"), "--quiet"
    )
    assert again_run.returncode == 0, again_run.stderr
    scores = pl.read_parquet(from_files.scores)
    with connect(production_url) as conn:
        published = conn.execute(
            "SELECT count(*), count(DISTINCT npi), min(run_id), max(risk_score), "
            "count(*) FILTER (WHERE risk_score >= 80) FROM provider_risk_scores"
        ).fetchone()
        high = conn.execute("SELECT count(*) FROM api_high_risk_v").fetchone()
    assert published is not None and high is not None
    assert published[:3] == (scores.height, scores.height, "db2")
    assert float(published[3]) == scores["risk_score"].max()
    assert high[0] == published[4] == scores.filter(pl.col("risk_score") >= 80).height


def test_numeric_amounts_are_read_exactly(production_url: str, tmp_path: Path) -> None:
    """Cents that have no exact binary float, and values near the NUMERIC(18,2) limits."""
    data = tmp_path / "data"
    generate(data, providers=600, seed=5, layout="production")
    payments = pl.read_parquet(data / "payments_combined.parquet")
    awkward = [0.07, 0.1, 0.29, 1234567.89, 99999999999.99, 1e-2, 0.0]
    payments = payments.with_columns(
        pl.when(pl.int_range(pl.len()) < len(awkward) * 40)
        .then(pl.lit(pl.Series(awkward * 40 + [0.0] * (payments.height - len(awkward) * 40))))
        .otherwise(pl.col("payments"))
        .alias("payments"),
        pl.when(pl.int_range(pl.len()) % 97 == 0)
        .then(pl.lit(123456789012345.0))
        .otherwise(pl.col("claims"))
        .alias("claims"),
    )
    payments.write_parquet(data / "payments_combined.parquet")
    assert _cli(production_url, "db", "init").returncode == 0
    loaded = _cli(production_url, "db", "load", str(data))
    assert loaded.returncode == 0, loaded.stderr
    export_dataset(psycopg.connect(production_url), tmp_path / "exported", with_graph=True)
    again = pl.read_parquet(tmp_path / "exported" / "payments_combined.parquet")
    key = ["npi", "year", "program"]
    assert again.sort(key).equals(payments.sort(key).cast(again.schema))
    files = run_local(data, Settings(), run_dir=tmp_path / "f", show_progress=False)
    db = run_local(tmp_path / "exported", Settings(), run_dir=tmp_path / "d", show_progress=False)
    assert db.scores.read_bytes() == files.scores.read_bytes()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("lines", "payments_combined.parquet: column 'npi, year, program'"),
        ("cents", "payments_combined.parquet: column 'payments'"),
        ("program", "payments_combined.parquet: column 'program'"),
        ("taxonomy", "payments_combined.parquet: column 'taxonomy'"),
        ("owner chain", "ownership.parquet: column 'owned_id'"),
        ("provider twice", "providers.parquet: column 'npi'"),
    ],
)
def test_db_load_refuses_what_the_production_tables_cannot_hold(
    database_url: str, tmp_path: Path, change: str, named: str
) -> None:
    data = tmp_path / "data"
    generate(data, providers=300, seed=3, layout="lines" if change == "lines" else "production")
    pay = data / "payments_combined.parquet"
    edits = {
        "cents": (pay, pl.col("payments").first().alias("payments") + 0.001),
        "program": (pay, pl.lit("Tricare").alias("program")),
        "taxonomy": (pay, pl.lit("999X").alias("taxonomy")),
    }
    if change in edits:
        path, expr = edits[change]
        frame = pl.read_parquet(path).sort(pl.col("program") != "Medicare", "npi", "year")
        head = frame.head(1).with_columns(expr)
        pl.concat([head, frame.slice(1)]).write_parquet(path)
    if change == "owner chain":
        edges = pl.read_parquet(data / "ownership.parquet")
        owners = pl.read_parquet(data / "entities.parquet").filter(pl.col("entity_type") != "SNF")
        deep = pl.DataFrame(
            {"owner_id": [owners["entity_id"][0]], "owned_id": owners["entity_id"][1]}
        )
        pl.concat([edges, deep]).write_parquet(data / "ownership.parquet")
    if change == "provider twice":
        providers = pl.read_parquet(data / "providers.parquet")
        pl.concat([providers, providers.head(1)]).write_parquet(data / "providers.parquet")
    with connect(database_url) as conn:
        conn.execute("INSERT INTO providers (npi) VALUES ('kept')")
        conn.commit()
    result = _cli(database_url, "db", "load", str(data))
    assert result.returncode == 2, result.stdout + result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and named in line, line
    assert "(e.g. " in line
    with connect(database_url) as conn:  # refused before anything was written
        assert conn.execute("SELECT npi FROM providers").fetchall() == [("kept",)]


def test_neo4j_modes_read_no_postgres_graph_table(
    database_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    assert _cli(database_url, "db", "load", str(production_dataset)).returncode == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE ownership_snf, corporate_entities, entity_exclusions")
        counts = export_dataset(conn, tmp_path / "core", with_graph=False)
    assert set(counts) == {"providers", "payments_combined", "exclusions"}
    with psycopg.connect(database_url) as conn, pytest.raises(DatabaseError, match="ownership_snf"):
        export_dataset(conn, tmp_path / "all", with_graph=True)


def test_entity_exclusions_table_is_optional(
    database_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    assert _cli(database_url, "db", "load", str(production_dataset)).returncode == 0
    with psycopg.connect(database_url, autocommit=True) as conn:
        with_table = export_dataset(conn, tmp_path / "with", with_graph=True)
        conn.execute("DROP TABLE entity_exclusions")
        without = export_dataset(conn, tmp_path / "without", with_graph=True)
    flagged = pl.read_parquet(production_dataset / "entity_exclusions.parquet").height
    assert with_table["entity_exclusions"] == flagged > 0
    assert without["entity_exclusions"] == 0
    assert {k: v for k, v in without.items() if k != "entity_exclusions"} == {
        k: v for k, v in with_table.items() if k != "entity_exclusions"
    }


def test_db_init_resolves_objects_through_the_search_path(production_url: str) -> None:
    """Production objects in another schema on the search_path are used, never shadowed."""
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA cms")
        for name in [*SOURCE_OBJECTS, "api_high_risk_v", "provider_risk_scores"]:
            kind = "VIEW" if name.endswith("_v") else "TABLE"
            conn.execute(f"ALTER {kind} {name} SET SCHEMA cms")  # type: ignore[arg-type]
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        conn.execute(f'ALTER DATABASE "{database[0]}" SET search_path = "$user", public, cms')  # type: ignore[arg-type]
    result = _cli(production_url, "db", "init")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("claidex_runs, claidex_runs.run_created_at, "
        "claidex_runs.accepted_reason, claidex_runs.accepted_by, claidex_runs.accepted_at, "
        "provider_risk_scores.run_id, "
        "provider_risk_scores.top_program, provider_risk_scores.snf_entity_id, "
        "provider_risk_scores.chain_provider_count, provider_risk_scores.chain_excluded_count, "
        "provider_risk_scores.owner_excluded, provider_risk_scores.actively_excluded")  # fmt: skip
    with psycopg.connect(production_url) as conn:
        public = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    assert public == [("claidex_runs",)]


def test_db_init_on_a_complete_database_needs_no_create_right_and_no_lock(
    production_url: str,
) -> None:
    assert _cli(production_url, "db", "init").returncode == 0
    role_url = production_url.replace("postgres:", "reader:", 1)
    with psycopg.connect(production_url, autocommit=True) as conn:
        password = production_url.split(":")[2].split("@")[0]
        conn.execute(f"CREATE ROLE reader LOGIN PASSWORD '{password}'")  # type: ignore[arg-type]
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
        # A long-running holder of the strongest lock on the scores table.
        blocker = psycopg.connect(production_url)
        blocker.execute("LOCK TABLE provider_risk_scores IN ACCESS EXCLUSIVE MODE")
        try:
            result = _cli(role_url, "db", "init")
        finally:
            blocker.close()
            conn.execute("DROP OWNED BY reader")
            conn.execute("DROP ROLE reader")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("nothing to create")


def test_db_init_behind_a_lock_gives_up_in_one_line(production_url: str) -> None:
    blocker = psycopg.connect(production_url)
    blocker.execute("SELECT count(*) FROM provider_risk_scores")  # holds ACCESS SHARE
    try:
        result = claidex_cli(
            "db", "init", env={"DATABASE_URL": production_url, "CLAIDEX_DB_LOCK_TIMEOUT": "0.5"}
        )
    finally:
        blocker.close()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: db init could not lock provider_risk_scores within 0.5 s: a long query or "
        "transaction holds it; run `claidex db init` again when it has finished"
    ]
    assert _cli(production_url, "db", "init").returncode == 0  # and then it goes through


def test_db_init_refuses_the_source_tables_of_an_earlier_version(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE payments_medicare CASCADE")
        conn.execute("CREATE TABLE payments_medicare (npi text, year int, payments float8)")
    result = _cli(database_url, "db", "init")
    assert result.returncode == 2
    assert "earlier Claidex version" in result.stderr and len(result.stderr.splitlines()) == 1


def test_db_init_builds_only_indexes_that_serve(production_url: str) -> None:
    """A partial, an invalid-order or another table's same-named index serves nothing."""
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_prs_risk_score, idx_prs_updated, idx_prs_label")
        conn.execute(
            "CREATE INDEX part ON provider_risk_scores (risk_score DESC) WHERE risk_score > 80"
        )
        conn.execute("CREATE INDEX asc_updated ON provider_risk_scores (updated_at)")  # serves DESC
        conn.execute("CREATE INDEX provider_risk_scores_risk_label_idx ON exclusions (npi)")
    assert _cli(production_url, "db", "init").returncode == 0
    indexes = [i[1] for i in _catalog(production_url)["provider_risk_scores"]["indexes"]]
    assert sum("(risk_score DESC)" in i and "WHERE" not in i for i in indexes) == 1
    assert sum("(risk_label)" in i for i in indexes) == 1
    assert not any("(updated_at DESC)" in i for i in indexes)


def test_publish_keeps_what_other_jobs_hang_on_the_scores_table(
    production_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    """Update in place: foreign keys, cascades, other jobs' columns and identities survive."""
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_prs_npi")
        conn.execute("ALTER TABLE provider_risk_scores ADD PRIMARY KEY (npi)")
        conn.execute(
            "ALTER TABLE provider_risk_scores ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY"
        )
        conn.execute("ALTER TABLE provider_risk_scores ADD COLUMN reviewed boolean DEFAULT false")
        conn.execute(
            "CREATE TABLE analyst_notes "
            "(npi text REFERENCES provider_risk_scores ON DELETE CASCADE, note text)"
        )
        conn.execute("CREATE TABLE watchlist (npi text REFERENCES provider_risk_scores)")
    assert _cli(production_url, "db", "init").returncode == 0
    assert _cli(production_url, "db", "load", str(production_dataset)).returncode == 0
    first = _cli(
        production_url, "run", "--source", "postgres", "--run-dir", str(tmp_path / "a"), "--quiet"
    )
    assert first.returncode == 0, first.stderr
    npi = pl.read_parquet(tmp_path / "a" / "scores.parquet")["npi"][0]
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("INSERT INTO analyst_notes VALUES (%s, 'called')", (npi,))
        conn.execute("INSERT INTO watchlist VALUES (%s)", (npi,))
        conn.execute("UPDATE provider_risk_scores SET reviewed = true WHERE npi = %s", (npi,))
        before = conn.execute(
            "SELECT id FROM provider_risk_scores WHERE npi = %s", (npi,)
        ).fetchone()
    again = _cli(
        production_url, "run", "--source", "postgres", "--run-dir", str(tmp_path / "b"), "--quiet"
    )
    assert again.returncode == 0, again.stderr
    with psycopg.connect(production_url) as conn:
        row = conn.execute(
            "SELECT p.id, p.reviewed, p.run_id, n.note FROM provider_risk_scores p "
            "JOIN analyst_notes n USING (npi) WHERE npi = %s",
            (npi,),
        ).fetchone()
    assert row == (before[0] if before else None, True, "b", "called")


def test_db_load_never_wipes_rows_without_replace(
    database_url: str, production_dataset: Path
) -> None:
    assert _cli(database_url, "db", "load", str(production_dataset)).returncode == 0
    again = _cli(database_url, "db", "load", str(production_dataset))
    assert again.returncode == 2
    assert "hold rows already: give --replace" in again.stderr
    replaced = _cli(database_url, "db", "load", str(production_dataset), "--replace")
    assert replaced.returncode == 0, replaced.stderr


def test_export_is_independent_of_the_sessions_datestyle(
    database_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    assert _cli(database_url, "db", "load", str(production_dataset)).returncode == 0
    result = claidex_cli(
        "export", "--to", str(tmp_path / "x"),
        env={"DATABASE_URL": database_url, "PGOPTIONS": "-c datestyle=Postgres,MDY"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    leie = pl.read_parquet(production_dataset / "exclusions.parquet").sort("exclusion_id")
    again = pl.read_parquet(tmp_path / "x" / "exclusions.parquet").sort("exclusion_id")
    assert again["excldate"].to_list() == leie["excldate"].to_list()


def test_both_publish_paths_leave_the_same_rows(
    production_url: str, database_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    """A full run replaces rows in one pass on a table only we use, and updates them in place
    where another table references it: the published rows are the same either way."""
    with psycopg.connect(production_url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_prs_npi")
        conn.execute("ALTER TABLE provider_risk_scores ADD PRIMARY KEY (npi)")
        conn.execute("CREATE TABLE watchlist (npi text REFERENCES provider_risk_scores)")
    columns = "npi, risk_score, risk_label, r_raw, flags, components, data_window_years, run_id"
    tables = []
    for url in (production_url, database_url):
        assert _cli(url, "db", "init").returncode == 0
        assert _cli(url, "db", "load", str(production_dataset)).returncode == 0
        for run in ("first", "second"):
            done = _cli(
                url,
                "run",
                "--source",
                "postgres",
                "--run-dir",
                str(tmp_path / f"{run}-{len(tables)}"),
                "--quiet",
            )
            assert done.returncode == 0, done.stderr
        with psycopg.connect(url) as conn:
            tables.append(
                conn.execute(f"SELECT {columns} FROM provider_risk_scores ORDER BY npi").fetchall()
            )  # type: ignore[arg-type]
    assert tables[0] and [r[:-1] for r in tables[0]] == [r[:-1] for r in tables[1]]


def test_the_export_stage_reads_npi_ranges_and_any_shard_count_gives_the_same_bytes(
    production_url: str, production_dataset: Path, tmp_path: Path
) -> None:
    """Issue 13, --source postgres: each export task COPYs its own NPI range through the
    production objects (no serial whole-table export); 1, 3 and 7 shards give the same
    scores, quarantine and counts, and the dataset-file run's scores."""
    from claidex.local_engine import run_local_from_postgres
    from scoring.db.export import npi_range
    from scoring.runs.store import read_json

    assert _cli(production_url, "db", "init").returncode == 0
    assert _cli(production_url, "db", "load", str(production_dataset)).returncode == 0
    with connect(production_url) as conn:  # malformed NPIs land in some range, exactly once
        conn.execute("INSERT INTO providers (npi) VALUES ('12345'), ('abc'), ('3999999999')")
        conn.commit()
    files = run_local(production_dataset, Settings(), run_dir=tmp_path / "f", show_progress=False)
    runs = {
        shards: run_local_from_postgres(
            production_url,
            Settings(shards=shards, workers=2, batch_size=500),
            run_dir=tmp_path / f"s{shards}",
            show_progress=False,
        )
        for shards in (1, 3, 7)
    }
    one = runs[1]
    assert one.scores.read_bytes() == files.scores.read_bytes()
    assert pl.read_parquet(one.quarantine).filter(pl.col("source") == "providers").height >= 3
    for shards, run in runs.items():
        assert run.scores.read_bytes() == one.scores.read_bytes(), shards
        assert run.quarantine.read_bytes() == one.quarantine.read_bytes(), shards
        assert read_json(run.input_counts) == read_json(one.input_counts), shards
        parts = sorted((run.root / "source" / "payments_combined").glob("*.parquet"))
        assert len(parts) == shards
        for index, part in enumerate(parts):
            lower, upper = npi_range(index, shards)
            npis = pl.read_parquet(part, columns=["npi"])["npi"]
            assert lower is None or (npis >= lower).all()
            assert upper is None or (npis < upper).all()
        done = [read_json(run.root / "stages" / "export" / f"{i:05d}" / "done.json")
                for i in range(shards)]  # fmt: skip
        assert sum(d["rows"]["payments_combined"] for d in done) == sum(
            pl.scan_parquet(p).select(pl.len()).collect().item() for p in parts
        )
        assert RunLedger(run).read()["stages"]["export"] == f"{shards}/{shards}"
