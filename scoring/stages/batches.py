"""Cutting a sorted population into score batches (each batch gets only its own rows)."""

from __future__ import annotations

import polars as pl

from scoring.runs.store import RunStore, batch_key


def _offsets(frame: pl.DataFrame, starts: pl.Series) -> list[int]:
    return [*frame["npi"].search_sorted(starts, side="left").to_list(), frame.height]


def cut_batches(
    py: pl.DataFrame,
    providers: pl.DataFrame,
    batch_size: int,
    programs: pl.DataFrame | None = None,
) -> list[dict[str, pl.DataFrame]]:
    """Batches of `batch_size` providers, each with its providers, provider_years and
    (when given) programs.

    Every frame must be sorted by npi: slice bounds come from a binary search.
    `programs`: the providers' program totals (T-2..T), kept beside the slice for `explain`.
    """
    n = providers.height
    total = -(-n // batch_size)
    starts = providers["npi"].gather(list(range(0, n, batch_size)))
    py_offsets = _offsets(py, starts)
    program_offsets = _offsets(programs, starts) if programs is not None else []
    batches = []
    for k in range(total):
        lo, hi = k * batch_size, min(n, (k + 1) * batch_size)
        a, b = py_offsets[k], py_offsets[k + 1]
        batch = {"providers": providers.slice(lo, hi - lo), "provider_years": py.slice(a, b - a)}
        if programs is not None:
            a, b = program_offsets[k], program_offsets[k + 1]
            batch["programs"] = programs.slice(a, b - a)
        batches.append(batch)
    return batches


def write_batches(
    store: RunStore,
    py: pl.DataFrame,
    providers: pl.DataFrame,
    batch_size: int,
    *,
    first: int = 0,
    programs: pl.DataFrame | None = None,
) -> int:
    """Write batches first, first+1, ... of `batch_size` providers (`cut_batches`); returns
    how many."""
    batches = cut_batches(py, providers, batch_size, programs)
    for k, batch in enumerate(batches):
        for name, frame in batch.items():
            store.write_frame(batch_key(first + k, name), frame)
    return len(batches)
