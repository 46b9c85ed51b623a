"""Per-NPI fingerprints of the source rows, to find the NPIs whose inputs changed."""

from __future__ import annotations

import polars as pl

from scoring.inputs.quarantine import row_hash

PAYMENT_COLUMNS = [
    "npi", "year", "program", "payments", "claims", "beneficiaries", "taxonomy", "state",
]  # fmt: skip
PROVIDER_COLUMNS = ["npi", "display_name", "taxonomy_1", "state"]
EXCLUSION_COLUMNS = ["npi", "exclusion_id", "reinstated"]


def _summed(frame: pl.LazyFrame, columns: list[str]) -> pl.LazyFrame:
    """Order-independent per-NPI sum of row hashes (shifted so sums cannot overflow)."""
    categorical = ("program", "taxonomy", "state")  # hash the text, not dictionary codes
    text = [pl.col(c).cast(pl.String) if c in categorical else pl.col(c) for c in columns]
    return (
        frame.select(text)
        .select("npi", (row_hash(columns) // 4096).cast(pl.Int64).alias("h"))
        .group_by("npi")
        .agg(pl.col("h").sum())
    )


def npi_digests(
    window_payments: pl.LazyFrame, providers: pl.LazyFrame, exclusions: pl.LazyFrame
) -> pl.LazyFrame:
    """(npi, digest) over the NPI's window payment rows, provider record and LEIE rows."""
    parts = [
        _summed(window_payments, PAYMENT_COLUMNS),
        _summed(providers, PROVIDER_COLUMNS),
        _summed(exclusions.filter(pl.col("npi").is_not_null()), EXCLUSION_COLUMNS),
    ]
    return pl.concat(parts).group_by("npi").agg(pl.col("h").sum().alias("digest")).sort("npi")
