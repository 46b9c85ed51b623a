"""Run report (report.json): every aggregate the terminal summary and report.html show.

Built from aggregates only: a seed-scale run's page never holds 1.79 M points."""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.config import LABELS, Settings
from scoring.errors import ClaidexError, RunFileError
from scoring.inputs.dataset import DataFile, child, is_file, scan
from scoring.methodology.registry import weights
from scoring.reports.compare import checked_side, label_transitions, only_in, paired, top_movers
from scoring.reports.timeline import timeline
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.roots import runs_beside
from scoring.runs.store import (
    INPUT_COUNTS,
    QUARANTINE,
    SCORES,
    RunPaths,
    read_json_or,
    run_store,
)

ELEVATED_OR_HIGH = LABELS[:2]
HISTOGRAM_BINS = 20  # of width 5 over 0..100 (100 itself in the last bin)
QUARANTINE_EXAMPLES = 3
MOVERS = 10


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    rows = frame.group_by(column).len().sort(["len", column], descending=[True, False]).rows()
    return {str(key): int(n) for key, n in rows}


def planted_capture(scores: pl.DataFrame, planted_path: DataFile) -> dict[str, dict[str, Any]]:
    """Per planted anomaly kind: how many were scored and what share landed in Elevated/High."""
    if not is_file(planted_path):
        return {}
    planted = scan(planted_path).collect()
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


def _quarantine_by_file(quarantine: pl.DataFrame) -> list[dict[str, Any]]:
    """Per (file, reason): rows, and the first few rows in file order as examples."""
    grouped = (
        quarantine.group_by("source", "reason")
        .len()
        .sort(["len", "source", "reason"], descending=[True, False, False])
    )
    examples = (
        quarantine.sort("source", "reason", "source_row", nulls_last=True)
        .group_by("source", "reason", maintain_order=True)
        .head(QUARANTINE_EXAMPLES)
        .with_columns(pl.col("record").str.slice(0, 200))
    )
    return [
        {
            "source": source,
            "reason": reason,
            "rows": int(n),
            "examples": examples.filter((pl.col("source") == source) & (pl.col("reason") == reason))
            .select("source_row", "npi", "record")
            .to_dicts(),
        }
        for source, reason, n in grouped.rows()  # a few reasons, not rows
    ]


def histogram(values: pl.Expr, frame: pl.DataFrame) -> dict[str, list[float] | list[int]]:
    """Counts in HISTOGRAM_BINS bins of width 100 / HISTOGRAM_BINS over 0..100."""
    width = 100 / HISTOGRAM_BINS
    bins = (values / width).floor().clip(0, HISTOGRAM_BINS - 1).cast(pl.Int64).alias("bin")
    found = dict(frame.select(bins).group_by("bin").len().iter_rows())
    return {
        "edges": [round(i * width, 2) for i in range(HISTOGRAM_BINS + 1)],
        "counts": [int(found.get(i, 0)) for i in range(HISTOGRAM_BINS)],
    }


def component_summary(scores: pl.DataFrame, cfg: Settings) -> dict[str, dict[str, Any]]:
    """Per registered component (its score column): histogram, mean and quantiles, and its
    share of r_raw."""
    total = scores["r_raw"].sum() or 1.0
    summary = {}
    for column, weight in weights(cfg).items():
        value = pl.col(column).fill_null(0.0)
        stats = scores.select(
            value.mean().alias("mean"),
            value.quantile(0.5, "nearest").alias("p50"),
            value.quantile(0.9, "nearest").alias("p90"),
            value.quantile(0.99, "nearest").alias("p99"),
            value.max().alias("max"),
            (value * weight).sum().alias("weighted"),
        ).row(0, named=True)
        summary[column] = {
            "weight": weight,
            **{k: round(float(stats[k] or 0.0), 4) for k in ("mean", "p50", "p90", "p99", "max")},
            "share_of_composite": round(float(stats["weighted"] or 0.0) / total, 4),
            "histogram": histogram(value, scores),
        }
    return summary


def previous_published_run(paths: RunPaths, created_at: str) -> RunPaths | None:
    """The latest full run under the same run root published before this run began."""
    candidates = []
    for other in runs_beside(paths):
        if other.run_id == paths.run_id:
            continue
        try:
            state = RunLedger(other).read()
        except (OSError, RunFileError):  # a torn or foreign run directory is not a candidate
            continue
        began = str(state.get("created_at", ""))
        if (
            state.get("kind") == "full"
            and state.get("status") == "published"
            and began < created_at
        ) and run_store(other).exists(SCORES):
            candidates.append((began, other.run_id))
    return paths.sibling(max(candidates)[1]) if candidates else None


def against_previous(
    paths: RunPaths, scores: pl.DataFrame, created_at: str
) -> dict[str, Any] | None:
    """Label transitions, movers, NPIs added and removed since the previous published run."""
    previous = previous_published_run(paths, created_at)
    if previous is None:
        return None
    columns = ["npi", "risk_score", "risk_label"]
    try:  # another run's file, whatever it holds: the report must not fail this run
        before = checked_side(run_store(previous).read_frame(SCORES).select(columns), "previous")
        now = scores.select(columns)
        both, _ = paired(before, now)
        return {
            "run_id": previous.run_id,
            "npis_before": before.height,
            "npis_both": both.height,
            "transitions": label_transitions(both),
            "label_changes": int(
                both.filter(pl.col("risk_label_a") != pl.col("risk_label_b")).height
            ),
            "movers": top_movers(both, MOVERS),
            "added": only_in(now, before, MOVERS),
            "removed": only_in(before, now, MOVERS),
        }
    except (ClaidexError, pl.exceptions.PolarsError) as exc:
        return {"run_id": previous.run_id, "error": f"{previous.where(SCORES)}: {exc}"}


def with_earlier_sources(report: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """A report rebuilt where its sources are gone (a run downloaded from Modal has no events/
    or stages/; planted.parquet was the container's path) keeps what the earlier one had."""
    kept = dict(report)
    if not report["timeline"]["tasks"] and (earlier.get("timeline") or {}).get("tasks"):
        kept["timeline"] = earlier["timeline"]
    if not report["planted_capture"] and earlier.get("planted_capture"):
        kept["planted_capture"] = earlier["planted_capture"]
    return kept


def _planted(scores: pl.DataFrame, manifest: RunManifest) -> dict[str, Any]:
    """Recall of the generator's planted kinds (full runs of generated data); a planted file
    that cannot be read is named instead of failing the report."""
    if manifest.kind != "full":
        return {}  # an incremental run scores a few NPIs: a recall over them means nothing
    try:
        return planted_capture(scores, child(manifest.source, "planted.parquet"))
    except (OSError, pl.exceptions.PolarsError) as exc:
        return {"error": f"{manifest.source}/planted.parquet: {exc}"}


def build_report(
    paths: RunPaths, scores: pl.DataFrame, *, status: str | None = None
) -> dict[str, Any]:
    """`status`: the run's status the report states (merge writes it just before setting it);
    else the ledger's."""
    manifest = RunManifest.load(paths)
    cfg = manifest.cfg
    ledger = RunLedger(paths).read()
    quarantine = run_store(paths).read_frame(QUARANTINE)
    flags = scores.select(pl.col("flags").explode()).drop_nulls()
    created_at = str(ledger.get("created_at") or "")
    window = [manifest.window_end_year - cfg.window_years + 1, manifest.window_end_year]
    return {
        "run_id": manifest.run_id,
        "header": {
            "run_id": manifest.run_id,
            "kind": manifest.kind,
            "engine": ledger.get("engine", "local"),
            "source": manifest.source,
            "window": window,
            "input_fingerprint": manifest.input_fingerprint,
            "status": status or ledger.get("status"),
            "created_at": created_at,
            "reference_run": ledger.get("reference_run"),
            "source_warning": ledger.get("source_warning"),  # an older dataset than the table's
        },
        "window": window,
        "rows_scored": scores.height,
        "batches": manifest.batches_total,
        "labels": _counts(scores, "risk_label"),
        "risk_score_histogram": histogram(pl.col("risk_score"), scores),
        "components": component_summary(scores, cfg),
        "top_flags": _counts(flags, "flags"),
        "quarantined": {
            "total": quarantine.height,
            "by_reason": _quarantine_by_reason(quarantine),
            "by_file": _quarantine_by_file(quarantine),
        },
        "input_counts": read_json_or(paths, INPUT_COUNTS, {}),
        "timings_seconds": ledger.get("timings", {}),
        "timeline": timeline(paths, created_at),
        "planted_capture": _planted(scores, manifest),
        "previous_run": against_previous(paths, scores, created_at)
        if manifest.kind == "full"
        else None,
    }
