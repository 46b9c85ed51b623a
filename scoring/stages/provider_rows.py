"""The per-NPI and per-provider-year frames a batch is scored from (full and incremental runs)."""

from __future__ import annotations

import polars as pl

from scoring.config import Settings
from scoring.inputs.validation import CleanInputs
from scoring.methodology.peer_stats import billing_metrics
from scoring.methodology.population import in_window, peer_attributes, provider_years, with_growth


def provider_rows(
    attrs: pl.LazyFrame, totals: pl.DataFrame, ownership: pl.DataFrame, excluded: pl.DataFrame
) -> pl.DataFrame:
    """One row per scored NPI: peer attributes, program totals, ownership, LEIE status."""
    return (
        attrs.join(totals.lazy(), on="npi", how="left")
        .join(ownership.lazy(), on="npi", how="left")
        .join(excluded.lazy(), on="npi", how="left")
        .sort("npi")
        .collect()
    )


def provider_year_rows(
    clean: CleanInputs, t: int, cfg: Settings
) -> tuple[pl.DataFrame, pl.LazyFrame, pl.LazyFrame]:
    """Window provider-years with growth, peer attributes and billing metrics; the window
    payment rows; the peer attributes."""
    # collected once each: the window rows feed provider-years, the program amounts and the
    # digests, the peer attributes (a first string per group) both frames
    window = clean.payments.lazy().filter(in_window(t, cfg)).collect().lazy()
    py = provider_years(window, cfg).collect().lazy()
    population = py.select("npi").unique().sort("npi")
    attrs = peer_attributes(population, clean.providers.lazy(), window, cfg).collect().lazy()
    py_df = billing_metrics(with_growth(py).join(attrs, on="npi"), cfg).sort("npi", "year")
    return py_df.collect(), window, attrs
