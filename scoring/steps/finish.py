"""Shared by the engines around the three steps: a run's Postgres snapshot, and merge + publish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scoring.db.connection import connect
from scoring.db.export import export_dataset
from scoring.errors import InputError
from scoring.ledger import RunLedger
from scoring.manifest import RunManifest
from scoring.rundir import RunPaths, writable_run_dir
from scoring.steps.merge import merge_and_calibrate
from scoring.steps.outage import through_outage
from scoring.steps.publish import publish


def export_source(
    paths: RunPaths, database_url: str | None, *, with_graph: bool, outage_window: float = 0.0
) -> Path:
    """Postgres -> the run's own dataset snapshot (`source/`); failures land in the ledger.

    `with_graph` False (the neo4j-* modes) reads no Postgres graph table. An outage is
    ridden out for `outage_window` s: the export starts again from scratch (COPY is one
    snapshot), so a connection lost half-way never leaves a mixed snapshot."""
    ledger = RunLedger(paths)
    writable_run_dir(paths.root)
    ledger.start(kind="full", source="postgres", fingerprint="")
    try:
        if database_url is None:
            msg = "no dataset directory and no database configured for this run"
            raise InputError(msg)
        url = database_url

        def export_once() -> None:
            with connect(url) as conn:
                export_dataset(conn, paths.root / "source", with_graph=with_graph)

        through_outage(export_once, ledger=ledger, step="export", window=outage_window)
    except Exception as exc:
        ledger.fail("export", exc)
        raise
    return paths.root / "source"


def already_published(paths: RunPaths) -> bool:
    """This prepare of the run was published already: merging again must not publish twice."""
    return RunLedger(paths).read().get("published_prepare") == RunManifest.load(paths).prepare_id


def published_outcome(paths: RunPaths) -> dict[str, Any] | None:
    """For a run published already: its status restored and a 'skipped' outcome; else None."""
    if not already_published(paths):
        return None
    RunLedger(paths).set_status("published")
    return {"run_id": paths.run_id, "status": "published", "skipped": True}


def merge_and_publish(
    paths: RunPaths, database_url: str | None, *, reference: RunPaths | None = None
) -> dict[str, Any]:
    """Step 3, then publish when a database is given; a run published before is left alone."""
    if (skipped := published_outcome(paths)) is not None:
        return skipped
    ledger = RunLedger(paths)
    ledger.update(will_publish=database_url is not None)  # followers wait for 'published'
    scores = merge_and_calibrate(paths, reference)
    if database_url is not None:
        publish(paths, database_url)
    return {"run_id": paths.run_id, "status": ledger.read()["status"], "rows": scores.height}
