"""Why one provider has its score (`claidex explain`), from the run's saved statistics.

Nothing about the population is recomputed: the provider's own slice is scored again
against the run's global tables with the same expressions a batch uses
(`scored_provider_years`, `score_providers`), and every intermediate is shown. The
recomputed row is checked against the published one, column by column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.methodology.composite import label_expr, reference_risk_score
from scoring.methodology.decay import robust_z
from scoring.methodology.peer_stats import FALLBACK_KEYS, METRICS, PRIMARY_KEYS
from scoring.methodology.provider_scores import PeerStats, score_providers, scored_provider_years
from scoring.methodology.registry import components, value_columns, weights
from scoring.reports.explain_sections import ExplainContext

CHECKED_CHAIN = ["chain_provider_count", "chain_excluded_count", "owner_excluded"]


def checked_columns() -> list[str]:
    """The published columns explain recomputes and compares."""
    checked = ["r_raw", *value_columns(), "peer_count", "data_window_years", "flags"]
    return [*checked, "top_program", *CHECKED_CHAIN, "risk_score", "risk_label"]


@dataclass(frozen=True)
class ExplainInputs:
    """One provider's rows from the run directory, and the run's global tables."""

    npi: int
    provider: pl.DataFrame  # its row of the batch's providers.parquet, chain totals joined
    provider_years: pl.DataFrame  # its rows of the batch's provider_years.parquet
    programs: pl.DataFrame  # its program totals over T-2..T
    stats: PeerStats
    entities: pl.DataFrame  # its SNF's chain and group entities (ownership_entities)
    excluded_members: pl.DataFrame  # its SNF's excluded chain providers (chain_excluded)
    exclusions: pl.DataFrame  # LEIE rows of the provider and of those chain providers
    published: dict[str, Any]  # its row of scores.parquet
    reference_r_raw: pl.Series  # the population its risk_score is a percent rank in
    t: int
    cfg: Settings
    member_counts: pl.DataFrame | None = None  # the provider-years' m1 rank counts, if kept


def _group(row: dict[str, Any], prefix: str, keys: list[str]) -> dict[str, Any] | None:
    if row[f"{prefix}_n"] is None:
        return None
    return {
        "key": {k: row[k] for k in keys},
        "n": row[f"{prefix}_n"],
        **{
            m: {"median": row[f"{prefix}_med_{m}"], "mad": row[f"{prefix}_mad_{m}"]}
            for m in METRICS
        },
    }


def _year(row: dict[str, Any], t: int, cfg: Settings) -> dict[str, Any]:
    primary = _group(row, "p", PRIMARY_KEYS)
    fallback = _group(row, "f", FALLBACK_KEYS)
    use_primary = (row["p_n"] or 0) >= cfg.peer_min_group_size
    used = "primary" if use_primary else ("fallback" if fallback is not None else "none")
    chosen = "p" if use_primary else "f"
    ranks = (
        {"below": row.get(f"{chosen}_n_lt"), "equal": row.get(f"{chosen}_n_eq")}
        if row["eligible"]
        else None
    )
    return {
        "year": row["year"],
        "weight": cfg.alpha ** (t - row["year"]),
        "payments": row["payments"],
        "claims": row["claims"],
        "beneficiaries": row["beneficiaries"],
        "m1": row["m1"],
        "m2": row["claims"] / max(row["beneficiaries"], 1.0),
        "m3": row["payments"],
        "x": {m: row[m] for m in METRICS},
        "eligible": row["eligible"],
        "peer_group": {
            "used": used,
            "primary": primary,
            "fallback": fallback,
            "min_primary_size": cfg.peer_min_group_size,
        },
        "z": {m: row[f"z_{m}"] for m in METRICS},
        "year_score": row["billing_year_score"],
        "m1_rank_counts": ranks,
        "m1_percentile": row["billing_pct_year"],
        "growth": None
        if row["g"] is None
        else {
            "g": row["g"],
            "group_median": row["med_g"],
            "group_mad": row["mad_g"],
            "z": row["growth_z_raw"],
            "z_positive": row["growth_z"],
        },
    }


def _checks(recomputed: dict[str, Any], published: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column -> recomputed, published, equal (exact: the same doubles, lists, texts)."""
    return {
        c: {"recomputed": recomputed.get(c), "published": published.get(c),
            "equal": recomputed.get(c) == published.get(c)}
        for c in checked_columns()
        if c in published
    }  # fmt: skip


def explain_provider(inputs: ExplainInputs) -> dict[str, Any]:
    """Every number behind the provider's row, and whether they recompute it exactly."""
    cfg, t = inputs.cfg, inputs.t
    counts = None if inputs.member_counts is None else inputs.member_counts.lazy()
    years = (
        scored_provider_years(
            inputs.provider_years.lazy(), inputs.provider.lazy(), inputs.stats, cfg, counts
        )
        .with_columns(
            robust_z(pl.col("g"), pl.col("med_g"), pl.col("mad_g"), cfg).alias("growth_z_raw")
        )
        .sort("year")
        .collect()
    )
    row = score_providers(
        inputs.provider_years.lazy(),
        inputs.provider.lazy(),
        inputs.stats,
        t=t,
        cfg=cfg,
        member_counts=counts,
    ).collect()
    recomputed = row.row(0, named=True)
    reference = inputs.reference_r_raw
    risk = reference_risk_score(row["r_raw"], reference)
    recomputed["risk_score"] = risk[0]
    recomputed["risk_label"] = pl.select(risk.alias("risk_score")).select(label_expr(cfg)).item()
    provider = inputs.provider.row(0, named=True)
    context = ExplainContext(
        row=recomputed,
        provider=provider,
        years=years,
        programs=inputs.programs,
        entities=inputs.entities,
        excluded_members=inputs.excluded_members,
        exclusions=inputs.exclusions,
        npi=inputs.npi,
        t=t,
        cfg=cfg,
    )
    return {
        "npi": inputs.published["npi"],
        "window": [t - cfg.window_years + 1, t],
        "peer_taxonomy": provider["peer_taxonomy"],
        "peer_state": provider["peer_state"],
        "years": [_year(r, t, cfg) for r in years.iter_rows(named=True)],  # <= window years
        "components": [c.name for c in components()],  # each one's section, in this order
        **{c.name: c.explain(context) for c in components()},
        "composite": {
            "terms": {
                c: {"value": recomputed[c], "weight": w, "term": w * (recomputed[c] or 0.0)}
                for c, w in weights(cfg).items()
            },
            "r_raw": recomputed["r_raw"],
            "smaller": int((reference < recomputed["r_raw"]).sum()),
            "population": reference.len(),
            "risk_score": recomputed["risk_score"],
            "risk_label": recomputed["risk_label"],
            "flags": recomputed["flags"],
        },
        "checks": _checks(recomputed, inputs.published),
    }
