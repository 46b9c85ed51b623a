"""Stage reduce (single): the window end T, each bucket's batches, and the ownership graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.errors import InputError
from scoring.inputs.contract import read_dataset
from scoring.inputs.quarantine import QUARANTINE_SCHEMA
from scoring.inputs.validation import (
    validate_graph,
)
from scoring.methodology.components.ownership import ownership_groups
from scoring.methodology.population import window_end
from scoring.runs.ledger import RunLedger
from scoring.runs.plan import check_inputs_unchanged, read_plan, window_path
from scoring.runs.store import (
    RunPaths,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
)
from scoring.stages.combine import quarantine_rows
from scoring.stages.graph_source import neo4j_snapshot, neo4j_verify
from scoring.stages.stage_files import done_marker, graph_file


def _graph_for_run(paths: RunPaths, data_dir: Path, cfg: Settings, ledger: RunLedger) -> None:
    """Ownership steps 2-3 once for every SNF of the graph (small), from the mode's source."""
    if cfg.graph_mode == "neo4j-live":
        neo4j_verify(cfg, ledger)
        write_parquet_atomic(
            pl.DataFrame(schema=QUARANTINE_SCHEMA), graph_file(paths, "quarantine")
        )
        return
    if cfg.graph_mode == "embedded":
        raw = read_dataset(data_dir, with_graph=True, with_payments=False)
        graph, quarantined = validate_graph(raw)
        if graph is None:
            msg = "the dataset has no ownership graph tables (entities, ownership, ...)"
            raise InputError(msg)
        excluded = None
    else:
        snapshot = neo4j_snapshot(cfg, ledger)
        graph, quarantined, excluded = snapshot.graph, [], snapshot.excluded_npis
    entities = graph.entities.collect()
    snfs = entities.filter(pl.col("entity_type") == "SNF").select(pl.col("entity_id").alias("snf"))
    groups = ownership_groups(snfs.lazy(), graph, cfg).collect()
    flagged = graph.entity_exclusions.select(pl.col("entity_id").alias("node")).unique().collect()
    owner_excluded = groups.join(flagged, on="node", how="semi").select("snf").unique().sort("snf")
    write_parquet_atomic(entities, graph_file(paths, "entities"))
    write_parquet_atomic(groups, graph_file(paths, "groups"))
    write_parquet_atomic(owner_excluded, graph_file(paths, "owner_excluded"))
    write_parquet_atomic(flagged.sort("node"), graph_file(paths, "flagged"))
    if excluded is not None:
        write_parquet_atomic(excluded, graph_file(paths, "excluded_npis"))
    q = pl.concat(
        [pl.DataFrame(schema=QUARANTINE_SCHEMA), *[f.cast(QUARANTINE_SCHEMA) for f in quarantined]]
    )  # type: ignore[arg-type]
    write_parquet_atomic(q, graph_file(paths, "quarantine"))


def reduce(paths: RunPaths, ledger: RunLedger) -> dict[str, Any]:
    """T from the buckets' exact counts; each bucket's providers and batch numbers; the graph."""
    check_inputs_unchanged(paths)  # the graph is read here
    data_dir, cfg, shards = read_plan(paths)
    counts = [read_json(done_marker(paths, "count", b)) for b in range(shards)]
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
        population = [int(c["window_population"].get(str(end.year), 0)) for c in counts]
        if sum(population) == 0:
            first = end.year - cfg.window_years + 1
            msg = (
                f"{data_dir}: no provider has a valid payment row in the window {first}-{end.year}"
            )
            raise InputError(msg)
    except InputError:
        # nothing to score: the rows the rules refused are the answer to "why", so keep them
        # (exact copies and graph rows are judged by later stages, which do not run)
        write_parquet_atomic(quarantine_rows(paths, partial=True), paths.quarantine)
        raise
    batches = [-(-n // cfg.batch_size) for n in population]
    offsets = [sum(batches[:b]) for b in range(shards)]
    _graph_for_run(paths, data_dir, cfg, ledger)
    window = {
        "window_end_year": end.year,
        "window_end_reason": end.reason,
        "population": population,
        "batch_offsets": offsets,
        "batches": batches,
    }
    write_json_atomic(window, window_path(paths))
    return window
