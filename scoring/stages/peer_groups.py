"""Stage peer_stats x G: one peer bucket's groups (medians, MADs, counts, m1 ranks, growth)."""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.methodology.peer_stats import (
    FALLBACK_KEYS,
    PRIMARY_KEYS,
    billing_group_stats,
    growth_group_stats,
    m1_rank_table,
    member_rank_counts,
)
from scoring.runs.plan import read_plan
from scoring.runs.store import RunPaths, RunStore, run_store
from scoring.stages.stage_files import BUCKET, StageTask, npi_bucket, part_keys

MEMBER_COUNTS = "member_counts"  # peer_stats: each member provider-year's m1 rank counts


KEY_SCHEMA: dict[str, pl.DataType] = {
    "peer_taxonomy": pl.String(),
    "peer_state": pl.String(),
    "year": pl.Int32(),
}
ELIGIBLE_SCHEMA: dict[str, pl.DataType] = {
    "npi": pl.Int64(),
    **KEY_SCHEMA,
    **{c: pl.Float64() for c in ("m1", "x1", "x2", "x3")},
}
GROWTH_SCHEMA: dict[str, pl.DataType] = {**KEY_SCHEMA, "g": pl.Float64()}


def peer_group_stats(
    eligible: pl.LazyFrame, growth: pl.LazyFrame
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """One peer bucket's groups (every group is whole in one bucket): each member
    provider-year's m1 rank counts, and the group tables (medians, MADs, counts, m1 rank
    tables, growth statistics) by name."""
    primary, fallback = pl.collect_all(
        [billing_group_stats(eligible, PRIMARY_KEYS), billing_group_stats(eligible, FALLBACK_KEYS)]
    )
    rank_p, rank_f, growth_stats = pl.collect_all(
        [
            m1_rank_table(eligible, primary.lazy(), PRIMARY_KEYS),
            m1_rank_table(eligible, fallback.lazy(), FALLBACK_KEYS),
            growth_group_stats(growth),
        ]
    )
    counts = member_rank_counts(eligible, primary.lazy(), rank_p.lazy(), PRIMARY_KEYS, "p").join(
        member_rank_counts(eligible, fallback.lazy(), rank_f.lazy(), FALLBACK_KEYS, "f"),
        on=["npi", "year"],
    )
    return counts.collect(), {
        "billing_primary": primary,
        "billing_fallback": fallback,
        "m1_rank_primary": rank_p,
        "m1_rank_fallback": rank_f,
        "growth": growth_stats,
    }


def peer_stats(paths: RunPaths, index: int) -> dict[str, Any]:
    """Peer bucket `index` of every aggregate task's provider-years, through its groups."""
    _, cfg, shards = read_plan(paths)
    task = StageTask(run_store(paths), "peer_stats", index)
    eligible = task.bucket("aggregate", "eligible", ELIGIBLE_SCHEMA).lazy()
    growth = task.bucket("aggregate", "growth", GROWTH_SCHEMA).lazy()
    return write_peer_stats(task, *peer_group_stats(eligible, growth), shards, cfg)


def write_peer_stats(
    task: StageTask,
    counts: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    shards: int,
    cfg: Settings,
    *,
    finish: bool = True,
) -> dict[str, Any]:
    """A peer bucket's rank counts by NPI bucket and its group tables, then (`finish`) its
    done marker."""
    task.write_buckets({MEMBER_COUNTS: counts}, npi_bucket(pl.col("npi"), shards), cfg)
    task.write(tables)
    summary = {"groups": tables["billing_primary"].height}
    return task.finish(summary) if finish else summary


def batch_member_counts(paths: RunPaths, npis: pl.Series, shards: int) -> pl.DataFrame:
    """The m1 rank counts of a batch's member provider-years, from every peer bucket's
    file (one NPI bucket's rows each: a batch holds one bucket's NPIs). `shards`:
    the run's (from run.json), so a batch never depends on plan.json."""
    store = run_store(paths)
    keys = member_count_keys(store)
    if len(keys) != shards:
        msg = f"run {paths.run_id}: {len(keys)} of {shards} peer_stats shards hold rank counts"
        raise RunStateError(msg)
    if npis.is_empty():
        msg = f"run {paths.run_id}: a batch holds no NPIs"
        raise RunStateError(msg)
    bucket = int(npis[0]) % shards
    if not (npis % shards == bucket).all():
        msg = f"run {paths.run_id}: a batch holds NPIs of more than one NPI bucket"
        raise RunStateError(msg)
    rows = store.read_bucket(keys, BUCKET, bucket)
    return rows.join(npis.to_frame("npi"), on="npi", how="semi")


def member_count_keys(store: RunStore) -> list[str]:
    return part_keys(store, "peer_stats", f"{MEMBER_COUNTS}.parquet")
