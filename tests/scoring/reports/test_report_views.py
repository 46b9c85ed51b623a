"""What people look at (issue 14): report.html in a real headless chromium, `claidex compare`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from claidex.dev.sample import next_week
from claidex.local_engine import run_local
from scoring.config import LABELS, Settings
from scoring.inputs.contract import SCHEMAS
from scoring.reports.html import SECTION_IDS
from scoring.runs.store import RunPaths
from scoring.stages.publish import publish
from tests.browser import capture, chromium_available
from tests.builders import claidex_cli
from tests.conftest import fresh_database

CHART_SECTIONS = [s for s in SECTION_IDS if s not in ("header", "checks")]  # tables only


@pytest.fixture(scope="module")
def runs(sample_dataset: Path, postgres_server, tmp_path_factory: pytest.TempPathFactory):
    """Run A published; A again with other batches and shards; B on data where some providers
    bill more and one disappears, so B's report has a previous published run to compare."""
    root = tmp_path_factory.mktemp("runs")
    changed = tmp_path_factory.mktemp("changed")
    gone = next_week(sample_dataset, changed)["removed"]
    with fresh_database(postgres_server) as url:
        from scoring.db.connection import connect
        from scoring.db.schema import init_schema

        with connect(url) as conn:
            init_schema(conn)
        a = run_local(
            sample_dataset,
            Settings(batch_size=700, report_html=True),
            run_dir=root / "a",
            show_progress=False,
        )
        publish(a, url, outage_window=0)
        a2 = run_local(
            sample_dataset,
            Settings(batch_size=250, shards=3, report_html=True),
            run_dir=root / "a2",
            show_progress=False,
        )
        b = run_local(
            changed,
            Settings(batch_size=700, report_html=True),
            run_dir=root / "b",
            show_progress=False,
        )
        yield {"a": a, "a2": a2, "b": b, "url": url, "gone": gone, "root": root}


def _at(report: dict[str, Any], path: list[Any]) -> Any:
    value: Any = report
    for step in path:
        value = value[step]
    return value


def _parsed(text: str) -> float | str:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


@pytest.mark.skipif(not chromium_available(), reason="Debian chromium: ops/services.sh installs it")
def test_report_html_renders_offline_with_every_chart_drawn_and_the_report_numbers(
    runs, tmp_path: Path
) -> None:
    paths: RunPaths = runs["b"]
    report = json.loads(paths.report.read_text())
    assert report["previous_run"]["run_id"] == "a"  # the published one, not a2 (merged only)
    shot = tmp_path / "report.png"
    page = capture(paths.report_html, shot)
    assert page.blocked == [] and page.requests == [paths.report_html.resolve().as_uri()]
    assert page.console_errors == []
    sections = {s["id"]: s for s in page.sections}
    assert list(sections) == list(SECTION_IDS)
    for ident in CHART_SECTIONS:
        charts = sections[ident]["charts"]
        assert charts, f"section {ident} has no chart"
        for chart in charts:
            assert chart["width"] > 100 and chart["height"] > 50, (ident, chart)
            assert chart["shapes"] > 5 and chart["texts"] > 2, (ident, chart)
    assert len(sections["time"]["charts"]) == 2  # steps, and the per-task timeline
    # every number on the page is report.json's value at its data-key
    for path, text in page.numbers:
        expected = _at(report, path)
        shown = _parsed(text)
        if isinstance(expected, bool) or expected is None or isinstance(expected, str):
            assert text == str(expected), (path, text, expected)
        elif isinstance(expected, int):
            assert shown == expected, (path, text, expected)
        else:
            assert abs(shown - expected) <= 5e-5 * max(1.0, abs(expected)), (path, text, expected)
    keys = {json.dumps(path) for path, _ in page.numbers}
    required = [
        ["rows_scored"],
        ["quarantined", "total"],
        *[["labels", label] for label in LABELS if label in report["labels"]],
        *[["components", c, "share_of_composite"] for c in report["components"]],
        *[["planted_capture", k, "share_elevated_or_high"] for k in report["planted_capture"]],
        *[["previous_run", "transitions", a, b] for a in LABELS for b in LABELS],
        ["previous_run", "added", "count"],
        ["previous_run", "removed", "count"],
        ["timeline", "batches", "utilisation"],
    ]
    missing = [p for p in required if json.dumps(p) not in keys]
    assert missing == []
    assert report["previous_run"]["removed"]["count"] == 1
    assert report["previous_run"]["removed"]["examples"] == [runs["gone"]]
    assert report["previous_run"]["movers"], "boosted providers moved"
    assert len(report["quarantined"]["by_file"]) == 3 and report["quarantined"]["total"] == 5
    records = pl.read_parquet(paths.quarantine)["record"].to_list()
    columns = set(SCHEMAS["payments_combined"])
    assert all(set(json.loads(r)) == columns for r in records)  # the input's columns, no others
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    assert paths.report_html.stat().st_size < 2_000_000  # aggregates, not points


def test_report_json_aggregates_add_up(runs) -> None:
    paths: RunPaths = runs["a"]
    report = json.loads(paths.report.read_text())
    scores = pl.read_parquet(paths.scores)
    assert sum(report["risk_score_histogram"]["counts"]) == scores.height
    for name, summary in report["components"].items():
        assert sum(summary["histogram"]["counts"]) == scores.height, name
    shares = sum(c["share_of_composite"] for c in report["components"].values())
    assert abs(shares - 1.0) < 1e-3  # r_raw is the weighted sum (rounded to 4 per provider)
    quarantine = pl.read_parquet(paths.quarantine)
    assert sum(g["rows"] for g in report["quarantined"]["by_file"]) == quarantine.height
    assert all(1 <= len(g["examples"]) <= 3 for g in report["quarantined"]["by_file"])
    timeline = report["timeline"]
    assert timeline["batches"]["tasks"] == report["batches"]
    assert timeline["stages"]["tasks"] >= 1  # a one-shard plan: its stages fused in one task
    assert report["previous_run"] is None  # nothing was published before A


def _compare(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = claidex_cli("compare", *args, "--json", env=env)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_compare_identical_runs_exit_zero(runs, tmp_path: Path) -> None:
    code, result = _compare(str(runs["a"].root), str(runs["a2"].root))
    assert code == 0 and result["within_tolerance"]
    assert all(c["different"] == 0 and c["within_tol"] == 0 for c in result["columns"])
    html = tmp_path / "compare.html"
    assert claidex_cli("compare", str(runs["a"].root), "a2", "--html", str(html),
                       env={"CLAIDEX_RUN_ROOT": str(runs["root"])}).returncode == 0  # fmt: skip
    assert "within tolerance" in html.read_text()


def test_compare_names_exactly_the_one_changed_npi(runs, tmp_path: Path) -> None:
    scores = pl.read_parquet(runs["a"].scores)
    victim = scores["npi"][17]
    bumped = pl.col("npi") == victim
    edited = scores.with_columns(
        pl.when(bumped)
        .then(pl.col("billing_outlier_score") + 0.01)
        .otherwise(pl.col("billing_outlier_score")),
        pl.when(bumped)
        .then(pl.lit(["Direct or owner-level exclusion on record."]))
        .otherwise(pl.col("flags"))
        .alias("flags"),
    )
    changed = tmp_path / "scores.parquet"
    edited.write_parquet(changed)
    code, result = _compare(str(runs["a"].root), str(changed))
    assert code == 1 and not result["within_tolerance"]
    assert [d["npi"] for d in result["differences"]] == [victim]
    assert set(result["differences"][0]["columns"]) == {"billing_outlier_score", "flags"}
    by_column = {c["column"]: c for c in result["columns"]}
    assert by_column["billing_outlier_score"]["different"] == 1
    assert abs(by_column["billing_outlier_score"]["max_abs_diff"] - 0.01) < 1e-9
    assert by_column["risk_score"]["different"] == 0
    # within a tolerance the number passes; the changed flags still do not
    code, result = _compare(str(runs["a"].root), str(changed), "--tol", "0.02")
    assert code == 1 and set(result["differences"][0]["columns"]) == {"flags"}
    assert {c["column"]: c for c in result["columns"]}["billing_outlier_score"]["within_tol"] == 1


def test_compare_reports_npis_only_on_one_side_and_movers(runs) -> None:
    code, result = _compare(str(runs["a"].root), str(runs["b"].root))
    assert code == 1
    assert result["only_in_a"] == {"count": 1, "examples": [runs["gone"]]}
    assert result["only_in_b"]["count"] == 0
    assert result["movers"] and all(m["delta"] != 0 for m in result["movers"])
    moved = sum(n for a, row in result["transitions"].items() for b, n in row.items() if a != b)
    assert moved > 0


def test_compare_against_the_published_table(runs) -> None:
    env = {"DATABASE_URL": runs["url"]}
    code, result = _compare(str(runs["a"].root), "--published", env=env)
    assert code == 0, result["differences"]
    assert result["npis_both"] == result["npis_a"] == result["npis_b"]
    compared = {c["column"] for c in result["columns"]}
    wanted = {"risk_score", "r_raw", "flags", "data_window_years", "chain_excluded_count"}
    assert wanted | {"components.billing_outlier_score"} <= compared
    code, result = _compare(str(runs["b"].root), "--published", env=env)
    assert code == 1 and result["only_in_b"]["count"] == 1  # B dropped one NPI A published


def test_compare_bad_sides_are_one_line_errors(runs) -> None:
    for args in (["nosuch", str(runs["a"].root)], [str(runs["a"].root)]):
        result = claidex_cli("compare", *args)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_a_report_survives_foreign_records_and_an_unreadable_previous_run(runs, tmp_path) -> None:
    """The report is written at merge: a torn event line, a foreign task record or a damaged
    earlier run must not fail the run; they are left out, or named, instead."""
    root = tmp_path / "root"
    run = root / "this"
    shutil.copytree(runs["a2"].root, run)
    events = sorted((run / "events").glob("*.jsonl"))[0]
    with events.open("a") as handle:
        handle.write('{"batch": 0, "event": "start"}\n{not json\n[1, 2]\n')
    task = sorted((run / "stages").glob("*/*/task.json"))[0]
    task.write_text("[]")
    earlier = root / "earlier"
    earlier.mkdir()
    (earlier / "ledger.json").write_text(
        json.dumps({"kind": "full", "status": "published", "created_at": "2000-01-01T00:00:00"})
    )
    (earlier / "scores.parquet").write_bytes(b"PAR1 torn")
    (root / "foreign").mkdir()
    (root / "foreign" / "ledger.json").write_text("[not an object]")
    result = claidex_cli("report", str(run))
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "report.json").read_text())
    assert report["previous_run"]["run_id"] == "earlier"
    assert "scores.parquet" in report["previous_run"]["error"]
    before = json.loads(runs["a2"].report.read_text())["timeline"]
    assert report["timeline"]["batches"]["tasks"] == before["batches"]["tasks"]
    assert report["timeline"]["stages"]["tasks"] == before["stages"]["tasks"] - 1
    assert "cannot read its scores" in (run / "report.html").read_text()


def _write(frame: pl.DataFrame, path: Path) -> str:
    frame.write_parquet(path)
    return str(path)


def test_compare_counts_a_null_against_a_value_as_a_difference(runs, tmp_path: Path) -> None:
    scores = pl.read_parquet(runs["a"].scores)
    victim = scores["npi"][3]
    nulled = scores.with_columns(
        pl.when(pl.col("npi") == victim).then(None).otherwise(pl.col("r_raw")).alias("r_raw")
    )
    for tol in ("0", "1000"):
        code, result = _compare(str(runs["a"].root), _write(nulled, tmp_path / "n.parquet"),
                                "--tol", tol)  # fmt: skip
        assert code == 1 and [d["npi"] for d in result["differences"]] == [victim]
        assert {c["column"]: c for c in result["columns"]}["r_raw"]["different"] == 1


def test_compare_refuses_sides_that_are_not_one_set_of_scores(runs, tmp_path: Path) -> None:
    scores = pl.read_parquet(runs["a"].scores)
    doubled = _write(pl.concat([scores, scores.head(2)]), tmp_path / "d.parquet")
    result = claidex_cli("compare", str(runs["a"].root), doubled)
    assert result.returncode == 2 and "2 NPI(s) on more than one row" in result.stderr
    for tol in ("-1", "nan"):
        result = claidex_cli("compare", str(runs["a"].root), str(runs["a2"].root), "--tol", tol)
        assert result.returncode == 2 and "tolerance" in result.stderr
    no_npi = _write(scores.with_columns(pl.lit(None, dtype=pl.String).alias("npi")).head(3),
                    tmp_path / "n.parquet")  # fmt: skip
    result = claidex_cli("compare", str(runs["a"].root), no_npi)
    assert result.returncode == 2 and "without an npi" in result.stderr
    marked = _write(
        scores.with_columns(pl.lit("Low[/]").alias("risk_label")), tmp_path / "m.parquet"
    )
    result = claidex_cli("compare", str(runs["a"].root), marked)
    assert result.returncode == 1 and "Low[/]" in result.stdout  # data, not rich markup


def test_compare_fails_on_columns_missing_or_retyped_and_reads_integer_npis(runs, tmp_path) -> None:
    scores = pl.read_parquet(runs["a"].scores)
    fewer = _write(scores.drop("risk_score"), tmp_path / "fewer.parquet")
    code, result = _compare(str(runs["a"].root), fewer)
    assert code == 1 and result["unmatched_columns"]["only_in_a"] == ["risk_score"]
    retyped = _write(
        scores.with_columns(pl.col("peer_count").cast(pl.String)), tmp_path / "t.parquet"
    )
    code, result = _compare(str(runs["a"].root), retyped)
    assert code == 1 and result["unmatched_columns"]["different_types"] == [
        "peer_count: Int32 vs String"
    ]
    integers = _write(scores.with_columns(pl.col("npi").cast(pl.Int64)), tmp_path / "i.parquet")
    code, result = _compare(str(runs["a"].root), integers)
    assert code == 0 and result["npis_both"] == scores.height


def test_publish_restamps_the_report_and_a_failed_report_does_not_fail_the_merge(
    runs, tmp_path: Path
) -> None:
    published = json.loads(runs["a"].report.read_text())
    assert published["header"]["status"] == "published"  # written at merge, restamped
    assert "<td>status</td><td>published</td>" in runs["a"].report_html.read_text()
    from scoring.runs.ledger import RunLedger
    from scoring.stages.merge import merge_and_calibrate

    run = RunPaths(tmp_path / "copy")
    shutil.copytree(runs["a2"].root, run.root)
    run.report_html.unlink()
    run.report_html.mkdir()  # report.html cannot be written
    scores = merge_and_calibrate(run)
    assert scores.height == pl.read_parquet(runs["a2"].scores).height
    state = RunLedger(run).read()
    assert state["status"] == "merged" and "report.html" in state["report_error"]
    status = claidex_cli("status", str(run.root))
    assert "report_error" in status.stdout


def test_labels_are_text_not_math(runs) -> None:
    """Program names are free text: '$...$' in a flag would be TeX to matplotlib (and raise)."""
    from scoring.reports.html import render_report

    report = json.loads(runs["a"].report.read_text())
    report["top_flags"] = {"Highly concentrated in a single payer program (Medi$\\caid$).": 3}
    assert "Medi$\\caid$" in render_report(report)
