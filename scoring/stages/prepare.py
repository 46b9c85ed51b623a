"""Step 1's ends: the plan every stage task reads (from a dataset directory or Postgres), and
run.json, written once every stage is done. The stages between are the pipeline's."""

from __future__ import annotations

from pathlib import Path

from scoring.config import Settings
from scoring.db.connection import connect
from scoring.db.export import GRAPH_QUERIES, estimated_payment_rows, export_dataset
from scoring.errors import ClaidexError, InputError
from scoring.inputs.dataset import DataSource, data_source
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.outage import through_outage
from scoring.runs.plan import run_fingerprint, write_plan
from scoring.runs.store import SOURCE, RunPaths, run_store, source_dataset, writable_run
from scoring.stages.combine import combine

NO_ESTIMATE_SHARDS = 16  # --source postgres, shards 0, tables never analysed


def begin_prepare(paths: RunPaths, data_dir: DataSource, cfg: Settings) -> None:
    """A clean run directory, the ledger started, and the plan every stage task reads."""
    writable_run(paths)
    paths.clear()
    ledger = RunLedger(paths)
    source = str(data_dir)
    try:  # the dataset's layout is judged here: a refused one still leaves a failed ledger
        source = str(data_source(data_dir))
        fingerprint = run_fingerprint(data_dir, cfg)
    except (ClaidexError, OSError) as exc:
        ledger.start(kind="full", source=source, fingerprint="")
        ledger.fail("prepare", exc)
        raise
    ledger.start(kind="full", source=source, fingerprint=fingerprint)
    with ledger.step("prepare"):
        write_plan(paths, data_dir, cfg, fingerprint)


def begin_prepare_from_postgres(
    paths: RunPaths, url: str | None, cfg: Settings, *, outage_window: float = 0.0
) -> None:
    """A clean run directory and a plan whose first stage exports the per-NPI tables by
    NPI range (each task its own COPY); the graph tables, small, are exported here, once,
    in the embedded graph mode (the neo4j-* modes read no Postgres graph table)."""
    writable_run(paths)
    paths.clear()
    source = source_dataset(paths)
    run_store(paths).delete(SOURCE)  # no part of an earlier prepare survives
    ledger = RunLedger(paths)
    ledger.start(kind="full", source="postgres", fingerprint="")
    if url is None:
        msg = "no dataset directory and no database configured for this run"
        ledger.fail("export", msg)
        raise InputError(msg)
    with ledger.step("prepare"):

        def export_graph() -> int | None:
            with connect(url) as conn:
                if cfg.graph_mode == "embedded":  # the neo4j-* modes read no Postgres graph
                    export_dataset(conn, source, with_graph=True, tables=GRAPH_QUERIES)
                return 0 if cfg.shards else estimated_payment_rows(conn)

        rows = through_outage(export_graph, ledger=ledger, step="export", window=outage_window)
        if rows is None:  # no planner estimate: a fixed count rather than a full scan
            cfg = cfg.model_copy(update={"shards": NO_ESTIMATE_SHARDS})
        if isinstance(source, Path):
            source.mkdir(parents=True, exist_ok=True)
        write_plan(paths, source, cfg, "", source_kind="postgres", payment_rows=rows or None)


def finish_prepare(paths: RunPaths, manifest: RunManifest) -> None:
    """The manifest is what batches and merge read: written last, once every stage is done;
    then the ledger says so, naming this prepare (what makes combine done)."""
    manifest.save(paths)
    record_prepared(paths, manifest)


def record_prepared(paths: RunPaths, manifest: RunManifest) -> None:
    RunLedger(paths).set_status(
        "scoring",
        prepared=manifest.prepare_id,
        batches_total=manifest.batches_total,
        window_end_year=manifest.window_end_year,
        providers_scored=manifest.providers_scored,
        input_fingerprint=manifest.input_fingerprint,  # a Postgres run's, from its parts
    )


def is_combined(paths: RunPaths) -> bool:
    """run.json is written and the ledger records this prepare as finished."""
    if not RunManifest.exists(paths):
        return False
    return RunLedger(paths).read().get("prepared") == RunManifest.load(paths).prepare_id


def combine_and_finish(paths: RunPaths) -> RunManifest:
    """The last stage's gather, then the manifest batches read (every engine's end of step 1).
    A run.json already written (a process killed before the ledger recorded it) is kept: only
    the ledger is brought up to date, so the run keeps its prepare id and its chunks."""
    if RunManifest.exists(paths):
        manifest = RunManifest.load(paths)
        record_prepared(paths, manifest)
        return manifest
    manifest = combine(paths)
    finish_prepare(paths, manifest)
    return manifest
