"""Stage combine (single): the shards gathered into the run's statistics, quarantine and
counts, and the manifest batches read."""

from __future__ import annotations

from typing import Any

import polars as pl

from scoring.config import Settings
from scoring.inputs.dataset import data_source
from scoring.inputs.quarantine import QUARANTINE_SCHEMA, ROW
from scoring.methodology.peer_stats import (
    FALLBACK_KEYS,
    GROWTH_KEYS,
    PRIMARY_KEYS,
)
from scoring.runs.manifest import RunManifest
from scoring.runs.plan import plan_record, read_plan, read_window, run_fingerprint
from scoring.runs.store import INPUT_COUNTS, QUARANTINE, RunPaths, RunStore, run_store, stat_key
from scoring.stages.aggregate import EXCLUDED_MEMBER_SCHEMA, EXCLUSION_SCHEMA
from scoring.stages.peer_groups import member_count_keys
from scoring.stages.stage_files import done_summaries, graph_key, part_keys, read_parts

CHAIN_COLUMNS = ["chain_provider_count", "chain_excluded_count", "owner_excluded"]


EXCLUSIONS_STAT = "exclusions"  # every valid LEIE row with an NPI: what `explain` lists


MATCHED_SCHEMA: dict[str, Any] = {"npi": pl.Int64(), "snf_entity_id": pl.String()}
MEMBERS_SCHEMA: dict[str, Any] = {"snf": pl.String(), "members": pl.Int64(), "excluded": pl.Int64()}

# for `explain`: the matched SNFs' chains, their nodes' closures, the excluded providers
# those nodes capture (explain_chain composes one SNF's group from them)
EXPLAIN_CHAIN_STATS = ("ownership_chains", "ownership_closures", "chain_excluded")


def global_groups(
    stats_parts: list[pl.DataFrame], rank_parts: list[pl.DataFrame], keys: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The peer buckets' groups numbered as one table (sorted by key), ranks renumbered
    (`stats_parts` and `rank_parts`: one frame per peer bucket, in bucket order)."""
    frames = [p.with_columns(pl.lit(i).alias("__part")) for i, p in enumerate(stats_parts)]
    groups = pl.concat(frames).sort(keys).with_row_index("__global")
    ids = groups.select("__part", "group_id", "__global")
    rank_frames = [p.with_columns(pl.lit(i).alias("__part")) for i, p in enumerate(rank_parts)]
    rank = (
        pl.concat(rank_frames)
        .join(ids, on=["__part", "group_id"])
        .select(pl.col("__global").alias("group_id"), "m1", "n_eq", "n_le")
        .sort("m1", "group_id")
    )
    stats_table = groups.drop("group_id", "__part").rename({"__global": "group_id"})
    return stats_table, rank


def quarantine_table(
    ingest: dict[str, pl.DataFrame],
    aggregate: dict[str, pl.DataFrame] | None = None,
    graph: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Every quarantined row, in the order one whole-table pass lists them: each table's
    row-rule failures (ingest, in slice order), then its exact copies (aggregate, by row);
    the graph's last. `aggregate` None: a run that ended at reduce (the row rules only)."""
    frames = [pl.DataFrame(schema=QUARANTINE_SCHEMA)]
    for name in ("q-payments", "q-providers", "q-exclusions"):
        frames.append(ingest[name])
        if aggregate is not None and name in aggregate:
            frames.append(aggregate[name].sort(ROW))
    if graph is not None:
        frames.append(graph)
    return pl.concat(frames)


def quarantine_rows(store: RunStore, *, partial: bool = False) -> pl.DataFrame:
    """`quarantine_table` of the stages' files (`partial`: only the ingest stage's)."""

    def parts(stage: str, names: tuple[str, ...]) -> dict[str, pl.DataFrame]:
        schema = dict(QUARANTINE_SCHEMA)
        return {
            n: read_parts(store, part_keys(store, stage, f"{n}.parquet"), schema) for n in names
        }

    ingest = parts("ingest", ("q-payments", "q-providers", "q-exclusions"))
    if partial:
        return quarantine_table(ingest)
    aggregate = parts("aggregate", ("q-payments", "q-providers"))
    return quarantine_table(ingest, aggregate, store.read_frame(graph_key("quarantine")))


def ownership_stats(
    matched: pl.DataFrame, members: pl.DataFrame | None, owner_excluded: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per matched SNF the chain totals (the buckets' partial counts summed); per provider
    its SNF's. `members`/`owner_excluded` None (neo4j-live): no chain in the run."""
    if members is None or owner_excluded is None:
        return matched, pl.DataFrame(
            schema={
                "snf_entity_id": pl.String,
                **{c: pl.Int64 for c in CHAIN_COLUMNS[:2]},
                "owner_excluded": pl.Boolean,
            }
        )
    totals = members.group_by("snf").agg(pl.col("members").sum(), pl.col("excluded").sum())
    per_snf = (
        matched.select(pl.col("snf_entity_id").alias("snf"))
        .unique()
        .join(totals, on="snf", how="left")
        .join(
            owner_excluded.with_columns(pl.lit(True).alias("owner_excluded")), on="snf", how="left"
        )
        .select(
            pl.col("snf").alias("snf_entity_id"),
            pl.col("members").fill_null(0).alias("chain_provider_count"),
            pl.col("excluded").fill_null(0).alias("chain_excluded_count"),
            pl.col("owner_excluded").fill_null(False),
        )
        .sort("snf_entity_id")
    )
    per_provider = matched.join(per_snf, on="snf_entity_id", how="left").sort("npi")
    return per_provider, per_snf


CHAIN_SCHEMA = {"snf": pl.String, "node": pl.String, "up_hops": pl.Int32}
CLOSURE_SCHEMA = {
    "node": pl.String, "member": pl.String, "down_hops": pl.Int32, "name": pl.String,
    "entity_type": pl.String, "excluded_by": pl.Boolean,
}  # fmt: skip


def chain_detail(
    per_snf: pl.DataFrame, excluded: pl.DataFrame, graph: dict[str, pl.DataFrame] | None
) -> dict[str, pl.DataFrame]:
    """For `explain`, the matched SNFs' chains, their nodes' closures (with each member's
    name, type and EXCLUDED_BY link) and the excluded providers those nodes capture: the
    pieces `explain_chain` composes for one SNF, linear in the graph (a table per (SNF,
    group member) grew with the square of an owner's SNFs). `graph` None: neo4j-live."""
    if graph is None:  # each batch asked Neo4j: no graph in the run
        return {
            "ownership_chains": pl.DataFrame(schema=CHAIN_SCHEMA),
            "ownership_closures": pl.DataFrame(schema=CLOSURE_SCHEMA),
            "chain_excluded": excluded.head(0),
        }
    snfs = per_snf.select(pl.col("snf_entity_id").alias("snf"))
    chains = graph["chains"].join(snfs, on="snf", how="semi")
    heads = chains.select("node").unique()
    closures = (
        graph["closures"]
        .join(heads, on="node", how="semi")
        .join(
            graph["entities"].select(pl.col("entity_id").alias("member"), "name", "entity_type"),
            on="member",
            how="left",
        )
        .with_columns(
            pl.col("member").is_in(graph["flagged"]["node"].implode()).alias("excluded_by")
        )
        .select(list(CLOSURE_SCHEMA))
        .sort("node", "member")
    )
    captured = excluded.join(heads.rename({"node": "snf"}), on="snf", how="semi")
    return {
        "ownership_chains": chains.select(list(CHAIN_SCHEMA)).sort("snf", "node"),
        "ownership_closures": closures,
        "chain_excluded": captured.sort("snf", "npi"),
    }


def explain_chain(
    snf: str | None, chains: pl.DataFrame, closures: pl.DataFrame, excluded: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One SNF's group entities (snf_entity_id, entity_id, name, entity_type, up_hops,
    down_hops, excluded_by) and its excluded chain providers (snf_entity_id, npi,
    display_name), composed from `chain_detail`'s tables."""
    mine = chains.filter(pl.col("snf") == snf) if snf is not None else chains.head(0)
    heads = mine.select("node")
    entities = (
        closures.join(heads, on="node", how="semi")
        .group_by("member")
        .agg(
            pl.col("down_hops").min(),
            pl.col("name").first(),
            pl.col("entity_type").first(),
            pl.col("excluded_by").first(),
        )
        .join(mine.select(pl.col("node").alias("member"), "up_hops"), on="member", how="left")
        .select(
            pl.lit(snf, dtype=pl.String).alias("snf_entity_id"),
            pl.col("member").alias("entity_id"),
            "name",
            "entity_type",
            "up_hops",
            "down_hops",
            "excluded_by",
        )
        .sort("entity_id")
    )
    members = (
        excluded.join(heads.rename({"node": "snf"}), on="snf", how="semi")
        .unique("npi")
        .select(pl.lit(snf, dtype=pl.String).alias("snf_entity_id"), "npi", "display_name")
        .sort("npi")
    )
    return entities, members


def input_counts(
    summaries: list[dict[str, Any]], quarantined: int, window: dict[str, Any]
) -> dict[str, Any]:
    """input_counts.json: the aggregate tasks' counts summed, the whole quarantine's rows
    (copies and graph rows included) and the window end."""
    sums: dict[str, Any] = {}
    for summary in summaries:
        for key, value in summary.items():
            if key == "quarantined_rows":
                continue
            if isinstance(value, dict):  # counts by program, by year
                table = sums.setdefault(key, {})
                for name, n in value.items():
                    table[name] = table.get(name, 0) + int(n)
            else:
                sums[key] = sums.get(key, 0) + int(value)
    sums = {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in sums.items()}
    return {
        **sums,
        "quarantined_rows": quarantined,
        "window_end_year": window["window_end_year"],
        "window_end_reason": window["window_end_reason"],
    }


def _stage_parts(store: RunStore, stage: str, name: str) -> list[pl.DataFrame]:
    return [store.read_frame(k) for k in part_keys(store, stage, f"{name}.parquet")]


def _aggregate_parts(store: RunStore, name: str, schema: dict[str, Any]) -> pl.DataFrame:
    return read_parts(store, part_keys(store, "aggregate", f"{name}.parquet"), schema)


def _run_graph(store: RunStore, cfg: Settings) -> dict[str, pl.DataFrame] | None:
    """The graph tables reduce kept (None in neo4j-live mode: each batch asked Neo4j)."""
    if cfg.graph_mode == "neo4j-live":
        return None
    names = ("entities", "chains", "closures", "owner_excluded", "flagged")
    return {name: store.read_frame(graph_key(name)) for name in names}


def _write_stats(store: RunStore, cfg: Settings) -> None:
    """The run-wide statistics every batch reads (stats/), from the stages' files."""
    for keys, stats, ranks in (
        (PRIMARY_KEYS, "billing_primary", "m1_rank_primary"),
        (FALLBACK_KEYS, "billing_fallback", "m1_rank_fallback"),
    ):
        stats_parts = _stage_parts(store, "peer_stats", stats)
        table, rank = global_groups(stats_parts, _stage_parts(store, "peer_stats", ranks), keys)
        store.write_frame(stat_key(stats), table)
        store.write_frame(stat_key(ranks), rank)
    growth = pl.concat(_stage_parts(store, "peer_stats", "growth"))
    store.write_frame(stat_key("growth"), growth.sort(GROWTH_KEYS))
    matched = _aggregate_parts(store, "ownership", MATCHED_SCHEMA)
    graph = _run_graph(store, cfg)
    members = None if graph is None else _aggregate_parts(store, "snf_members", MEMBERS_SCHEMA)
    owner_excluded = None if graph is None else graph["owner_excluded"]
    ownership, per_snf = ownership_stats(matched, members, owner_excluded)
    store.write_frame(stat_key("ownership"), ownership)
    store.write_frame(stat_key("ownership_snf"), per_snf)
    excluded = _aggregate_parts(store, "snf_excluded", EXCLUDED_MEMBER_SCHEMA)
    for name, frame in chain_detail(per_snf, excluded, graph).items():
        store.write_frame(stat_key(name), frame)
    leie = _aggregate_parts(store, "exclusions", EXCLUSION_SCHEMA)
    leie = leie.filter(pl.col("npi").is_not_null()).sort("npi", "exclusion_id")
    store.write_frame(stat_key(EXCLUSIONS_STAT), leie)
    digests = _aggregate_parts(store, "npi_digest", {"npi": pl.Int64(), "digest": pl.Int64()})
    store.write_frame(stat_key("npi_digest"), digests.sort("npi"))


def combine(paths: RunPaths) -> RunManifest:
    """Gather the shards into the run's statistics, quarantine, counts and manifest."""
    data_dir, cfg, shards = read_plan(paths)
    window = read_window(paths)
    store = run_store(paths)
    _write_stats(store, cfg)
    quarantine = quarantine_rows(store)
    store.write_frame(QUARANTINE, quarantine)
    counts = input_counts(done_summaries(store, "aggregate", shards), quarantine.height, window)
    store.write_json(INPUT_COUNTS, counts)
    plan = plan_record(paths)
    fingerprint = plan["fingerprint"] or run_fingerprint(data_dir, cfg)
    return RunManifest(
        run_id=paths.run_id,
        kind="full",
        source=str(data_source(data_dir)),
        window_end_year=int(window["window_end_year"]),
        batches_total=sum(window["batches"]),
        batch_size=cfg.batch_size,
        providers_scored=counts["providers_scored"],
        input_fingerprint=fingerprint,
        settings=plan["settings"],
        member_counts=len(member_count_keys(store)) == shards,
    )
