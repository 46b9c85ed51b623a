"""Stage peer_stats x G: one peer bucket's groups (medians, MADs, counts, m1 ranks, growth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

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
from scoring.runs.store import (
    RunPaths,
    read_buckets,
    write_parquet_atomic,
)
from scoring.stages.stage_files import (
    BUCKET,
    bucket_rows,
    finish_task,
    npi_bucket,
    stage_dir,
    stage_parts,
    write_buckets,
)

MEMBER_COUNTS = "member_counts"  # peer_stats: each member provider-year's m1 rank counts


def peer_stats(paths: RunPaths, index: int) -> dict[str, Any]:
    """One peer bucket's groups: medians, MADs, counts, m1 rank tables, growth statistics."""
    out = stage_dir(paths, "peer_stats", index)
    key_schema = {"peer_taxonomy": pl.String(), "peer_state": pl.String(), "year": pl.Int32()}
    eligible = bucket_rows(
        paths,
        "aggregate",
        "eligible",
        index,
        {
            "npi": pl.Int64(),
            **key_schema,
            "m1": pl.Float64(),
            "x1": pl.Float64(),
            "x2": pl.Float64(),
            "x3": pl.Float64(),
        },
    ).lazy()
    growth = bucket_rows(
        paths, "aggregate", "growth", index, {**key_schema, "g": pl.Float64()}
    ).lazy()
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
    _, cfg, shards = read_plan(paths)
    counts = member_rank_counts(eligible, primary.lazy(), rank_p.lazy(), PRIMARY_KEYS, "p").join(
        member_rank_counts(eligible, fallback.lazy(), rank_f.lazy(), FALLBACK_KEYS, "f"),
        on=["npi", "year"],
    )
    write_buckets(counts.collect(), out, MEMBER_COUNTS, npi_bucket(pl.col("npi"), shards), cfg)
    for name, frame in {
        "billing_primary": primary,
        "billing_fallback": fallback,
        "m1_rank_primary": rank_p,
        "m1_rank_fallback": rank_f,
        "growth": growth_stats,
    }.items():
        write_parquet_atomic(frame, out / f"{name}.parquet")
    return finish_task(paths, "peer_stats", index, {"groups": primary.height})


def batch_member_counts(paths: RunPaths, npis: pl.Series, shards: int) -> pl.DataFrame:
    """The m1 rank counts of a batch's member provider-years, from every peer bucket's
    file (one NPI bucket's row group each: a batch holds one bucket's NPIs). `shards`:
    the run's (from run.json), so a batch never depends on plan.json."""
    files = member_count_files(paths)
    if len(files) != shards:
        msg = f"run {paths.run_id}: {len(files)} of {shards} peer_stats shards hold rank counts"
        raise RunStateError(msg)
    if npis.is_empty():
        msg = f"run {paths.run_id}: a batch holds no NPIs"
        raise RunStateError(msg)
    bucket = int(npis[0]) % shards
    if not (npis % shards == bucket).all():
        msg = f"run {paths.run_id}: a batch holds NPIs of more than one NPI bucket"
        raise RunStateError(msg)
    rows = read_buckets(files, BUCKET, bucket)
    return rows.join(npis.to_frame("npi"), on="npi", how="semi")


def member_count_files(paths: RunPaths) -> list[Path]:
    return stage_parts(paths, "peer_stats", f"{MEMBER_COUNTS}.parquet")
