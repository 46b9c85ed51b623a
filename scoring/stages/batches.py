"""Cutting a sorted population into score batches (each batch gets only its own rows)."""

from __future__ import annotations

import polars as pl

from scoring.runs.store import RunPaths, write_parquet_atomic


def _offsets(frame: pl.DataFrame, starts: pl.Series) -> list[int]:
    return [*frame["npi"].search_sorted(starts, side="left").to_list(), frame.height]


def write_batches(
    paths: RunPaths,
    py: pl.DataFrame,
    providers: pl.DataFrame,
    batch_size: int,
    *,
    first: int = 0,
    programs: pl.DataFrame | None = None,
) -> int:
    """Write batches first, first+1, ... of `batch_size` providers; returns how many.

    Every frame must be sorted by npi: slice bounds come from a binary search.
    `programs`: the providers' program totals (T-2..T), kept beside the slice for `explain`.
    """
    n = providers.height
    total = -(-n // batch_size)
    starts = providers["npi"].gather(list(range(0, n, batch_size)))
    py_offsets = _offsets(py, starts)
    program_offsets = _offsets(programs, starts) if programs is not None else []
    for k in range(total):
        lo, hi = k * batch_size, min(n, (k + 1) * batch_size)
        write_parquet_atomic(providers.slice(lo, hi - lo), paths.batch_providers(first + k))
        a, b = py_offsets[k], py_offsets[k + 1]
        write_parquet_atomic(py.slice(a, b - a), paths.batch_provider_years(first + k))
        if programs is not None:
            a, b = program_offsets[k], program_offsets[k + 1]
            write_parquet_atomic(programs.slice(a, b - a), paths.batch_programs(first + k))
    return total
