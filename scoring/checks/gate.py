"""Checks before publish: run after merge, before any write to the table.

The reference is the run on the table (the last published full run in claidex_runs; an
incremental run's own reference). The verdicts go to checks.json, the ledger and the
report; a blocking verdict holds the run (`blocked`) until `claidex publish RUN --accept`.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.checks.measures import MEASURES, SHIFT_COLUMNS, run_measures, score_shifts
from scoring.checks.verdicts import (
    Check,
    full_run_checks,
    incremental_checks,
    reference_check,
    worst,
)
from scoring.config import Settings
from scoring.db.connection import connect
from scoring.db.publish import table_full_run
from scoring.errors import RunFileError
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.outage import through_outage
from scoring.runs.roots import run_at
from scoring.runs.store import REPORT, SCORES, RunPaths, read_json_or, run_store

CHECKS = "checks.json"


def published_run_id(database_url: str) -> tuple[str | None, bool]:
    """The full run whose scores are on the table (None: none published), and whether the
    table holds rows at all (rows of no known run: a legacy load)."""
    with connect(database_url) as conn:
        row = table_full_run(conn)
        filled = conn.execute("SELECT EXISTS (SELECT 1 FROM provider_risk_scores)").fetchone()
    return (None if row is None else str(row[0])), bool(filled and filled[0])


def locate_run(run_id: str, beside: RunPaths, cfg: Settings) -> RunPaths | None:
    """A run's directory: beside this run, else under the run root (None: neither)."""
    for candidate in (beside.sibling(run_id), run_at(cfg.run_root, run_id)):
        if run_store(candidate).exists(SCORES):
            return candidate
    return None


def measures_of(paths: RunPaths, scores: pl.DataFrame | None = None) -> dict[str, Any]:
    """A run's measures: its measures.json, else computed from its files (never written
    into another run's directory: it may not be ours to write)."""
    found = read_json_or(paths, MEASURES, None)
    if found is not None:
        return dict(found)
    return run_measures(paths, run_store(paths).read_frame(SCORES) if scores is None else scores)


def _outcome(checks: list[Check], reference: str | None, note: str = "") -> dict[str, Any]:
    return {
        "verdict": worst(checks),
        "reference_run": reference,
        "blocking": [c.name for c in checks if c.verdict == "block"],
        "warnings": [c.name for c in checks if c.verdict == "warn"],
        "note": note,
        "checks": [c.record() for c in checks],
    }


def run_checks(
    paths: RunPaths,
    scores: pl.DataFrame,
    database_url: str,
    *,
    reference: RunPaths | None = None,
    outage_window: float | None = None,
) -> dict[str, Any]:
    """Every check of this run against the run on the table; recorded in checks.json and
    the ledger (`checks`), and returned. `reference`: an incremental run's reference."""
    manifest = RunManifest.load(paths)
    cfg = manifest.cfg
    now = run_measures(paths, scores)  # this run's, always afresh (a re-merge: new scores)
    run_store(paths).write_json(MEASURES, now)
    if not cfg.checks:
        outcome = _outcome([], None, "checks are off (CLAIDEX_CHECKS=0)")
    elif manifest.kind == "incremental":
        ref = reference or _reference_of(paths)
        ref_scores = rescored_rows(ref, scores["npi"])
        shifts = score_shifts(scores, ref_scores, cfg.check_movers_points)
        outcome = _outcome(incremental_checks(now, measures_of(ref), shifts, cfg), ref.run_id)
    else:
        outcome = _full_run_outcome(paths, scores, now, database_url, cfg, outage_window)
    run_store(paths).write_json(CHECKS, outcome)
    RunLedger(paths).update(checks=outcome)
    return outcome


def rescored_rows(reference: RunPaths, npis: pl.Series) -> pl.DataFrame:
    """The reference's rows of a few rescored NPIs: the score columns the shifts compare,
    their row groups found by statistics (the enqueue path: not 1.79 M rows read for 100)."""
    try:
        return (
            run_store(reference)
            .scan_frame(SCORES)
            .select(SHIFT_COLUMNS)
            .filter(pl.col("npi").is_in(npis.implode()))
            .collect()
        )
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise RunFileError(f"{reference.where(SCORES)}: unreadable ({exc})") from exc


def _reference_of(paths: RunPaths) -> RunPaths:
    run_id = RunLedger(paths).read()["reference_run"]
    found = locate_run(run_id, paths, RunManifest.load(paths).cfg)
    if found is None:
        raise FileNotFoundError(f"the reference run {run_id} has no scores.parquet")
    return found


def _full_run_outcome(
    paths: RunPaths,
    scores: pl.DataFrame,
    now: dict[str, Any],
    database_url: str,
    cfg: Settings,
    outage_window: float | None,
) -> dict[str, Any]:
    run_id, filled = through_outage(  # the table's database down: ridden out like a publish
        lambda: published_run_id(database_url),
        ledger=RunLedger(paths),
        step="publish",  # the checks are the publish's first part: one outage, one step
        window=cfg.db_outage_window if outage_window is None else outage_window,
    )
    if run_id is None:
        if filled:
            why = "the table holds rows of no published full run (claidex_runs): not compared"
            return _outcome([reference_check("block", why)], None)
        note = "first publish: the table is empty"
        return _outcome([reference_check("pass", note)], None, "first publish")
    if run_id == paths.run_id:
        state = RunLedger(paths).read()
        if state.get("published_prepare") != RunManifest.load(paths).prepare_id:
            why = (
                f"the run on the table ({run_id}) was prepared again in this directory: its "
                "published scores are gone from here, nothing to compare with"
            )
            return _outcome([reference_check("block", why)], run_id)
        ref_paths: RunPaths | None = paths  # a re-publish of the run on the table itself
    else:
        ref_paths = locate_run(run_id, paths, cfg)
    if ref_paths is None:
        why = (
            f"the run on the table ({run_id}) has no directory beside this run or under "
            f"{cfg.run_root}: nothing to compare with"
        )
        return _outcome([reference_check("block", why)], run_id)
    ref_scores = scores if ref_paths is paths else run_store(ref_paths).read_frame(SCORES)
    reference = now if ref_paths is paths else measures_of(ref_paths, ref_scores)
    shifts = score_shifts(scores, ref_scores, cfg.check_movers_points)
    return _outcome(full_run_checks(now, reference, shifts, cfg), run_id)


def blocked_line(paths: RunPaths, outcome: dict[str, Any]) -> str:
    """The one line a blocked run prints (and alerts carry)."""
    failing = ", ".join(
        f"{c['name']} ({c['reason']})" for c in outcome["checks"] if c["verdict"] == "block"
    )
    modal = RunLedger(paths).read().get("engine") == "modal"  # its run lives on the volume
    command = "python -m modal_burst merge" if modal else "claidex publish"
    return (
        f"run {paths.run_id} blocked before publish by {len(outcome['blocking'])} check(s): "
        f'{failing}; publish it anyway with: {command} {paths.run_id} --accept "REASON"'
    )


def add_checks_to_report(paths: RunPaths, outcome: dict[str, Any]) -> None:
    """report.json carries the checks (report.html shows them first); no report: nothing."""
    store = run_store(paths)
    if store.exists(REPORT):
        report = store.read_json(REPORT)
        report["checks"] = outcome
        store.write_json(REPORT, report)
