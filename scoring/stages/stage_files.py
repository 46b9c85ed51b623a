"""The stages' keys in the run store, and how a stage task reads and writes through it.

A task writes only its own keys (stages/<stage>/<task>/...); a bucketed file is sorted by
bucket in row groups with statistics, so a task reads its bucket from every task's file
with one scan that skips the other buckets' row groups. The
names and bytes of these files are what a resume across versions reads: keep them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.runs.store import STAGES, RunPaths, RunStore, run_store

BUCKET = "__bucket"  # the column bucketed stage files are sorted by


DONE = "done.json"  # a task's summary, written last: the task is done
TASK = "task.json"  # when and where a task ran, for the report's timeline


def stage_key(stage: str, index: int, name: str) -> str:
    return f"{STAGES}/{stage}/{index:05d}/{name}"


def graph_key(name: str) -> str:
    """The ownership graph reduce keeps for the run (entities, groups, ...)."""
    return f"{STAGES}/graph/{name}.parquet"


def part_keys(store: RunStore, stage: str, name: str) -> list[str]:
    """One stage's files of one name, in task order (slice order = source row order)."""
    return store.list_keys(f"{STAGES}/{stage}", name)


def read_parts(store: RunStore, keys: list[str], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The frames of `keys` one under the other (`schema` when there are none)."""
    if not keys:
        return pl.DataFrame(schema=schema)
    return pl.concat([store.read_frame(k) for k in keys], how="vertical_relaxed")


def done_summaries(store: RunStore, stage: str, total: int) -> list[dict[str, Any]]:
    """Each task's summary of `stage`, in task order."""
    return [store.read_json(stage_key(stage, i, DONE)) for i in range(total)]


def shards_done(paths: RunPaths, stage: str) -> list[int]:
    return sorted(int(k.split("/")[-2]) for k in part_keys(run_store(paths), stage, DONE))


def missing_shards(paths: RunPaths, stage: str, total: int) -> list[int]:
    done = set(shards_done(paths, stage))
    return [i for i in range(total) if i not in done]


def share(total: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of slice `index` when `total` rows are cut into `parts` near-equal slices."""
    return total * index // parts, total * (index + 1) // parts


def npi_bucket(npi: pl.Expr, buckets: int) -> pl.Expr:
    """The NPI bucket: all of an NPI's rows, in every table, meet in one bucket."""
    return (npi.fill_null(0) % buckets).cast(pl.Int64).alias(BUCKET)


def peer_bucket(buckets: int) -> pl.Expr:
    """The peer bucket, a function of (taxonomy_10, year): every peer group is whole in one."""
    key = pl.col("peer_taxonomy").hash(seed=0) + pl.col("year").cast(pl.UInt64)
    return (key % buckets).cast(pl.Int64).alias(BUCKET)


def bucket_rows(
    store: RunStore,
    stage: str,
    name: str,
    index: int,
    schema: dict[str, pl.DataType],
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Bucket `index` of every task's `name` file of `stage`, in task order (slice order is
    source row order); only `columns`, when given."""
    keys = part_keys(store, stage, f"{name}.parquet")
    if not keys:
        return pl.DataFrame(schema={c: schema[c] for c in columns} if columns else schema)
    return store.read_bucket(keys, BUCKET, index, columns)


@dataclass(frozen=True)
class StageTask:
    """Task `index` of `stage` as its adapter sees the store: it reads bucket `index` of
    the earlier stages' files and writes its own keys, the done marker last."""

    store: RunStore
    stage: str
    index: int

    def key(self, name: str) -> str:
        return stage_key(self.stage, self.index, name)

    def bucket(
        self,
        stage: str,
        name: str,
        schema: dict[str, pl.DataType],
        columns: list[str] | None = None,
    ) -> pl.DataFrame:
        return bucket_rows(self.store, stage, name, self.index, schema, columns)

    def write(self, frames: dict[str, pl.DataFrame]) -> None:
        """Each frame to <name>.parquet of this task."""
        for name, frame in frames.items():
            self.store.write_frame(self.key(f"{name}.parquet"), frame)

    def write_buckets(
        self, frames: dict[str, pl.DataFrame], bucket: pl.Expr, cfg: Settings
    ) -> None:
        """One file per task and name, sorted by bucket: S files for a stage, not S x B."""
        for name, frame in frames.items():
            self.store.write_bucketed(
                self.key(f"{name}.parquet"),
                frame.with_columns(bucket),
                BUCKET,
                cfg.stage_compression,
            )

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """The done marker: written last, so a task with one has all its files."""
        self.store.write_json(self.key(DONE), summary)
        return summary


def task_records(paths: RunPaths) -> list[dict[str, Any]]:
    """Every finished stage task of this prepare: stage, shard, start, end, host, pid."""
    store = run_store(paths)
    records = []
    for key in store.list_keys(STAGES, TASK):
        with contextlib.suppress(OSError, ValueError, TypeError):  # torn or foreign: not drawn
            stage, shard = key.split("/")[-3], int(key.split("/")[-2])
            records.append({"stage": stage, "shard": shard, **store.read_json(key)})
    return records
