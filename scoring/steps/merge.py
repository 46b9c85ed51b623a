"""Step 3: concatenate all chunks, calibrate globally, label, write scores.parquet and report."""

from __future__ import annotations

import polars as pl

from scoring.composite import calibrated_score, label_expr
from scoring.errors import RunStateError
from scoring.ledger import RunLedger, StepTimer
from scoring.manifest import RunManifest
from scoring.provider_scores import CHUNK_COLUMNS
from scoring.report import build_report
from scoring.rundir import RunPaths, write_json_atomic, write_parquet_atomic

SCORE_COLUMNS = ["npi", "risk_score", "risk_label", *[c for c in CHUNK_COLUMNS if c != "npi"]]


def merged_scores(paths: RunPaths, manifest: RunManifest) -> pl.DataFrame:
    """Every chunk, calibrated and labelled; refuses to merge a run with missing batches."""
    missing = RunLedger(paths).missing_batches(manifest.batches_total)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        msg = f"run {manifest.run_id}: cannot merge, {len(missing)} batch(es) missing: {shown}"
        raise RunStateError(msg)
    chunks = pl.scan_parquet([paths.chunk(i) for i in range(manifest.batches_total)])
    return (
        chunks.with_columns(calibrated_score(pl.col("r_raw"), pl.len()))
        .with_columns(label_expr(manifest.cfg))
        .select(SCORE_COLUMNS)
        .sort("npi")
        .collect()
    )


def merge_and_calibrate(paths: RunPaths) -> pl.DataFrame:
    """Run step 3; the result also stays in the run directory for publish and download."""
    ledger = RunLedger(paths)
    manifest = RunManifest.load(paths)
    ledger.set_status("merging")
    try:
        with StepTimer(ledger, "merge"):
            scores = merged_scores(paths, manifest)
            write_parquet_atomic(scores, paths.scores)
    except Exception as exc:
        ledger.fail("merge", exc)
        raise
    ledger.set_status("merged", rows_scored=scores.height)
    write_json_atomic(build_report(paths, scores), paths.report)
    return scores
