"""Stage ingest x S: a slice of each input through the row rules, good rows bucketed by NPI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.inputs.contract import table_rows
from scoring.inputs.npi import npi_to_int
from scoring.inputs.validation import (
    PAYMENTS,
    check_slice,
)
from scoring.runs.plan import check_inputs_unchanged, read_plan
from scoring.runs.store import (
    RunPaths,
    write_parquet_atomic,
)
from scoring.stages.stage_files import finish_task, npi_bucket, share, stage_dir, write_buckets


def _checked_slice(
    data_dir: Path, name: str, index: int, shards: int, cfg: Settings
) -> tuple[int, pl.DataFrame, pl.DataFrame]:
    """Slice `index` of one table through its row rules: (rows, good rows, quarantined)."""
    table = table_rows(data_dir, name)
    lo, hi = share(table.total, shards, index)
    return hi - lo, *check_slice(table, name, lo, hi, cfg)


def ingest(paths: RunPaths, index: int) -> dict[str, Any]:
    """Slice `index` of each input through the row rules (scoring.inputs.validation): its bad rows
    quarantined, its good rows bucketed by NPI for the copy rules, judged in aggregate."""
    check_inputs_unchanged(paths)
    data_dir, cfg, shards = read_plan(paths)
    out = stage_dir(paths, "ingest", index)
    rows, payments, bad = _checked_slice(data_dir, PAYMENTS, index, shards, cfg)
    write_buckets(payments, out, "payments", npi_bucket(pl.col("npi"), shards), cfg)
    write_parquet_atomic(bad, out / "q-payments.parquet")
    _, providers, bad_providers = _checked_slice(data_dir, "providers", index, shards, cfg)
    write_buckets(providers, out, "providers", npi_bucket(npi_to_int(pl.col("npi")), shards), cfg)
    write_parquet_atomic(bad_providers, out / "q-providers.parquet")
    _, exclusions, bad_exclusions = _checked_slice(data_dir, "exclusions", index, shards, cfg)
    write_buckets(exclusions, out, "exclusions", npi_bucket(pl.col("npi"), shards), cfg)
    write_parquet_atomic(bad_exclusions, out / "q-exclusions.parquet")
    summary = {
        "payment_rows": rows,
        "payment_rows_valid": payments.height,
        "max_valid_year": payments["year"].max(),
        "quarantined_rows": bad.height + bad_providers.height + bad_exclusions.height,
    }
    return finish_task(paths, "ingest", index, summary)
