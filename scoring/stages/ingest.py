"""Stage ingest x S: a slice of each input through the row rules, good rows bucketed by NPI.

The rules themselves are scoring.inputs.validation's (`check_slice` reads the slice from the
dataset in chunks, so memory follows the chunk); this stage buckets what they keep."""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.inputs.contract import table_rows
from scoring.inputs.dataset import DataSource
from scoring.inputs.npi import npi_to_int
from scoring.inputs.validation import PAYMENTS, check_slice
from scoring.runs.plan import check_inputs_unchanged, read_plan
from scoring.runs.store import RunPaths, run_store
from scoring.stages.stage_files import StageTask, npi_bucket, share

# input table -> its stage file name and its NPI as an integer (providers keep the string)
TABLES = {
    PAYMENTS: ("payments", pl.col("npi")),
    "providers": ("providers", npi_to_int(pl.col("npi"))),
    "exclusions": ("exclusions", pl.col("npi")),
}


def checked_slice(
    data_dir: DataSource, name: str, index: int, shards: int, cfg: Settings
) -> tuple[int, pl.DataFrame, pl.DataFrame]:
    """Slice `index` of one table through its row rules: (rows, good rows, quarantined)."""
    table = table_rows(data_dir, name)
    lo, hi = share(table.total, shards, index)
    return hi - lo, *check_slice(table, name, lo, hi, cfg)


def ingest_summary(
    payment_rows: int, good: dict[str, pl.DataFrame], bad: dict[str, pl.DataFrame]
) -> dict[str, Any]:
    """What the task's done marker records (the good and quarantined frames by file name)."""
    return {
        "payment_rows": payment_rows,
        "payment_rows_valid": good["payments"].height,
        "max_valid_year": good["payments"]["year"].max(),
        "quarantined_rows": sum(frame.height for frame in bad.values()),
    }


def ingest(paths: RunPaths, index: int) -> dict[str, Any]:
    """Slice `index` of each input through the row rules: its bad rows quarantined, its
    good rows bucketed by NPI for the copy rules, judged in aggregate."""
    check_inputs_unchanged(paths)
    data_dir, cfg, shards = read_plan(paths)
    task = StageTask(run_store(paths), "ingest", index)
    good, bad, payment_rows = {}, {}, 0
    for table, (name, npi) in TABLES.items():
        rows, good[name], bad[f"q-{name}"] = checked_slice(data_dir, table, index, shards, cfg)
        payment_rows = rows if table == PAYMENTS else payment_rows
        task.write_buckets({name: good[name]}, npi_bucket(npi, shards), cfg)
        task.write({f"q-{name}": bad[f"q-{name}"]})
    return task.finish(ingest_summary(payment_rows, good, bad))
