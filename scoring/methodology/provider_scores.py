"""Per-provider scoring of one batch against the run's global statistics (pure transform).

Inputs are the batch's provider-year rows and provider rows written by prepare,
and the global statistics tables; nothing here depends on which other NPIs are
in the batch, which is what makes scores batch-size and engine invariant.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from scoring.config import Settings
from scoring.inputs.npi import npi_to_str
from scoring.methodology.components.billing import billing_year_scores
from scoring.methodology.components.trajectory import trajectory_year_scores
from scoring.methodology.composite import r_raw_expr
from scoring.methodology.decay import slot_aggs
from scoring.methodology.flags import flags_expr
from scoring.methodology.peer_stats import billing_metrics
from scoring.methodology.registry import components, flag_rules, slot_columns, value_columns

# The inputs of ownership, exclusion and concentration that scores.parquet and the table
# carry beside the components (explain and the API read them).
CONTEXT_COLUMNS = [
    "top_program",
    "snf_entity_id",
    "chain_provider_count",
    "chain_excluded_count",
    "owner_excluded",
    "actively_excluded",
]
PREPARE_ID = "prepare_id"  # chunk-only column: which prepare the chunk was scored against


def chunk_columns() -> list[str]:
    """A chunk's columns: the registered components' values after r_raw (SPEC §3 order)."""
    return [
        "npi",
        "r_raw",
        *value_columns(),
        "peer_taxonomy",
        "peer_state",
        "peer_count",
        "data_window_years",
        "flags",
        "components",
        *CONTEXT_COLUMNS,
    ]


STAT_NAMES = (
    "billing_primary",
    "billing_fallback",
    "m1_rank_primary",
    "m1_rank_fallback",
    "growth",
)


@dataclass(frozen=True)
class PeerStats:
    """The run's global statistics tables."""

    billing_primary: pl.LazyFrame
    billing_fallback: pl.LazyFrame
    m1_rank_primary: pl.LazyFrame
    m1_rank_fallback: pl.LazyFrame
    growth: pl.LazyFrame


def scored_provider_years(
    provider_years: pl.LazyFrame,
    providers: pl.LazyFrame,
    stats: PeerStats,
    cfg: Settings,
    member_counts: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Per provider-year: metrics, chosen peer group, z_k, year score, m1 percentile, growth z
    (what score_providers aggregates, and what `explain` shows year by year)."""
    py = provider_years.join(providers.select("npi", "peer_taxonomy", "peer_state"), on="npi")
    py = billing_metrics(py, cfg)
    py = billing_year_scores(
        py,
        primary=stats.billing_primary,
        fallback=stats.billing_fallback,
        rank_primary=stats.m1_rank_primary,
        rank_fallback=stats.m1_rank_fallback,
        cfg=cfg,
        member_counts=member_counts,
    )
    return trajectory_year_scores(py, stats.growth, cfg)


def score_providers(
    provider_years: pl.LazyFrame,
    providers: pl.LazyFrame,
    stats: PeerStats,
    *,
    t: int,
    cfg: Settings,
    member_counts: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Components, composite r_raw and flags per NPI (calibration happens in merge).

    `member_counts`: the provider-years' m1 rank counts when precomputed (billing)."""
    py = scored_provider_years(provider_years, providers, stats, cfg, member_counts)
    per_npi = py.group_by("npi").agg(
        *slot_aggs(slot_columns(), t, cfg),
        pl.col("peer_count").sort_by("year").last(),
        pl.col("year").sort().alias("data_window_years"),
    )
    scored = per_npi.join(providers, on="npi", how="left")
    for component in components():  # in order: a component may use the ones before it
        scored = scored.with_columns(*component.exprs(cfg))
    return (
        scored.with_columns(
            r_raw_expr(cfg),
            flags_expr(flag_rules(), cfg),
            pl.struct(value_columns()).alias("components"),
            npi_to_str(pl.col("npi")).alias("npi"),
            pl.col("chain_provider_count").fill_null(0),
            pl.col("chain_excluded_count").fill_null(0),
            pl.col("owner_excluded").fill_null(False),
            pl.col("actively_excluded").fill_null(False),
            pl.col("peer_count").cast(pl.Int32),
        )
        .select(chunk_columns())
        .sort("npi")
    )
