"""Terminal rendering of a run report and of a run's ledger."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from scoring.config import LABELS


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(
        f"[bold]run {report['run_id']}[/]: {report['rows_scored']:,} providers scored "
        f"in {report['batches']} batches, window {report['window'][0]}-{report['window'][1]}"
    )
    counts = report.get("input_counts", {})
    if counts.get("window_end_reason"):
        console.print(f"window end {counts['window_end_year']}: {counts['window_end_reason']}")
    outside = (
        counts.get("payment_rows_after_window", 0),
        counts.get("payment_rows_before_window", 0),
    )
    if any(outside):
        console.print(
            f"payment rows not scored: {outside[0]:,} after the window, {outside[1]:,} before it"
        )
    labels = Table("risk_label", "providers", title="Labels")
    for label in LABELS:
        labels.add_row(label, f"{report['labels'].get(label, 0):,}")
    console.print(labels)
    flags = Table("flag", "providers", title="Top flags")
    for text, n in list(report["top_flags"].items())[:5]:
        flags.add_row(text, f"{n:,}")
    console.print(flags)
    quarantine = report["quarantined"]
    console.print(f"quarantined rows: {quarantine['total']:,}")
    for reason, n in quarantine["by_reason"].items():
        console.print(f"  {reason}: {n:,}")
    if report.get("planted_capture"):
        planted = Table("planted kind", "scored", "Elevated/High", title="Planted anomalies")
        for kind, row in report["planted_capture"].items():
            planted.add_row(kind, f"{row['scored']:,}", f"{row['share_elevated_or_high']:.1%}")
        console.print(planted)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in report["timings_seconds"].items())
    console.print(f"timings: {timings}")
    if checks := report.get("checks"):
        console.print(f"checks before publish: {checks_line(checks)}")


def checks_line(checks: dict[str, Any]) -> str:
    """The checks' verdict in one line: pass / warn / block, and which."""
    line = f"{checks['verdict']}"
    if checks.get("reference_run"):
        line += f" against {checks['reference_run']}"
    if checks.get("note"):
        line += f" ({checks['note']})"
    if checks.get("blocking"):
        line += f"; blocking: {', '.join(checks['blocking'])}"
    if checks.get("warnings"):
        line += f"; warnings: {', '.join(checks['warnings'])}"
    return line


def print_status(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table("field", "value", title=f"run {summary.get('run_id', '?')}")
    for key in (
        "status",
        "kind",
        "source",
        "window_end_year",
        "providers_scored",
        "batches_total",
        "batches_done",
        "batches_failed",
        "failed_step",
        "error",
        "report_error",
        "blocked",
        "accepted",
        "input_fingerprint",
        "created_at",
        "updated_at",
        "timings",
    ):
        if key in summary and summary[key] not in (None, {}, []):
            table.add_row(key, str(summary[key]))
    if summary.get("checks"):
        table.add_row("checks", checks_line(summary["checks"]))
    console.print(table)
