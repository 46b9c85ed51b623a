"""Stage count x B: distinct NPIs per year, and the window populations per candidate T."""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.inputs.validation import (
    CHECKED_PAYMENT_SCHEMA,
)
from scoring.methodology.population import in_window
from scoring.runs.plan import read_plan
from scoring.runs.store import RunPaths, run_store
from scoring.stages.stage_files import StageTask

NPI_LIMIT = 10**10  # a valid NPI has ten digits


def _distinct_npi_years(rows: pl.DataFrame, cfg: Settings) -> pl.DataFrame:
    """The distinct (npi, year) pairs of valid rows. Packed into one Int64 when the valid
    years make that exact (a quarter of the time of a two-column unique); never when the
    configured year range could overflow it."""
    span = cfg.max_valid_year - cfg.min_valid_year + 1
    n0, n1, y0, y1 = rows.select(
        pl.col("npi").min().alias("n0"),
        pl.col("npi").max().alias("n1"),
        pl.col("year").min().alias("y0"),
        pl.col("year").max().alias("y1"),
    ).row(0)
    exact = rows.is_empty() or (
        n0 >= 0 and n1 < NPI_LIMIT and y0 >= cfg.min_valid_year and y1 <= cfg.max_valid_year
    )
    if not exact or not 0 < span <= (2**63 - 1) // NPI_LIMIT:
        return rows.unique()
    key = pl.col("npi") * span + (pl.col("year") - cfg.min_valid_year)
    packed = rows.select(key.alias("key")).unique()
    return packed.select(
        (pl.col("key") // span).alias("npi"),
        (pl.col("key") % span + cfg.min_valid_year).cast(pl.Int32).alias("year"),
    )


def count_bucket(rows: pl.DataFrame, cfg: Settings) -> dict[str, Any]:
    """Distinct NPIs per year, and per candidate T the NPIs with a year in T's window, of
    one NPI bucket's valid (npi, year) rows.

    Counted where NPIs are whole (one bucket), so the counts add up across buckets. An
    exact copy of a valid row has the same (npi, year), so duplicates change nothing here.
    """
    pairs = _distinct_npi_years(rows, cfg)
    per_year = pairs.group_by("year").agg(pl.len().alias("npis")).sort("year")
    candidates: set[int] = set()
    if not pairs.is_empty():
        first, last = int(pairs["year"].min()), int(pairs["year"].max())  # type: ignore[arg-type]
        candidates = set(range(first, last + cfg.window_years))
    if cfg.as_of_year is not None:
        candidates.add(cfg.as_of_year)
    window = {str(t): pairs.filter(in_window(t, cfg))["npi"].n_unique() for t in sorted(candidates)}
    return {"per_year": per_year.rows(), "window_population": window}


def count(paths: RunPaths, index: int) -> dict[str, Any]:
    """NPI bucket `index` of every ingest task's valid payment rows, counted."""
    _, cfg, _ = read_plan(paths)
    task = StageTask(run_store(paths), "count", index)
    rows = task.bucket("ingest", "payments", CHECKED_PAYMENT_SCHEMA, columns=["npi", "year"])
    return task.finish(count_bucket(rows, cfg))
