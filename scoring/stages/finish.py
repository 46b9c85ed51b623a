"""Shared by the engines after the batches: merge, and publish once."""

from __future__ import annotations

from typing import Any

from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.store import RunPaths
from scoring.stages.merge import draw_run_report, merge_and_calibrate
from scoring.stages.publish import publish


def already_published(paths: RunPaths) -> bool:
    """This prepare of the run was published already: merging again must not publish twice."""
    return RunLedger(paths).read().get("published_prepare") == RunManifest.load(paths).prepare_id


def published_outcome(paths: RunPaths) -> dict[str, Any] | None:
    """For a run published already: its status restored and a 'skipped' outcome; else None."""
    if not already_published(paths):
        return None
    if not paths.report_html.exists():  # killed between publish and drawing: drawn now
        draw_run_report(paths)
    RunLedger(paths).set_status("published")
    return {"run_id": paths.run_id, "status": "published", "skipped": True}


def merge_and_publish(
    paths: RunPaths,
    database_url: str | None,
    *,
    reference: RunPaths | None = None,
    outage_window: float | None = None,
) -> dict[str, Any]:
    """Step 3, then publish when a database is given; a run published before is left alone.
    `outage_window` 0: an interactive command, which reports an unreachable database at once.
    report.html is drawn last: the scores do not wait for it."""
    if (skipped := published_outcome(paths)) is not None:
        return skipped
    ledger = RunLedger(paths)
    ledger.update(will_publish=database_url is not None)  # followers wait for 'published'
    scores = merge_and_calibrate(paths, reference, draw=False)
    try:
        if database_url is not None:
            publish(paths, database_url, outage_window=outage_window)
    finally:  # a failed publish still leaves the run's page
        draw_run_report(paths)
    return {"run_id": paths.run_id, "status": ledger.read()["status"], "rows": scores.height}
