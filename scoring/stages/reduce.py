"""Stage reduce (single): the window end T, each bucket's batches, and the ownership graph."""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.errors import InputError
from scoring.inputs.contract import dataset_file, read_dataset
from scoring.inputs.dataset import DataSource
from scoring.inputs.quarantine import QUARANTINE_SCHEMA
from scoring.inputs.validation import PAYMENTS, validate_graph
from scoring.methodology.components.ownership import (
    OwnershipGraph,
    chain_closures,
    owners_excluded,
)
from scoring.methodology.population import window_end
from scoring.runs.ledger import RunLedger
from scoring.runs.plan import check_inputs_unchanged, read_plan, write_window
from scoring.runs.store import QUARANTINE, RunPaths, run_store
from scoring.stages.combine import quarantine_rows
from scoring.stages.graph_source import neo4j_snapshot, neo4j_verify
from scoring.stages.stage_files import done_summaries, graph_key


def window_of(
    counts: list[dict[str, Any]], cfg: Settings, source: DataSource
) -> dict[str, Any]:
    """T from the count tasks' exact per-bucket counts (in bucket order), each bucket's
    population in T's window, its batches and its first batch number. `source`, for the
    message when the window holds nobody."""
    per_year = (
        pl.DataFrame(
            [row for c in counts for row in c["per_year"]],
            schema={"year": pl.Int32, "npis": pl.Int64},
            orient="row",
        )
        .group_by("year")
        .agg(pl.col("npis").sum())
        .sort("year")
    )
    try:
        end = window_end(per_year, cfg)
    except InputError as exc:  # every payment row refused: say which table, and why to look
        payments = dataset_file(source, PAYMENTS)
        msg = f"{payments}: {exc} (every row quarantined: see the run's quarantine.parquet)"
        raise InputError(msg) from None
    population = [int(c["window_population"].get(str(end.year), 0)) for c in counts]
    if sum(population) == 0:
        first = end.year - cfg.window_years + 1
        msg = f"{source}: no provider has a valid payment row in the window {first}-{end.year}"
        raise InputError(msg)
    batches = [-(-n // cfg.batch_size) for n in population]
    return {
        "window_end_year": end.year,
        "window_end_reason": end.reason,
        "population": population,
        "batch_offsets": [sum(batches[:b]) for b in range(len(counts))],
        "batches": batches,
    }


def graph_tables(
    graph: OwnershipGraph,
    quarantined: list[pl.DataFrame],
    excluded: pl.DataFrame | None,
    cfg: Settings,
) -> dict[str, pl.DataFrame]:
    """Ownership steps 2-3 once for every SNF of the graph (small): the tables each
    aggregate task and combine read, by name (`excluded`: the graph's LEIE links, Neo4j)."""
    entities = graph.entities.collect()
    snfs = entities.filter(pl.col("entity_type") == "SNF").select(pl.col("entity_id").alias("snf"))
    chains, closures = chain_closures(snfs.lazy(), graph, cfg)
    flagged = graph.entity_exclusions.select(pl.col("entity_id").alias("node")).unique().collect()
    tables = {
        "entities": entities,
        "chains": chains,
        "closures": closures,
        "owner_excluded": owners_excluded(chains, closures, flagged),
        "flagged": flagged.sort("node"),
    }
    if excluded is not None:
        tables["excluded_npis"] = excluded
    q = pl.concat(
        [pl.DataFrame(schema=QUARANTINE_SCHEMA), *[f.cast(QUARANTINE_SCHEMA) for f in quarantined]]
    )  # type: ignore[arg-type]
    return {**tables, "quarantine": q}


def _graph_for_run(
    data_dir: DataSource, cfg: Settings, ledger: RunLedger
) -> dict[str, pl.DataFrame]:
    """The graph tables from the mode's source (neo4j-live: none, each batch asks Neo4j)."""
    if cfg.graph_mode == "neo4j-live":
        neo4j_verify(cfg, ledger)
        return {"quarantine": pl.DataFrame(schema=QUARANTINE_SCHEMA)}
    if cfg.graph_mode == "embedded":
        raw = read_dataset(data_dir, with_graph=True, with_payments=False)
        graph, quarantined = validate_graph(raw)
        if graph is None:
            msg = "the dataset has no ownership graph tables (entities, ownership, ...)"
            raise InputError(msg)
        return graph_tables(graph, quarantined, None, cfg)
    snapshot = neo4j_snapshot(cfg, ledger)
    return graph_tables(snapshot.graph, [], snapshot.excluded_npis, cfg)


def reduce(paths: RunPaths, ledger: RunLedger) -> dict[str, Any]:
    """T from the buckets' exact counts; each bucket's providers and batch numbers; the graph."""
    check_inputs_unchanged(paths)  # the graph is read here
    data_dir, cfg, shards = read_plan(paths)
    store = run_store(paths)
    try:
        window = window_of(done_summaries(store, "count", shards), cfg, data_dir)
    except InputError:
        # nothing to score: the rows the rules refused are the answer to "why", so keep them
        # (exact copies and graph rows are judged by later stages, which do not run)
        store.write_frame(QUARANTINE, quarantine_rows(store, partial=True))
        raise
    for name, frame in _graph_for_run(data_dir, cfg, ledger).items():
        store.write_frame(graph_key(name), frame)
    write_window(paths, window)
    return window
