"""Where the stages keep their files, and how a stage reads another's buckets.

A task writes only its own directory (write-then-rename); a bucketed file has a row group
per bucket, so a task reads its bucket from every task's file with one scan."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.inputs.quarantine import ROW, ROW_HASH
from scoring.runs.store import (
    RunPaths,
    read_buckets,
    read_json,
    read_parquet_named,
    write_bucketed_atomic,
    write_json_atomic,
)

BUCKET = "__bucket"  # the column of bucketed stage files (a row group per value)


PLAIN = (ROW, ROW_HASH, "payments", "m1", "x1", "x2", "x3", "g")  # stage columns seldom repeating


def stage_root(paths: RunPaths) -> Path:
    return paths.stages_dir


def stage_dir(paths: RunPaths, stage: str, index: int) -> Path:
    return stage_root(paths) / stage / f"{index:05d}"


def done_marker(paths: RunPaths, stage: str, index: int) -> Path:
    return stage_dir(paths, stage, index) / "done.json"


def task_record(paths: RunPaths, stage: str, index: int) -> Path:
    return stage_dir(paths, stage, index) / "task.json"


def graph_file(paths: RunPaths, name: str) -> Path:
    return stage_root(paths) / "graph" / f"{name}.parquet"


def stage_parts(paths: RunPaths, stage: str, name: str) -> list[Path]:
    """One stage's part files of one name, in shard order (slice order = source row order)."""
    return sorted((stage_root(paths) / stage).glob(f"*/{name}"))


def scan_parts(files: list[Path], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not files:
        return pl.DataFrame(schema=schema)
    return pl.concat([read_parquet_named(f) for f in files], how="vertical_relaxed")


def shards_done(paths: RunPaths, stage: str) -> list[int]:
    return sorted(int(p.parent.name) for p in (stage_root(paths) / stage).glob("*/done.json"))


def missing_shards(paths: RunPaths, stage: str, total: int) -> list[int]:
    done = set(shards_done(paths, stage))
    return [i for i in range(total) if i not in done]


def finish_task(paths: RunPaths, stage: str, index: int, summary: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(summary, done_marker(paths, stage, index))
    return summary


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


def write_buckets(
    frame: pl.DataFrame, out: Path, name: str, bucket: pl.Expr, cfg: Settings
) -> None:
    """One file per task and name, a row group per bucket: S files for a stage, not S x B."""
    target = out / f"{name}.parquet"
    write_bucketed_atomic(frame.with_columns(bucket), target, BUCKET, PLAIN, cfg.stage_compression)


def bucket_rows(
    paths: RunPaths,
    stage: str,
    name: str,
    index: int,
    schema: dict[str, pl.DataType],
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Bucket `index` of every task's `name` file of `stage`, in task order (slice order is
    source row order); only `columns`, when given."""
    files = stage_parts(paths, stage, f"{name}.parquet")
    if not files:
        return pl.DataFrame(schema={c: schema[c] for c in columns} if columns else schema)
    return read_buckets(files, BUCKET, index, columns)


def task_records(paths: RunPaths) -> list[dict[str, Any]]:
    """Every finished stage task of this prepare: stage, shard, start, end, host, pid."""
    records = []
    for path in sorted(stage_root(paths).glob("*/*/task.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):  # torn or foreign: not drawn
            stage, shard = path.parent.parent.name, int(path.parent.name)
            records.append({"stage": stage, "shard": shard, **read_json(path)})
    return records
