"""What each Modal function does: the run steps over the volume layout, nothing more.

Plain functions of a `VolumeLayout`, so they run unchanged in a container (volume at
/data) and in tests (a temporary directory laid out like the volume).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modal_burst.layout import PRUNED, VolumeLayout
from scoring.config import load_settings
from scoring.db.connection import database_url
from scoring.errors import BatchGaveUpError, InputError
from scoring.ledger import RunLedger
from scoring.manifest import RunManifest
from scoring.rundir import read_json
from scoring.steps import prepare, score_batch
from scoring.steps.finish import export_source, merge_and_publish

NO_DATABASE = "not published: the function has no DATABASE_URL (see the Postgres secret)"


def prepare_run(
    layout: VolumeLayout,
    run_id: str,
    *,
    source: str,
    data_name: str,
    overrides: dict[str, Any],
    publish: bool,
) -> dict[str, Any]:
    """Step 1 for a dataset on the volume, or for a fresh Postgres snapshot; the run's publish
    choice is kept in the ledger so a resume honours it."""
    paths = layout.run(run_id)
    cfg = load_settings(**overrides)
    if source == "postgres":
        embedded = cfg.graph_mode == "embedded"  # the neo4j-* modes read no Postgres graph table
        data = export_source(paths, database_url(), with_graph=embedded)
    else:
        data = layout.dataset(data_name)
        if not data.is_dir():
            msg = (
                f"dataset {data_name!r} is not on the volume (no {data}); upload it with "
                f"`python -m modal_burst upload DIR --data-name {data_name}`"
            )
            raise InputError(msg)
    manifest = prepare(paths, data, cfg)
    RunLedger(paths).update(engine="modal", publish=publish)
    return {
        "run_id": run_id,
        "batches_total": manifest.batches_total,
        "providers_scored": manifest.providers_scored,
    }


def score_one_batch(
    layout: VolumeLayout,
    run_id: str,
    batch_index: int,
    worker: str,
    *,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Step 2 for one batch; idempotent, so Modal's retries rewrite the same chunk.

    A batch whose containers died batch_max_attempts times returns `gave_up` instead of
    raising: an exception would be retried by Modal and start the crash loop over."""
    try:
        result = score_batch(layout.run(run_id), batch_index, worker=worker, on_start=on_start)
    except BatchGaveUpError as exc:
        return {"batch": batch_index, "gave_up": str(exc)}
    return {"batch": result.batch_index, "rows": result.rows, "seconds": round(result.seconds, 3)}


def merge_run(layout: VolumeLayout, run_id: str, *, publish: bool) -> dict[str, Any]:
    """Step 3 (refuses missing batches), then publish once when asked and a database is set."""
    url = database_url() if publish else None
    outcome = merge_and_publish(layout.run(run_id), url)
    if publish and url is None:
        outcome["note"] = NO_DATABASE
    return outcome


def run_state(layout: VolumeLayout, run_id: str) -> dict[str, Any]:
    """The ledger summary plus what a driver needs: prepared or not, missing batches, errors,
    and the run's own graph mode (run.json), which decides the secrets of its batches."""
    paths = layout.run(run_id)
    if not paths.ledger.exists():
        return {"run_id": run_id, "exists": False, "prepared": False, "missing": []}
    ledger = RunLedger(paths)
    summary = ledger.summary()
    prepared = paths.manifest.exists()
    pruned = read_json(paths.root / PRUNED) if (paths.root / PRUNED).exists() else None
    states = ledger.batch_states()
    total = int(summary.get("batches_total", 0))
    settings = RunManifest.load(paths).settings if prepared else {}
    return {
        **summary,
        "exists": True,
        "prepared": prepared,
        "graph_mode": settings.get("graph_mode"),
        "missing": ledger.missing_batches(total) if prepared and not pruned else [],
        "batch_errors": {i: states[i].get("error", "") for i in summary["batches_failed"]},
        "pruned": pruned,
    }


def record_status(
    layout: VolumeLayout, run_id: str, status: str, *, step: str | None, error: str | None
) -> None:
    """The driver's view of the run in the ledger: failed at a step, or scoring again."""
    ledger = RunLedger(layout.run(run_id))
    if status == "failed":
        ledger.fail(step or "score", error or "failed")
    else:
        ledger.set_status(status, error=None, failed_step=None)
