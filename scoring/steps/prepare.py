"""Step 1: validate and load inputs, compute global statistics and ownership, cut batches."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

from scoring.config import Settings
from scoring.db.connection import connect
from scoring.db.export import GRAPH_QUERIES, estimated_payment_rows, export_dataset
from scoring.errors import InputError
from scoring.graphdb.connection import GraphUnavailableError, neo4j_target
from scoring.graphdb.snapshot import GraphSnapshot, read_snapshot, verify_graph
from scoring.ledger import RunLedger
from scoring.manifest import RunManifest
from scoring.peer_stats import (
    billing_metrics,
)
from scoring.population import (
    in_window,
    peer_attributes,
    provider_years,
    with_growth,
)
from scoring.rundir import RunPaths, writable_run_dir
from scoring.steps.outage import through_outage
from scoring.steps.stages import (
    combine,
    has_window,
    missing_shards,
    plan_stages,
    read_plan,
    reduce,
    run_fingerprint,
    run_stage_task,
    stage_progress,
    write_plan,
)
from scoring.validation import CleanInputs

T = TypeVar("T")
NO_ESTIMATE_SHARDS = 16  # --source postgres, shards 0, tables never analysed


def _ride_out(cfg: Settings, ledger: RunLedger, action: Callable[[], T]) -> T:
    """Neo4j restarting: wait, visibly, up to the outage window."""
    return through_outage(
        action,
        ledger=ledger,
        step="prepare",
        window=cfg.neo4j_outage_window,
        what="Neo4j",
        gave_up=GraphUnavailableError,  # still transient: a task retry may find it back
    )


def neo4j_verify(cfg: Settings, ledger: RunLedger) -> None:
    """neo4j-live: each batch asks Neo4j, but a wrong URI or password fails prepare."""
    target = neo4j_target()
    _ride_out(cfg, ledger, lambda: verify_graph(target, cfg))


def neo4j_snapshot(cfg: Settings, ledger: RunLedger) -> GraphSnapshot:
    target = neo4j_target()
    return _ride_out(cfg, ledger, lambda: read_snapshot(target, cfg))


def provider_rows(
    attrs: pl.LazyFrame, totals: pl.DataFrame, ownership: pl.DataFrame, excluded: pl.DataFrame
) -> pl.DataFrame:
    """One row per scored NPI: peer attributes, program totals, ownership, LEIE status."""
    return (
        attrs.join(totals.lazy(), on="npi", how="left")
        .join(ownership.lazy(), on="npi", how="left")
        .join(excluded.lazy(), on="npi", how="left")
        .sort("npi")
        .collect()
    )


def provider_year_rows(
    clean: CleanInputs, t: int, cfg: Settings
) -> tuple[pl.DataFrame, pl.LazyFrame, pl.LazyFrame]:
    """Window provider-years with growth, peer attributes and billing metrics; the window
    payment rows; the peer attributes."""
    window = clean.payments.lazy().filter(in_window(t, cfg))
    py = provider_years(window, cfg)
    population = py.select("npi").unique().sort("npi")
    attrs = peer_attributes(population, clean.providers.lazy(), window, cfg)
    py_df = billing_metrics(with_growth(py).join(attrs, on="npi"), cfg).sort("npi", "year")
    return py_df.collect(), window, attrs


StageRunner = Callable[[RunPaths, str, list[int]], None]


def run_serially(paths: RunPaths, stage: str, shards: list[int]) -> None:
    """The in-process stage runner (one task after the other)."""
    for index in shards:
        run_stage_task(paths, stage, index)


def run_stages(paths: RunPaths, run_tasks: StageRunner = run_serially) -> RunManifest:
    """The stages of a written plan; only shards without a done marker run (resume)."""
    ledger = RunLedger(paths)
    shards = read_plan(paths)[2]
    for stage in plan_stages(paths):
        if stage == "aggregate" and not has_window(paths):
            reduce(paths, ledger)
        run_tasks(paths, stage, missing_shards(paths, stage, shards))
        ledger.update(stages=stage_progress(paths))
    return combine(paths)


def begin_prepare(paths: RunPaths, data_dir: Path, cfg: Settings) -> None:
    """A clean run directory, the ledger started, and the plan every stage task reads."""
    writable_run_dir(paths.root)
    paths.clear()
    ledger = RunLedger(paths)
    ledger.start(
        kind="full",
        source=str(Path(data_dir).resolve()),
        fingerprint=run_fingerprint(data_dir, cfg),
    )
    with ledger.step("prepare"):
        write_plan(paths, data_dir, cfg, ledger.read()["input_fingerprint"])


def begin_prepare_from_postgres(
    paths: RunPaths, url: str | None, cfg: Settings, *, outage_window: float = 0.0
) -> None:
    """A clean run directory and a plan whose first stage exports the per-NPI tables by
    NPI range (each task its own COPY); the graph tables, small, are exported here, once,
    in the embedded graph mode (the neo4j-* modes read no Postgres graph table)."""
    writable_run_dir(paths.root)
    paths.clear()
    source = paths.root / "source"
    shutil.rmtree(source, ignore_errors=True)  # no part of an earlier prepare survives
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
        source.mkdir(parents=True, exist_ok=True)
        write_plan(paths, source, cfg, "", source_kind="postgres", payment_rows=rows or 0)


def finish_prepare(paths: RunPaths, manifest: RunManifest) -> None:
    """The manifest is what batches and merge read: written last, once every stage is done."""
    manifest.save(paths)
    RunLedger(paths).set_status(
        "scoring",
        batches_total=manifest.batches_total,
        window_end_year=manifest.window_end_year,
        providers_scored=manifest.providers_scored,
        stages=stage_progress(paths),
        input_fingerprint=manifest.input_fingerprint,  # a Postgres run's, from its parts
    )


def combine_and_finish(paths: RunPaths) -> RunManifest:
    """The last stage's gather, then the manifest batches read (every engine's end of step 1)."""
    manifest = combine(paths)
    finish_prepare(paths, manifest)
    return manifest


def prepare(
    paths: RunPaths,
    data_dir: Path | None,
    cfg: Settings,
    run_tasks: StageRunner = run_serially,
    *,
    database_url: str | None = None,
) -> RunManifest:
    """Step 1 of a full run over a dataset directory, or (data_dir None) over Postgres
    (the export stage reads DATABASE_URL in each task's process): the stages, fanned out by
    `run_tasks`; records status, per-stage progress and timing in the ledger."""
    if data_dir is None:
        begin_prepare_from_postgres(paths, database_url, cfg)
    else:
        begin_prepare(paths, data_dir, cfg)
    ledger = RunLedger(paths)
    with ledger.step("prepare"):
        manifest = run_stages(paths, run_tasks)
    finish_prepare(paths, manifest)
    return manifest
