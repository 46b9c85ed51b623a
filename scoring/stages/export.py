"""Stage export x S (--source postgres): each task COPYs its own NPI range."""

from __future__ import annotations

from typing import Any

from scoring.db.connection import connect, database_url
from scoring.db.export import export_npi_range
from scoring.errors import InputError
from scoring.runs.ledger import RunLedger
from scoring.runs.outage import through_outage
from scoring.runs.plan import read_plan
from scoring.runs.store import RunPaths, run_store
from scoring.stages.stage_files import StageTask

EXPORT = "export"  # for --source postgres: each task COPYs its own NPI range


def export(paths: RunPaths, index: int) -> dict[str, Any]:
    """NPI range `index` of the per-NPI source tables, COPYed by this task into the run's
    snapshot directory as parts (ingest then reads them as a dataset of parts). The URL
    comes from this process's DATABASE_URL (a worker's, a Modal secret's), never the plan."""
    data_dir, cfg, shards = read_plan(paths)
    url = database_url()
    if url is None:
        msg = (
            f"run {paths.run_id}: the export stage reads Postgres, "
            "and this process has no DATABASE_URL"
        )
        raise InputError(msg)

    def export_once() -> dict[str, int]:  # a fresh snapshot each attempt
        with connect(url) as conn:
            return export_npi_range(conn, data_dir, index, shards)

    counts = through_outage(
        export_once, ledger=RunLedger(paths), step="export", window=cfg.db_outage_window
    )
    return StageTask(run_store(paths), EXPORT, index).finish({"rows": counts})
