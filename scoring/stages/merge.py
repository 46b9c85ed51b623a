"""Step 3: concatenate all chunks, calibrate globally, label, write scores.parquet and report."""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from scoring.checks.measures import row_counts
from scoring.errors import ClaidexError, RunStateError
from scoring.inputs.npi import npi_to_str
from scoring.methodology.composite import calibrated_score, label_expr, reference_risk_score
from scoring.methodology.provider_scores import PREPARE_ID, chunk_columns
from scoring.reports.report import build_report, with_earlier_sources
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.store import (
    REPORT,
    REPORT_HTML,
    SCORES,
    RunPaths,
    batch_key,
    chunk_key,
    run_store,
)

GATHER_COLUMNS = 4  # columns sorted at a time by sorted_by_npi


def score_columns() -> list[str]:
    """scores.parquet's columns: a chunk's, calibrated and labelled after the NPI."""
    return ["npi", "risk_score", "risk_label", *[c for c in chunk_columns() if c != "npi"]]


def _shown(batches: list[int]) -> str:
    return ", ".join(map(str, batches[:20])) + (" ..." if len(batches) > 20 else "")


def checked_chunks(paths: RunPaths, manifest: RunManifest) -> pl.DataFrame:
    """All chunks of this prepare, each holding exactly its batch's NPIs.

    Stale chunks (left by an earlier prepare, e.g. a late worker) are removed so a
    resume re-scores them; any gap or mismatch stops the merge.
    """
    ledger = RunLedger(paths)
    missing = ledger.missing_batches(manifest.batches_total)
    if missing:
        msg = f"run {manifest.run_id}: cannot merge, {len(missing)} batch(es) missing: "
        raise RunStateError(msg + _shown(missing))
    store = run_store(paths)
    frames, stale = [], []
    for index in range(manifest.batches_total):
        chunk = store.read_frame(chunk_key(index))
        expected = store.read_frame(batch_key(index, "providers")).select(
            npi_to_str(pl.col("npi"))
        )
        fresh = chunk[PREPARE_ID].eq(manifest.prepare_id).all()
        if not fresh or not chunk["npi"].equals(expected["npi"].alias("npi")):
            stale.append(index)
            store.delete(chunk_key(index))
            continue
        frames.append(chunk.drop(PREPARE_ID))
    if stale:
        msg = (
            f"run {manifest.run_id}: cannot merge, {len(stale)} chunk(s) do not belong to "
            f"this prepare and were removed (resume re-scores them): "
        )
        raise RunStateError(msg + _shown(stale))
    merged = pl.concat(frames)
    if merged.height != manifest.providers_scored:
        msg = (
            f"run {manifest.run_id}: chunks hold {merged.height} rows, "
            f"prepare scored {manifest.providers_scored}"
        )
        raise RunStateError(msg)
    return merged


def merged_scores(
    paths: RunPaths, manifest: RunManifest, reference: RunPaths | None = None
) -> pl.DataFrame:
    """Every chunk, calibrated and labelled; refuses to merge a run with missing batches.

    A full run is its own reference population; an incremental run is calibrated
    against the r_raw population of its reference full run.
    """
    chunks = checked_chunks(paths, manifest)
    if reference is None:
        calibrated = chunks.with_columns(calibrated_score(pl.col("r_raw"), pl.len()))
    else:
        population = run_store(reference).read_frame(SCORES).get_column("r_raw")
        calibrated = chunks.with_columns(reference_risk_score(chunks["r_raw"], population))
    del chunks
    labelled = calibrated.with_columns(label_expr(manifest.cfg))
    columns = labelled.select(score_columns()).get_columns()
    del labelled
    del calibrated
    return sorted_by_npi(columns)


def sorted_by_npi(columns: list[pl.Series]) -> pl.DataFrame:
    """DataFrame(columns).sort("npi") (NPIs are unique: one order), gathered a few columns at
    a time, each source column released as it goes, so the peak is the frame plus a few
    columns, not two frames (merge was the largest process at 5x seed). Takes the list."""
    order = next(c for c in columns if c.name == "npi").arg_sort()
    gathered: list[pl.Series] = []
    while columns:  # a few columns at once: gathered in parallel, still a small overlap
        group = pl.DataFrame([columns.pop(0) for _ in range(min(GATHER_COLUMNS, len(columns)))])
        gathered += group.select(pl.all().gather(order)).get_columns()
        del group
    return pl.DataFrame(gathered)


def merge_and_calibrate(
    paths: RunPaths, reference: RunPaths | None = None, *, draw: bool = True
) -> pl.DataFrame:
    """Run step 3; the result also stays in the run directory for publish and download.

    `reference`: the full run an incremental run is calibrated against. `draw` False:
    report.json only; the caller draws report.html (`draw_run_report`) once the scores are
    published, off the path to live scores (matplotlib's import and drawing: ~2 s at seed).
    """
    ledger = RunLedger(paths)
    manifest = RunManifest.load(paths)
    ledger.set_status("merging")
    with ledger.step("merge"):
        scores = merged_scores(paths, manifest, reference)
        run_store(paths).write_frame(SCORES, scores)
    # report.json before the status: a follower that sees 'merged' finds it there (the page
    # comes after publish, `draw`)
    report_after_merge(paths, scores, manifest, status="merged", html=draw)
    ledger.set_status("merged", rows_scored=scores.height, rows=row_counts(paths, scores.height))
    return scores


def write_run_report(
    paths: RunPaths,
    scores: pl.DataFrame,
    earlier: dict[str, Any] | None = None,
    *,
    html: bool = True,
    status: str | None = None,
) -> dict[str, Any]:
    """report.json, then (`html`) report.html drawn from it alone. `earlier`: the report
    this one replaces (`claidex report`), for what the run directory no longer holds."""
    report = build_report(paths, scores, status=status)
    if earlier:
        report = with_earlier_sources(report, earlier)
    run_store(paths).write_json(REPORT, report)
    if html:
        _draw(report, paths)
    return report


def _draw(report: dict[str, Any], paths: RunPaths) -> None:
    """report.html; matplotlib is imported here, when a page is drawn: every process that
    imports the run steps (CLI, workers, containers, pool children) would pay ~0.5 s."""
    from scoring.reports.html import write_report_html

    write_report_html(report, paths)


# What drawing a report can raise (a bug, odd data, a full disk); anything else -- a
# worker's soft time limit, an interrupt -- goes on up: the run must hear of it.
REPORT_FAILURES = (
    ClaidexError, OSError, ValueError, TypeError, KeyError, IndexError, ArithmeticError,
    RuntimeError, pl.exceptions.PolarsError,
)  # fmt: skip


def restamp_report(paths: RunPaths, status: str = "published") -> None:
    """After publish: the report's header shows the run's status now (it was written at
    merge), drawn again from report.json; never fails the publish that called it."""
    store = run_store(paths)
    try:
        if not store.exists(REPORT):
            return
        report = store.read_json(REPORT)
        report.setdefault("header", {})["status"] = status
        store.write_json(REPORT, report)
        if store.exists(REPORT_HTML):
            _draw(report, paths)
    except REPORT_FAILURES as exc:
        logging.getLogger(__name__).exception("run %s: report not restamped", paths.run_id)
        RunLedger(paths).update(report_error=f"{type(exc).__name__}: {exc}"[:2000])


def report_after_merge(
    paths: RunPaths, scores: pl.DataFrame, manifest: RunManifest, *, status: str, html: bool = True
) -> None:
    """The run's report; the scores are merged already, so a report that cannot be made
    (a bug, a full disk) is recorded in the ledger (`status` shows it) and logged, and the
    run goes on to publish: the report is about the scores, not part of them."""
    try:
        write_run_report(paths, scores, html=html and manifest.cfg.report_html, status=status)
    except REPORT_FAILURES as exc:
        message = f"{type(exc).__name__}: {exc}"
        logging.getLogger(__name__).exception("run %s: no report: %s", paths.run_id, message)
        RunLedger(paths).update(report_error=message[:2000])
    else:
        RunLedger(paths).update(report_error=None)


def draw_run_report(paths: RunPaths) -> None:
    """report.html from the run's report.json (as it stands: restamped after a publish), when
    the run's settings want one; a failure is recorded like a report that could not be made."""
    store = run_store(paths)
    try:
        if not store.exists(REPORT) or not RunManifest.load(paths).cfg.report_html:
            return
        _draw(store.read_json(REPORT), paths)
    except REPORT_FAILURES as exc:
        message = f"{type(exc).__name__}: {exc}"
        logging.getLogger(__name__).exception("run %s: report not drawn: %s", paths.run_id, message)
        RunLedger(paths).update(report_error=message[:2000])
