"""Run report: rows scored, labels, top flags, quarantine reasons, step timings, planted recall."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from scoring.ledger import RunLedger
from scoring.manifest import RunManifest
from scoring.rundir import RunPaths, read_json

ELEVATED_OR_HIGH = ("Elevated", "High")


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    rows = frame.group_by(column).len().sort(["len", column], descending=[True, False]).rows()
    return {str(key): int(n) for key, n in rows}


def planted_capture(scores: pl.DataFrame, planted_path: Path) -> dict[str, dict[str, Any]]:
    """Per planted anomaly kind: how many were scored and what share landed in Elevated/High."""
    if not planted_path.exists():
        return {}
    planted = pl.read_parquet(planted_path)
    joined = planted.join(scores.select("npi", "risk_label"), on="npi", how="left")
    summary = (
        joined.group_by("kind")
        .agg(
            pl.len().alias("planted"),
            pl.col("risk_label").is_not_null().sum().alias("scored"),
            pl.col("risk_label").is_in(ELEVATED_OR_HIGH).sum().alias("elevated_or_high"),
        )
        .sort("kind")
    )
    return {
        row["kind"]: {
            "planted": row["planted"],
            "scored": row["scored"],
            "elevated_or_high": row["elevated_or_high"],
            "share_elevated_or_high": round(row["elevated_or_high"] / max(row["scored"], 1), 4),
        }
        for row in summary.iter_rows(named=True)
    }


def _quarantine_by_reason(quarantine: pl.DataFrame) -> dict[str, int]:
    grouped = (
        quarantine.group_by("source", "reason")
        .len()
        .sort(["len", "source", "reason"], descending=[True, False, False])
    )
    return {f"{source}: {reason}": int(n) for source, reason, n in grouped.rows()}


def build_report(paths: RunPaths, scores: pl.DataFrame) -> dict[str, Any]:
    manifest = RunManifest.load(paths)
    ledger = RunLedger(paths).read()
    quarantine = pl.read_parquet(paths.quarantine)
    flags = scores.select(pl.col("flags").explode()).drop_nulls()
    counts_path = paths.input_counts
    return {
        "run_id": manifest.run_id,
        "window": [
            manifest.window_end_year - manifest.cfg.window_years + 1,
            manifest.window_end_year,
        ],
        "rows_scored": scores.height,
        "batches": manifest.batches_total,
        "labels": _counts(scores, "risk_label"),
        "top_flags": _counts(flags, "flags"),
        "quarantined": {
            "total": quarantine.height,
            "by_reason": _quarantine_by_reason(quarantine),
        },
        "input_counts": read_json(counts_path) if counts_path.exists() else {},
        "timings_seconds": ledger.get("timings", {}),
        "planted_capture": planted_capture(scores, Path(manifest.source) / "planted.parquet"),
    }
