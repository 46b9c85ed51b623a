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

from scoring.composite import label_expr, reference_risk_score
from scoring.config import Settings
from scoring.decay import robust_z
from scoring.peer_stats import FALLBACK_KEYS, METRICS, PRIMARY_KEYS
from scoring.provider_scores import COMPONENTS, PeerStats, score_providers, scored_provider_years

CHECKED = ["r_raw", *COMPONENTS, "peer_count", "data_window_years", "flags", "top_program"]
CHECKED_CHAIN = ["chain_provider_count", "chain_excluded_count", "owner_excluded"]


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


def _ownership(inputs: ExplainInputs, provider: dict[str, Any]) -> dict[str, Any]:
    snf = provider.get("snf_entity_id")
    entities = inputs.entities.sort(
        pl.col("up_hops").is_null(), "up_hops", "down_hops", "entity_id"
    )
    snf_name = entities.filter(pl.col("entity_id") == snf)["name"].to_list() if snf else []
    leie = inputs.exclusions
    members = [
        {
            **member,
            "npi": str(member["npi"]),
            "leie": leie.filter(pl.col("npi") == member["npi"]).drop("npi").to_dicts(),
        }
        for member in inputs.excluded_members.drop("snf_entity_id").to_dicts()
    ]  # the SNF's excluded chain providers: a handful
    return {
        "snf": None if snf is None else {"entity_id": snf, "name": (snf_name or [None])[0]},
        "chain": entities.filter(pl.col("up_hops").is_not_null()).to_dicts(),
        "group": entities.filter(pl.col("up_hops").is_null()).to_dicts(),
        "chain_provider_count": provider.get("chain_provider_count") or 0,
        "chain_excluded_count": provider.get("chain_excluded_count") or 0,
        "excluded_chain_providers": members,
        "owner_excluded": bool(provider.get("owner_excluded")),
        "excluded_entities": entities.filter("excluded_by")["entity_id"].to_list(),
    }


def _checks(recomputed: dict[str, Any], published: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Column -> recomputed, published, equal (exact: the same doubles, lists, texts)."""
    return {
        c: {"recomputed": recomputed.get(c), "published": published.get(c),
            "equal": recomputed.get(c) == published.get(c)}
        for c in [*CHECKED, *CHECKED_CHAIN, "risk_score", "risk_label"]
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
    programs = inputs.programs.sort("program")
    total = provider.get("recent_total") or 0.0
    leie = inputs.exclusions
    return {
        "npi": inputs.published["npi"],
        "window": [t - cfg.window_years + 1, t],
        "peer_taxonomy": provider["peer_taxonomy"],
        "peer_state": provider["peer_state"],
        "years": [_year(r, t, cfg) for r in years.iter_rows(named=True)],  # <= window years
        "billing": {
            "alpha": cfg.alpha,
            "score": recomputed["billing_outlier_score"],
            "percentile": recomputed["billing_outlier_percentile"],
        },
        "trajectory": {
            "zscore": recomputed["payment_trajectory_zscore"],
            "score": recomputed["payment_trajectory_score"],
            "years_with_growth": int(years["g"].is_not_null().sum()),
        },
        "concentration": {
            "years": [t - cfg.concentration_years + 1, t],
            "programs": [
                {"program": p, "amount": a, "share": a / max(total, 1.0)}
                for p, a in programs.select("program", "amount").iter_rows()
            ],
            "recent_total": total,
            "top_program": recomputed["top_program"],
            "top_share": (provider.get("top_program_total") or 0.0) / max(total, 1.0),
            "threshold": cfg.concentration_threshold,
            "score": recomputed["program_concentration_score"],
        },
        "ownership": {**_ownership(inputs, provider), "score": recomputed["ownership_chain_risk"]},
        "exclusion": {
            "rows": leie.filter(pl.col("npi") == inputs.npi).drop("npi").to_dicts(),
            "actively_excluded": bool(provider.get("actively_excluded")),
            "owner_excluded": bool(provider.get("owner_excluded")),
            "chain_excluded_count": provider.get("chain_excluded_count") or 0,
            "score": recomputed["exclusion_proximity_score"],
        },
        "composite": {
            "terms": {
                c: {"value": recomputed[c], "weight": w, "term": w * (recomputed[c] or 0.0)}
                for c, w in cfg.weights.items()
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
