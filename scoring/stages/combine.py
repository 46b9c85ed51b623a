"""Stage combine (single): the shards gathered into the run's statistics, quarantine and
counts, and the manifest batches read."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from scoring.config import Settings
from scoring.inputs.quarantine import QUARANTINE_SCHEMA, ROW
from scoring.methodology.peer_stats import (
    FALLBACK_KEYS,
    GROWTH_KEYS,
    PRIMARY_KEYS,
)
from scoring.runs.manifest import RunManifest
from scoring.runs.plan import plan_path, read_plan, run_fingerprint, window_path
from scoring.runs.store import (
    RunPaths,
    read_json,
    read_parquet_named,
    write_json_atomic,
    write_parquet_atomic,
)
from scoring.stages.aggregate import EXCLUDED_MEMBER_SCHEMA, EXCLUSION_SCHEMA
from scoring.stages.peer_groups import member_count_files
from scoring.stages.stage_files import done_marker, graph_file, scan_parts, stage_parts

CHAIN_COLUMNS = ["chain_provider_count", "chain_excluded_count", "owner_excluded"]


EXCLUSIONS_STAT = "exclusions"  # every valid LEIE row with an NPI: what `explain` lists


EXPLAIN_CHAIN_STATS = ("ownership_entities", "chain_excluded")  # per matched SNF, for `explain`


def _global_groups(
    paths: RunPaths, keys: list[str], stats: str, ranks: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The peer buckets' groups numbered as one table (sorted by key), ranks renumbered."""
    parts = stage_parts(paths, "peer_stats", f"{stats}.parquet")
    frames = [
        read_parquet_named(p).with_columns(pl.lit(i).alias("__part")) for i, p in enumerate(parts)
    ]
    groups = pl.concat(frames).sort(keys).with_row_index("__global")
    ids = groups.select("__part", "group_id", "__global")
    rank_frames = [
        read_parquet_named(p).with_columns(pl.lit(i).alias("__part"))
        for i, p in enumerate(stage_parts(paths, "peer_stats", f"{ranks}.parquet"))
    ]
    rank = (
        pl.concat(rank_frames)
        .join(ids, on=["__part", "group_id"])
        .select(pl.col("__global").alias("group_id"), "m1", "n_eq", "n_le")
        .sort("m1", "group_id")
    )
    stats_table = groups.drop("group_id", "__part").rename({"__global": "group_id"})
    return stats_table, rank


def quarantine_rows(paths: RunPaths, *, partial: bool = False) -> pl.DataFrame:
    """Every quarantined row, in the order one whole-table pass lists them (`partial`: only
    the ingest stage's, for a run that ends at reduce)."""
    empty = pl.DataFrame(schema=QUARANTINE_SCHEMA)

    def parts(stage: str, name: str, *, by_row: bool) -> pl.DataFrame:
        frame = scan_parts(stage_parts(paths, stage, name), dict(QUARANTINE_SCHEMA))
        return frame.sort(ROW) if by_row else frame

    if partial:
        names = ("q-payments.parquet", "q-providers.parquet", "q-exclusions.parquet")
        return pl.concat([empty, *(parts("ingest", name, by_row=False) for name in names)])
    return pl.concat(
        [
            empty,
            parts("ingest", "q-payments.parquet", by_row=False),
            parts("aggregate", "q-payments.parquet", by_row=True),
            parts("ingest", "q-providers.parquet", by_row=False),
            parts("aggregate", "q-providers.parquet", by_row=True),
            parts("ingest", "q-exclusions.parquet", by_row=False),
            read_parquet_named(graph_file(paths, "quarantine")),
        ]
    )


def _ownership_stats(paths: RunPaths, cfg: Settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per matched SNF the chain totals (partial counts summed); per provider its SNF's."""
    matched = scan_parts(
        stage_parts(paths, "aggregate", "ownership.parquet"),
        {"npi": pl.Int64(), "snf_entity_id": pl.String()},
    )
    if cfg.graph_mode == "neo4j-live":
        return matched, pl.DataFrame(
            schema={
                "snf_entity_id": pl.String,
                **{c: pl.Int64 for c in CHAIN_COLUMNS[:2]},
                "owner_excluded": pl.Boolean,
            }
        )
    members = scan_parts(
        stage_parts(paths, "aggregate", "snf_members.parquet"),
        {"snf": pl.String(), "members": pl.Int64(), "excluded": pl.Int64()},
    )
    totals = members.group_by("snf").agg(pl.col("members").sum(), pl.col("excluded").sum())
    owner_excluded = read_parquet_named(graph_file(paths, "owner_excluded")).with_columns(
        pl.lit(True).alias("owner_excluded")
    )
    per_snf = (
        matched.select(pl.col("snf_entity_id").alias("snf"))
        .unique()
        .join(totals, on="snf", how="left")
        .join(owner_excluded, on="snf", how="left")
        .select(
            pl.col("snf").alias("snf_entity_id"),
            pl.col("members").fill_null(0).alias("chain_provider_count"),
            pl.col("excluded").fill_null(0).alias("chain_excluded_count"),
            pl.col("owner_excluded").fill_null(False),
        )
        .sort("snf_entity_id")
    )
    per_provider = matched.join(per_snf, on="snf_entity_id", how="left").sort("npi")
    return per_provider, per_snf


def _chain_detail(paths: RunPaths, per_snf: pl.DataFrame, cfg: Settings) -> dict[str, pl.DataFrame]:
    """For `explain`, per matched SNF: its chain and group entities with their hop distances
    and EXCLUDED_BY links, and its excluded chain providers."""
    snfs = per_snf.select(pl.col("snf_entity_id").alias("snf"))
    excluded = scan_parts(
        stage_parts(paths, "aggregate", "snf_excluded.parquet"), EXCLUDED_MEMBER_SCHEMA
    )
    if cfg.graph_mode == "neo4j-live":  # each batch asked Neo4j: no graph in the run
        entities = pl.DataFrame(
            schema={"snf_entity_id": pl.String, "entity_id": pl.String, "name": pl.String,
                    "entity_type": pl.String, "up_hops": pl.Int32, "down_hops": pl.Int32,
                    "excluded_by": pl.Boolean}
        )  # fmt: skip
    else:
        flagged = read_parquet_named(graph_file(paths, "flagged"))
        entities = (
            read_parquet_named(graph_file(paths, "groups"))
            .join(snfs, on="snf", how="semi")
            .join(
                read_parquet_named(graph_file(paths, "entities")),
                left_on="node",
                right_on="entity_id",
                how="left",
            )
            .with_columns(pl.col("node").is_in(flagged["node"].implode()).alias("excluded_by"))
            .select(
                pl.col("snf").alias("snf_entity_id"),
                pl.col("node").alias("entity_id"),
                "name",
                "entity_type",
                "up_hops",
                "down_hops",
                "excluded_by",
            )
            .sort("snf_entity_id", "entity_id")
        )
    members = excluded.join(snfs, on="snf", how="semi").rename({"snf": "snf_entity_id"})
    return {"ownership_entities": entities, "chain_excluded": members.sort("snf_entity_id", "npi")}


def combine(paths: RunPaths) -> RunManifest:
    """Gather the shards into the run's statistics, quarantine, counts and manifest."""
    data_dir, cfg, shards = read_plan(paths)
    window = read_json(window_path(paths))
    for keys, stats, ranks in (
        (PRIMARY_KEYS, "billing_primary", "m1_rank_primary"),
        (FALLBACK_KEYS, "billing_fallback", "m1_rank_fallback"),
    ):
        table, rank = _global_groups(paths, keys, stats, ranks)
        write_parquet_atomic(table, paths.stat(stats))
        write_parquet_atomic(rank, paths.stat(ranks))
    growth = pl.concat(
        [read_parquet_named(p) for p in stage_parts(paths, "peer_stats", "growth.parquet")]
    )
    write_parquet_atomic(growth.sort(GROWTH_KEYS), paths.stat("growth"))
    ownership, per_snf = _ownership_stats(paths, cfg)
    write_parquet_atomic(ownership, paths.stat("ownership"))
    write_parquet_atomic(per_snf, paths.stat("ownership_snf"))
    for name, frame in _chain_detail(paths, per_snf, cfg).items():
        write_parquet_atomic(frame, paths.stat(name))
    leie = scan_parts(stage_parts(paths, "aggregate", "exclusions.parquet"), EXCLUSION_SCHEMA)
    leie = leie.filter(pl.col("npi").is_not_null()).sort("npi", "exclusion_id")
    write_parquet_atomic(leie, paths.stat(EXCLUSIONS_STAT))
    digests = scan_parts(
        stage_parts(paths, "aggregate", "npi_digest.parquet"),
        {"npi": pl.Int64(), "digest": pl.Int64()},
    )
    write_parquet_atomic(digests.sort("npi"), paths.stat("npi_digest"))
    quarantine = quarantine_rows(paths)
    write_parquet_atomic(quarantine, paths.quarantine)
    sums: dict[str, int] = {}
    for b in range(shards):
        for key, value in read_json(done_marker(paths, "aggregate", b)).items():
            if key != "quarantined_rows":
                sums[key] = sums.get(key, 0) + int(value)
    counts = {
        **sums,
        "quarantined_rows": quarantine.height,
        "window_end_year": window["window_end_year"],
        "window_end_reason": window["window_end_reason"],
    }
    write_json_atomic(counts, paths.input_counts)
    plan = read_json(plan_path(paths))
    fingerprint = plan["fingerprint"] or run_fingerprint(data_dir, cfg)
    return RunManifest(
        run_id=paths.run_id,
        kind="full",
        source=str(Path(data_dir).resolve()),
        window_end_year=int(window["window_end_year"]),
        batches_total=sum(window["batches"]),
        batch_size=cfg.batch_size,
        providers_scored=sums["providers_scored"],
        input_fingerprint=fingerprint,
        settings=plan["settings"],
        member_counts=len(member_count_files(paths)) == shards,
    )
