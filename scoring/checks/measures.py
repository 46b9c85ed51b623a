"""What a run is measured by before it goes live, from its own files (measures.json).

Kept beside the scores, so a later run compares against the published run's measures
without recomputing them; the score comparisons read both score files (npi-aligned)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from scoring.inputs.validation import PAYMENTS
from scoring.methodology.registry import components
from scoring.runs.manifest import RunManifest
from scoring.runs.store import INPUT_COUNTS, QUARANTINE, RunPaths, read_json_or, run_store

MEASURES = "measures.json"
SHIFT_COLUMNS = ["npi", "risk_score", "risk_label", "peer_taxonomy"]  # what score_shifts compares


def component_columns() -> list[str]:
    """Each component's score (0-100, absolute: its shift is real, unlike the label mix)."""
    return [c.score.name for c in components()]


def input_counts(paths: RunPaths) -> dict[str, Any]:
    """The run's input_counts.json ({} for a run without one)."""
    return dict(read_json_or(paths, INPUT_COUNTS, {}))


def row_counts(
    paths: RunPaths, scored: int, counts: dict[str, Any] | None = None
) -> dict[str, int]:
    """Payment rows read, valid and quarantined; every quarantined row; providers scored
    (the ledger's `rows`, which metrics export). `counts`: input_counts.json, when read."""
    counts = input_counts(paths) if counts is None else counts
    quarantined = payments_quarantined = 0
    store = run_store(paths)
    if store.exists(QUARANTINE):
        source = store.scan_frame(QUARANTINE).select("source").collect()["source"]
        quarantined, payments_quarantined = source.len(), int((source == PAYMENTS).sum())
    valid = int(counts.get("payment_rows_valid", 0))
    return {
        "payment_rows_read": valid + payments_quarantined,
        "payment_rows_valid": valid,
        "payment_rows_quarantined": payments_quarantined,
        "rows_quarantined": quarantined,
        "providers_scored": scored,
    }


def run_measures(paths: RunPaths, scores: pl.DataFrame) -> dict[str, Any]:
    """The run's inputs, population and score distribution, JSON-ready."""
    manifest = RunManifest.load(paths)
    counts = input_counts(paths)
    rows = row_counts(paths, scores.height, counts)
    quarantined, valid = rows["payment_rows_quarantined"], rows["payment_rows_valid"]
    read = rows["payment_rows_read"]
    present = [c for c in component_columns() if c in scores.columns]
    stats = scores.select(
        *[pl.col(c).mean().alias(f"{c}|mean") for c in present],
        *[pl.col(c).quantile(0.9, "nearest").alias(f"{c}|p90") for c in present],
    )
    row = stats.row(0, named=True) if scores.height else {}
    return {
        "kind": manifest.kind,
        "window_end_year": manifest.window_end_year,
        "payment_rows_valid": valid,
        "rows_by_program": counts.get("valid_rows_by_program", {}),
        "rows_by_year": counts.get("valid_rows_by_year", {}),
        "quarantined_payment_rows": quarantined,
        "quarantine_share": quarantined / read if read else 0.0,
        "providers_scored": scores.height,
        "components": {
            c: {"mean": _number(row.get(f"{c}|mean")), "p90": _number(row.get(f"{c}|p90"))}
            for c in present
        },
    }


def _number(value: Any) -> float | None:
    """JSON-safe: None for a missing or non-finite statistic (checks block on it)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return round(float(value), 6)


def score_shifts(scores: pl.DataFrame, reference: pl.DataFrame, points: float) -> dict[str, Any]:
    """NPIs added and removed; among the NPIs in both, the share whose label changed, whose
    risk_score moved by more than `points`, and whose peer taxonomy changed (a recode)."""
    now, before = scores.select(SHIFT_COLUMNS), reference.select(SHIFT_COLUMNS)
    both = now.join(before, on="npi", how="inner", suffix="_ref")
    added = now.join(before, on="npi", how="anti").height
    removed = before.join(now, on="npi", how="anti").height
    churn = moved = recoded = 0.0
    if both.height:  # a score that became null counts as moved, a label as changed
        shift = (pl.col("risk_score") - pl.col("risk_score_ref")).abs()
        churn, moved, recoded = both.select(
            pl.col("risk_label").ne_missing(pl.col("risk_label_ref")).mean(),
            ((shift > points) | shift.is_null() | shift.is_nan()).mean(),
            pl.col("peer_taxonomy").ne_missing(pl.col("peer_taxonomy_ref")).mean(),
        ).row(0)
    return {
        "added": added,
        "removed": removed,
        "common": both.height,
        "label_churn": float(churn or 0.0),
        "movers": float(moved or 0.0),
        "peer_taxonomy_changed": float(recoded or 0.0),
    }
