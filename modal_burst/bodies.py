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
from scoring.errors import BatchGaveUpError, InputError, RunFileError
from scoring.ledger import RunLedger, read_record
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
    choice is kept in the ledger so a resume honours it.

    run.json is written before the ledger records the choice, and a background commit can
    make it visible on its own when the container dies in between: a driver refuses a run
    whose ledger lacks the choice (`RunNeeds.of_run`) rather than guess."""
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
                f"`python -m modal_burst upload DIR --data-name {data_name}` (a deployed app "
                "keeps the volume it was deployed with: after a volume migration, redeploy)"
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
    and the run's own graph mode and secret names (run.json), which decide its secrets.

    A torn or foreign ledger.json / run.json is one RunFileError naming the run and file."""
    try:
        return _run_state(layout, run_id)
    except RunFileError as exc:
        on_volume = str(exc).replace(f"{layout.root}/", "", 1)  # runs/RUN/FILE, as Modal names it
        msg = f"run {run_id}: {on_volume}"
        raise RunFileError(msg) from None


def _run_state(layout: VolumeLayout, run_id: str) -> dict[str, Any]:
    paths = layout.run(run_id)
    if not paths.ledger.exists():
        return {"run_id": run_id, "exists": False, "prepared": False, "missing": []}
    ledger = RunLedger(paths)
    summary = ledger.summary()
    manifest = read_record(paths.manifest) if paths.manifest.exists() else None
    pruned = read_record(paths.root / PRUNED) if (paths.root / PRUNED).exists() else None
    states = ledger.batch_states()
    settings: dict[str, Any] = manifest.get("settings", {}) if manifest else {}
    state = {
        **summary,
        "exists": True,
        "prepared": manifest is not None,
        "graph_mode": settings.get("graph_mode"),
        "postgres_secret": settings.get("modal_postgres_secret"),
        "neo4j_secret": settings.get("modal_neo4j_secret"),
        "missing": [],
        "batch_errors": {i: states[i].get("error", "") for i in summary["batches_failed"]},
        "pruned": pruned,
    }
    if manifest is not None:  # run.json decides the batches (the ledger may lag behind it)
        total = int(manifest["batches_total"])
        missing = [] if pruned else ledger.missing_batches(total)
        state.update(batches_total=total, batches_done=total - len(missing), missing=missing)
    return state


def record_status(
    layout: VolumeLayout,
    run_id: str,
    status: str,
    *,
    step: str | None,
    error: str | None,
    batch_errors: dict[int, str] | None = None,
) -> None:
    """The driver's view of the run in the ledger.

    'scoring' (a dispatch starts): a batch record still 'running' without a chunk is from
    a start nobody is waiting for any more (the driver was interrupted, or Modal gave up on
    it): it becomes 'interrupted', so only deaths seen by this dispatch count as attempts.
    'failed': the run failed at `step`; each batch of `batch_errors` (what the driver got back
    from Modal: an exception, a timeout, a lost input) is recorded failed, so a resume scores
    it afresh instead of counting a stale 'running' record as one more container death."""
    paths = layout.run(run_id)
    ledger = RunLedger(paths)
    if status == "failed":
        for index, why in (batch_errors or {}).items():
            if not paths.chunk(index).exists():
                ledger.batch_failed(index, why)
        ledger.fail(step or "score", error or "failed")
        return
    if status == "scoring":
        for index, record in ledger.batch_states().items():
            if record.get("status") == "running" and not paths.chunk(index).exists():
                ledger.batch_interrupted(index, "an earlier dispatch never saw it end")
    ledger.set_status(status, error=None, failed_step=None)
