"""`claidex explain NPI [--run RUN]`: the provider's files out of the run directory, and the
rich view of scoring.reports.explain's answer."""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scoring.errors import InputError, RunStateError
from scoring.graphdb.connection import neo4j_target
from scoring.graphdb.live import with_live_ownership
from scoring.inputs.npi import npi_problem
from scoring.reports.explain import ExplainInputs, explain_provider
from scoring.reports.explain_sections import show
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.store import BATCHES, SCORES, RunPaths, batch_key, run_store, stat_key
from scoring.stages.aggregate import EXCLUDED_MEMBER_SCHEMA
from scoring.stages.combine import (
    CHAIN_SCHEMA,
    CLOSURE_SCHEMA,
    EXCLUSIONS_STAT,
    EXPLAIN_CHAIN_STATS,
    explain_chain,
)
from scoring.stages.peer_groups import batch_member_counts
from scoring.stages.score_batch import load_stats, with_chain_totals


def _checked_npi(npi: str) -> int:
    problem = pl.select(npi_problem(pl.lit(npi, dtype=pl.String))).item()
    if problem is not None:
        msg = f"NPI {npi!r}: {problem}"
        raise InputError(msg)
    return int(npi)


def _batch_of(paths: RunPaths, manifest: RunManifest, npi: int) -> int | None:
    """The batch of this prepare whose slice holds the NPI (one scan of the slices' footers
    and npi columns; NPIs are sorted across batches, so at most one holds it)."""
    store = run_store(paths)
    keys = [batch_key(i, "providers") for i in range(manifest.batches_total)]
    held = {f"{BATCHES}/{name}/providers.parquet" for name in store.list_names(BATCHES)}
    held = {k for k in keys if k in held or store.exists(k)}
    missing = [k for k in keys if k not in held]
    if missing:
        msg = (
            f"{paths.where()}: {len(missing)} of {len(keys)} batch slices missing (pruned?), "
            f"first {store.location(missing[0])}: explain needs the run's batches/"
        )
        raise RunStateError(msg)
    for index, key in enumerate(keys):  # footers first: NPIs are sorted across batches
        if store.scan_frame(key).filter(pl.col("npi") == npi).select(pl.len()).collect().item():
            return index
    return None


OLD_ENTITIES = "ownership_entities"  # runs before issue 26: one row per (SNF, group member)
OLD_MEMBERS = {"snf_entity_id": pl.String, "npi": pl.Int64, "display_name": pl.String}


def _reference(paths: RunPaths, manifest: RunManifest) -> RunPaths:
    if manifest.kind == "full":
        return paths
    ref = RunLedger(paths).read().get("reference_run")
    if not ref:
        msg = f"{paths.where()}: an incremental run without a reference_run in its ledger"
        raise RunStateError(msg)
    return paths.sibling(ref)


def _stat(paths: RunPaths, name: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A statistics table `explain` reads; runs made before it was kept have none."""
    store = run_store(paths)
    key = stat_key(name)
    return store.read_frame(key) if store.exists(key) else pl.DataFrame(schema=schema)


def load_explain_inputs(paths: RunPaths, npi_text: str) -> ExplainInputs:
    npi = _checked_npi(npi_text)
    manifest = RunManifest.load(paths)
    store = run_store(paths)
    if not store.exists(SCORES):
        msg = f"run {paths.run_id} has not merged yet: no scores.parquet to explain"
        raise RunStateError(msg)
    published = store.scan_frame(SCORES).filter(pl.col("npi") == npi_text).collect()
    batch = _batch_of(paths, manifest, npi)
    if published.is_empty() or batch is None:
        msg = (
            f"NPI {npi_text} was not scored in run {paths.run_id} "
            f"(no payment rows in {manifest.window_end_year - manifest.cfg.window_years + 1}-"
            f"{manifest.window_end_year}, or not in the run's inputs)"
        )
        raise InputError(msg)
    cfg = manifest.cfg

    def own(key: str) -> pl.DataFrame:
        return store.read_frame(key).filter(pl.col("npi") == npi)

    provider = own(batch_key(batch, "providers"))
    if cfg.graph_mode == "neo4j-live":
        provider = with_live_ownership(provider, neo4j_target(), cfg)
    else:
        provider = with_chain_totals(provider, paths)
    snf = provider["snf_entity_id"][0]
    if store.exists(stat_key(EXPLAIN_CHAIN_STATS[0])) or not store.exists(stat_key(OLD_ENTITIES)):
        entities, members = explain_chain(
            snf,
            _stat(paths, EXPLAIN_CHAIN_STATS[0], CHAIN_SCHEMA),
            _stat(paths, EXPLAIN_CHAIN_STATS[1], CLOSURE_SCHEMA),
            _stat(paths, EXPLAIN_CHAIN_STATS[2], EXCLUDED_MEMBER_SCHEMA),
        )
    else:  # a run made before the chains/closures tables: its per-SNF tables
        of_snf = pl.lit(False) if snf is None else pl.col("snf_entity_id") == snf
        entities = store.read_frame(stat_key(OLD_ENTITIES)).filter(of_snf)
        members = _stat(paths, "chain_excluded", OLD_MEMBERS).filter(of_snf)
    leie = _stat(paths, EXCLUSIONS_STAT, {"npi": pl.Int64})
    wanted = pl.concat([pl.Series([npi], dtype=pl.Int64), members["npi"]]).implode()
    programs = batch_key(batch, "programs")
    counts = None
    if manifest.member_counts:  # what the batch read: the m1 rank counts peer_stats kept
        counts = batch_member_counts(paths, provider["npi"], cfg.shards)
    return ExplainInputs(
        npi=npi,
        provider=provider,
        provider_years=own(batch_key(batch, "provider_years")),
        programs=own(programs) if store.exists(programs) else pl.DataFrame(
            schema={"npi": pl.Int64, "program": pl.String, "amount": pl.Float64}
        ),
        stats=load_stats(paths),
        entities=entities,
        excluded_members=members,
        exclusions=leie.filter(pl.col("npi").is_in(wanted)),
        published=published.row(0, named=True),
        reference_r_raw=run_store(_reference(paths, manifest)).read_frame(SCORES)["r_raw"],
        t=manifest.window_end_year,
        cfg=cfg,
        member_counts=counts,
    )  # fmt: skip


def explain(paths: RunPaths, npi: str) -> dict[str, Any]:
    return explain_provider(load_explain_inputs(paths, npi))


def _f(value: Any, digits: int = 4) -> str:
    return escape(show(value, digits))  # names are data: '[bold]' in one is text, not markup


def _billing_tables(e: dict[str, Any], console: Console) -> None:
    amounts = Table(
        "year", "weight", "payments", "claims", "benes", "m1", "m2", "m3", title="Window years"
    )
    scores = Table(
        "year", "peer group", "n", "primary n", "z1", "z2", "z3", "year score", "m1 pct",
        title="Billing outlier, year by year",
    )  # fmt: skip
    for y in e["years"]:
        group = y["peer_group"]
        chosen = group[group["used"]] if group["used"] != "none" else None
        primary_n = group["primary"]["n"] if group["primary"] else 0
        amounts.add_row(
            str(y["year"]), _f(y["weight"], 3), _f(y["payments"], 2), _f(y["claims"], 0),
            _f(y["beneficiaries"], 0), _f(y["m1"], 2), _f(y["m2"], 2), _f(y["m3"], 2),
        )  # fmt: skip
        scores.add_row(
            str(y["year"]), group["used"], _f(chosen["n"]) if chosen else "0",
            _f(primary_n), *[_f(y["z"][m], 3) for m in ("x1", "x2", "x3")],
            _f(y["year_score"]), _f(y["m1_percentile"], 2),
        )  # fmt: skip
    console.print(amounts)
    console.print(scores)
    peers = Table("year", "group key", "metric", "median", "MAD", title="Peer groups used")
    for y in e["years"]:
        group = y["peer_group"]
        if group["used"] == "none":
            continue
        chosen = group[group["used"]]
        key = _f("/".join(str(v) for v in chosen["key"].values()))
        for m in ("x1", "x2", "x3"):
            peers.add_row(str(y["year"]), key, m, _f(chosen[m]["median"]), _f(chosen[m]["mad"]))
    console.print(peers)


def _chain_table(e: dict[str, Any], console: Console) -> None:
    o = e["ownership"]
    if o["snf"] is None:
        return
    ents = Table("entity", "name", "role", "hops", "EXCLUDED_BY", title="Chain and group")
    for role in ("chain", "group"):
        for ent in o[role]:
            hops = ent["up_hops"] if role == "chain" else ent["down_hops"]
            ents.add_row(
                _f(ent["entity_id"]), _f(ent["name"]), role, str(hops), str(ent["excluded_by"])
            )
    console.print(ents)


def _growth_table(e: dict[str, Any], console: Console) -> None:
    growth = Table("year", "g", "group median", "group MAD", "z", "max(z,0)", title="Trajectory")
    for y in e["years"]:
        g = y["growth"]
        if g is not None:
            growth.add_row(
                str(y["year"]), _f(g["g"]), _f(g["group_median"]), _f(g["group_mad"]),
                _f(g["z"]), _f(g["z_positive"]),
            )  # fmt: skip
    console.print(growth)


# Tables shown before a component's lines (its lines come from scoring.methodology.registry).
TABLES = {"billing": _billing_tables, "ownership": _chain_table, "trajectory": _growth_table}


def print_explanation(e: dict[str, Any], console: Console) -> None:
    comp = e["composite"]
    console.print(
        f"[bold]NPI {e['npi']}[/]: risk_score {comp['risk_score']:.2f} ({comp['risk_label']}), "
        f"window {e['window'][0]}-{e['window'][1]}, peers {_f(e['peer_taxonomy'])} / "
        f"{_f(e['peer_state'])}"
    )
    for name in e["components"]:  # registry order
        if name in TABLES:
            TABLES[name](e, console)
        for line in e[name]["lines"]:
            console.print(line, markup=False)  # names are data: '[bold]' in one is text
    terms = Table("component", "value", "weight", "term", title="Composite")
    for name, term in comp["terms"].items():
        terms.add_row(name, _f(term["value"], 2), _f(term["weight"], 2), _f(term["term"]))
    console.print(terms)
    console.print(
        f"r_raw {comp['r_raw']:.4f}: {comp['smaller']:,} of {comp['population']:,} providers "
        f"lower -> risk_score {comp['risk_score']:.2f} ({comp['risk_label']}); "
        f"flags: {_f('; '.join(comp['flags'])) or 'none'}"
    )
    bad = [c for c, check in e["checks"].items() if not check["equal"]]
    if bad:
        console.print(f"[red]does not recompute the published row: {', '.join(bad)}[/]")
    else:
        console.print("[green]recomputes the published row exactly[/]")
