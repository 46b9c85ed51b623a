"""Each component's section of `claidex explain`: its numbers, and the lines that state them.

scoring.methodology.registry names a component's section and lines;
`scoring.reports.explain` builds every registered section from one ExplainContext. A
component without a section of its own gets the generic one: its published values and one
line naming them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from scoring.config import Settings


@dataclass(frozen=True)
class ExplainContext:
    """What a section may show: the provider's recomputed row and its inputs."""

    row: dict[str, Any]  # the recomputed scores row (score_providers)
    provider: dict[str, Any]  # its provider row, chain and program totals joined
    years: pl.DataFrame  # its scored provider-years, growth_z_raw added
    programs: pl.DataFrame  # its program totals over T-2..T
    entities: pl.DataFrame  # its SNF's chain and group entities
    excluded_members: pl.DataFrame  # its SNF's excluded chain providers
    exclusions: pl.DataFrame  # LEIE rows of the provider and of those chain providers
    npi: int
    t: int
    cfg: Settings


def show(value: Any, digits: int = 4) -> str:
    """A value as the explain lines print it: '-' for none, thousands separated."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def generic_section(ctx: ExplainContext, columns: list[str]) -> dict[str, Any]:
    """A component's published values (the first is its score)."""
    return {"score": ctx.row[columns[0]], **{c: ctx.row[c] for c in columns[1:]}}


def generic_lines(name: str, columns: list[str], section: dict[str, Any]) -> list[str]:
    values = [section["score"], *[section[c] for c in columns[1:]]]
    return [f"{name}: " + ", ".join(f"{c} {show(v)}" for c, v in zip(columns, values, strict=True))]


def billing_section(ctx: ExplainContext) -> dict[str, Any]:
    return {
        "alpha": ctx.cfg.alpha,
        "score": ctx.row["billing_outlier_score"],
        "percentile": ctx.row["billing_outlier_percentile"],
    }


def billing_lines(b: dict[str, Any]) -> list[str]:
    return [f"S_b = {b['score']:.2f}, billing_outlier_percentile {b['percentile']:.2f}"]


def ownership_section(ctx: ExplainContext) -> dict[str, Any]:
    provider = ctx.provider
    snf = provider.get("snf_entity_id")
    entities = ctx.entities.sort(pl.col("up_hops").is_null(), "up_hops", "down_hops", "entity_id")
    snf_name = entities.filter(pl.col("entity_id") == snf)["name"].to_list() if snf else []
    leie = ctx.exclusions
    members = [
        {
            **member,
            "npi": str(member["npi"]),
            "leie": leie.filter(pl.col("npi") == member["npi"]).drop("npi").to_dicts(),
        }
        for member in ctx.excluded_members.drop("snf_entity_id").to_dicts()
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
        "score": ctx.row["ownership_chain_risk"],
    }


def ownership_lines(o: dict[str, Any]) -> list[str]:
    if o["snf"] is None:
        return ["ownership: no SNF matches the display name, S_o = 0"]
    lines = [
        f"ownership: SNF {show(o['snf']['entity_id'])} ({show(o['snf']['name'])}), "
        f"{o['chain_provider_count']:,} chain providers, {o['chain_excluded_count']:,} "
        f"excluded, owner_excluded {o['owner_excluded']}, S_o = {o['score']:.2f}"
    ]
    for member in o["excluded_chain_providers"]:
        rows = "; ".join(f"{r['exclusion_id']} {r['excldate']}" for r in member["leie"])
        lines.append(f"  excluded chain provider {member['npi']}: {rows}")
    return lines


def trajectory_section(ctx: ExplainContext) -> dict[str, Any]:
    return {
        "zscore": ctx.row["payment_trajectory_zscore"],
        "score": ctx.row["payment_trajectory_score"],
        "years_with_growth": int(ctx.years["g"].is_not_null().sum()),
    }


def trajectory_lines(tr: dict[str, Any]) -> list[str]:
    return [f"payment_trajectory_zscore {tr['zscore']:.4f}, S_t = {tr['score']:.2f}"]


def exclusion_section(ctx: ExplainContext) -> dict[str, Any]:
    provider = ctx.provider
    return {
        "rows": ctx.exclusions.filter(pl.col("npi") == ctx.npi).drop("npi").to_dicts(),
        "actively_excluded": bool(provider.get("actively_excluded")),
        "owner_excluded": bool(provider.get("owner_excluded")),
        "chain_excluded_count": provider.get("chain_excluded_count") or 0,
        "score": ctx.row["exclusion_proximity_score"],
    }


def exclusion_lines(x: dict[str, Any]) -> list[str]:
    rows = "; ".join(
        f"{r['exclusion_id']} {r['excldate']} reinstated={r['reinstated']}" for r in x["rows"]
    )
    return [f"exclusion: {rows or 'no LEIE rows'}; S_e = {x['score']:.0f}"]


def concentration_section(ctx: ExplainContext) -> dict[str, Any]:
    cfg, t, provider = ctx.cfg, ctx.t, ctx.provider
    total = provider.get("recent_total") or 0.0
    programs = ctx.programs.sort("program")
    return {
        "years": [t - cfg.concentration_years + 1, t],
        "programs": [
            {"program": p, "amount": a, "share": a / max(total, 1.0)}
            for p, a in programs.select("program", "amount").iter_rows()
        ],
        "recent_total": total,
        "top_program": ctx.row["top_program"],
        "top_share": (provider.get("top_program_total") or 0.0) / max(total, 1.0),
        "threshold": cfg.concentration_threshold,
        "score": ctx.row["program_concentration_score"],
    }


def concentration_lines(c: dict[str, Any]) -> list[str]:
    shares = ", ".join(f"{show(p['program'])} {p['share']:.1%}" for p in c["programs"])
    return [
        f"concentration {c['years'][0]}-{c['years'][1]}: {shares or 'no payments'}; "
        f"top {show(c['top_program'])} {c['top_share']:.4f}, S_p = {c['score']:.2f}"
    ]
