"""The stages of a full run's preparation, each a fan-out of idempotent shard tasks.

ingest x S -> count x B -> reduce -> aggregate x B -> peer_stats x G -> combine.
A task reads only the run directory and its shard index and writes only its own
files (write-then-rename), so a re-run after a kill gives the same bytes. Each
stage body calls the same methodology functions as the single-process prepare
did, per shard; every statistic is exact because the partition keeps each group
whole: an NPI's rows meet in one NPI bucket, a peer group's members in one peer
bucket (its key refines (taxonomy_10, year)).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from scoring.concentration import program_amounts, program_shares, program_totals
from scoring.config import Settings, frozen_settings
from scoring.db.connection import connect, database_url
from scoring.db.export import export_npi_range
from scoring.digest import npi_digests
from scoring.errors import InputError, RunStateError
from scoring.exclusion import active_exclusions
from scoring.inputs import input_files, read_dataset, table_rows
from scoring.ledger import RunLedger, input_fingerprint, task_host, utc_now
from scoring.manifest import RunManifest
from scoring.npi import npi_to_int
from scoring.ownership import chain_providers, match_snf, ownership_groups
from scoring.peer_stats import (
    FALLBACK_KEYS,
    GROWTH_KEYS,
    PRIMARY_KEYS,
    billing_group_stats,
    growth_group_stats,
    m1_rank_table,
    member_rank_counts,
)
from scoring.population import in_window, window_end
from scoring.quarantine import QUARANTINE_SCHEMA, ROW, ROW_HASH
from scoring.rundir import (
    RunPaths,
    read_buckets,
    read_json,
    read_parquet_named,
    write_bucketed_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from scoring.steps.batches import write_batches
from scoring.steps.graph_source import neo4j_snapshot, neo4j_verify
from scoring.steps.outage import through_outage
from scoring.steps.provider_rows import provider_rows, provider_year_rows
from scoring.validation import (
    CHECKED_PAYMENT_SCHEMA,
    PAYMENTS,
    PROVIDER_COLUMNS,
    CleanInputs,
    check_slice,
    drop_payment_copies,
    drop_provider_copies,
    validate_graph,
)

EXPORT = "export"  # for --source postgres: each task COPYs its own NPI range
SLICE_COLUMNS = ["npi", "year", "payments", "claims", "beneficiaries", "g"]
CHAIN_COLUMNS = ["chain_provider_count", "chain_excluded_count", "owner_excluded"]
PEER_COLUMNS = [*PRIMARY_KEYS, "m1", "x1", "x2", "x3"]
BUCKET = "__bucket"  # the column of bucketed stage files (a row group per value)
PLAIN = (ROW, ROW_HASH, "payments", "m1", "x1", "x2", "x3", "g")  # stage columns seldom repeating
EXCLUSIONS_STAT = "exclusions"  # every valid LEIE row with an NPI: what `explain` lists
EXPLAIN_CHAIN_STATS = ("ownership_entities", "chain_excluded")  # per matched SNF, for `explain`
EXCLUSION_SCHEMA = {
    "exclusion_id": pl.String(),
    "npi": pl.Int64(),
    "excldate": pl.Date(),
    "reinstated": pl.Boolean(),
}
EXCLUDED_MEMBER_SCHEMA = {"snf": pl.String, "npi": pl.Int64, "display_name": pl.String}
MEMBER_COUNTS = "member_counts"  # peer_stats: each member provider-year's m1 rank counts


# --- layout -------------------------------------------------------------------------------
def stage_root(paths: RunPaths) -> Path:
    return paths.root / "stages"


def _dir(paths: RunPaths, stage: str, index: int) -> Path:
    return stage_root(paths) / stage / f"{index:05d}"


def _done_marker(paths: RunPaths, stage: str, index: int) -> Path:
    return _dir(paths, stage, index) / "done.json"


def _task_record(paths: RunPaths, stage: str, index: int) -> Path:
    return _dir(paths, stage, index) / "task.json"


def plan_path(paths: RunPaths) -> Path:
    return stage_root(paths) / "plan.json"


def _window_path(paths: RunPaths) -> Path:
    return stage_root(paths) / "window.json"


def _graph_file(paths: RunPaths, name: str) -> Path:
    return stage_root(paths) / "graph" / f"{name}.parquet"


def _parts(paths: RunPaths, stage: str, name: str) -> list[Path]:
    """One stage's part files of one name, in shard order (slice order = source row order)."""
    return sorted((stage_root(paths) / stage).glob(f"*/{name}"))


def _scan(files: list[Path], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    if not files:
        return pl.DataFrame(schema=schema)
    return pl.concat([read_parquet_named(f) for f in files], how="vertical_relaxed")


def auto_shards(payment_rows: int, cfg: Settings) -> int:
    """Shards for `payment_rows` when the run asks for none (`shards` 0)."""
    return max(1, min(4096, -(-payment_rows // cfg.shard_rows)))


def write_plan(
    paths: RunPaths,
    data_dir: Path,
    cfg: Settings,
    fingerprint: str,
    *,
    source_kind: str = "dataset",
    payment_rows: int | None = None,
) -> None:
    """What every stage task reads: the source, the frozen settings and the shard count
    (`shards` 0: from the payment rows, counted here or, for Postgres, estimated).
    `source_kind` 'postgres': an export stage fills data_dir first (fingerprint '' until
    combine takes it from the exported parts)."""
    source = Path(data_dir).resolve()
    if payment_rows is None and not cfg.shards:
        payment_rows = table_rows(source, PAYMENTS).total
    shards = cfg.shards or auto_shards(payment_rows or 0, cfg)
    cfg = cfg.model_copy(update={"shards": shards})
    plan = {
        "source": source_kind,
        "data_dir": str(source),
        # where the data lies seen from the run directory: a Modal container mounts the
        # volume at its own path, so the absolute one may not exist there
        "data_dir_from_run": os.path.relpath(source, paths.root.resolve()),
        "shards": cfg.shards,
        "polars": pl.__version__,  # peer buckets and row hashes: one polars for all of a run
        "runtime": runtime_probe(),
        "fingerprint": fingerprint,
        "settings": cfg.model_dump(mode="json"),
    }
    write_json_atomic(plan, plan_path(paths))


def run_fingerprint(data_dir: Path, cfg: Settings) -> str:
    """The fingerprint of every file a run of `cfg` reads from `data_dir`."""
    return input_fingerprint(input_files(data_dir, with_graph=cfg.graph_mode == "embedded"))


def check_inputs_unchanged(paths: RunPaths) -> None:
    """A dataset run's inputs still have the fingerprint of its plan: a shard run later (a
    retry, a resume) over files replaced meanwhile would mix two datasets in one run."""
    plan = read_json(plan_path(paths))
    if not plan["fingerprint"]:  # Postgres: the export stage writes the snapshot
        return
    data_dir, cfg, _ = read_plan(paths)
    if run_fingerprint(data_dir, cfg) != plan["fingerprint"]:
        msg = (
            f"run {paths.run_id}: the inputs in {data_dir} changed since the run was planned "
            f"(fingerprint {plan['fingerprint']}): start a new run on them"
        )
        raise InputError(msg)


@functools.cache
def runtime_probe() -> dict[str, Any]:
    """What shard files depend on beyond the polars version: its index type (group ids)
    and the hashes of fixed values (peer buckets, exact-copy detection). Polars builds of
    one version (rt32 / rt64 / rtcompat) may differ in both."""
    probe = pl.DataFrame({"t": ["207Q00000X", ""], "n": [1, -7], "x": [0.07, 1e300]})
    hashes = probe.select(pl.all().hash(seed=3)).rows()
    return {"index_type": str(pl.get_index_type()), "hashes": [list(map(str, r)) for r in hashes]}


def has_plan(paths: RunPaths) -> bool:
    return plan_path(paths).exists()


def has_window(paths: RunPaths) -> bool:
    return _window_path(paths).exists()


def read_plan(paths: RunPaths) -> tuple[Path, Settings, int]:
    plan = read_json(plan_path(paths))
    if (
        plan.get("polars") != pl.__version__
        or plan.get("runtime", runtime_probe()) != runtime_probe()
    ):
        msg = (
            f"run {paths.run_id} was planned with polars {plan.get('polars')} "
            f"({plan.get('runtime')}), this process has {pl.__version__} ({runtime_probe()}): "
            "its shards would hash peer groups and rows differently"
        )
        raise RunStateError(msg)
    return _plan_data_dir(paths, plan), frozen_settings(plan["settings"]), int(plan["shards"])


def _plan_data_dir(paths: RunPaths, plan: dict[str, Any]) -> Path:
    """The planned dataset as this process sees it: beside the run when it is there (the
    same volume mounted elsewhere), else the absolute path the plan recorded."""
    beside = paths.root / str(plan.get("data_dir_from_run", ""))
    if "data_dir_from_run" in plan and beside.is_dir():
        return beside.resolve()
    return Path(plan["data_dir"])


def shards_done(paths: RunPaths, stage: str) -> list[int]:
    return sorted(int(p.parent.name) for p in (stage_root(paths) / stage).glob("*/done.json"))


def missing_shards(paths: RunPaths, stage: str, total: int) -> list[int]:
    done = set(shards_done(paths, stage))
    return [i for i in range(total) if i not in done]


def _finish(paths: RunPaths, stage: str, index: int, summary: dict[str, Any]) -> dict[str, Any]:
    write_json_atomic(summary, _done_marker(paths, stage, index))
    return summary


def share(total: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of slice `index` when `total` rows are cut into `parts` near-equal slices."""
    return total * index // parts, total * (index + 1) // parts


def npi_bucket(npi: pl.Expr, buckets: int) -> pl.Expr:
    """The NPI bucket: all of an NPI's rows, in every table, meet in one bucket."""
    return (npi.fill_null(0) % buckets).cast(pl.Int64).alias(BUCKET)


def peer_bucket(buckets: int) -> pl.Expr:
    """The peer bucket, a function of (taxonomy_10, year): every peer group is whole in one."""
    key = pl.col("peer_taxonomy").hash(seed=0) + pl.col("year").cast(pl.UInt64)
    return (key % buckets).cast(pl.Int64).alias(BUCKET)


def _write_buckets(
    frame: pl.DataFrame, out: Path, name: str, bucket: pl.Expr, cfg: Settings
) -> None:
    """One file per task and name, a row group per bucket: S files for a stage, not S x B."""
    target = out / f"{name}.parquet"
    write_bucketed_atomic(frame.with_columns(bucket), target, BUCKET, PLAIN, cfg.stage_compression)


def _bucket_rows(
    paths: RunPaths,
    stage: str,
    name: str,
    index: int,
    schema: dict[str, pl.DataType],
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """Bucket `index` of every task's `name` file of `stage`, in task order (slice order is
    source row order); only `columns`, when given."""
    files = _parts(paths, stage, f"{name}.parquet")
    if not files:
        return pl.DataFrame(schema={c: schema[c] for c in columns} if columns else schema)
    return read_buckets(files, BUCKET, index, columns)


# --- export x S (--source postgres) -------------------------------------------------------
def export(paths: RunPaths, index: int) -> dict[str, Any]:
    """NPI range `index` of the per-NPI source tables, COPYed by this task into the run's
    snapshot directory as parts (ingest then reads them as a dataset of parts). The URL
    comes from this process's DATABASE_URL (a worker's, a Modal secret's), never the plan."""
    data_dir, cfg, shards = read_plan(paths)
    url = database_url()
    if url is None:
        msg = (
            f"run {paths.run_id}: the export stage reads Postgres, "
            "and this process has no DATABASE_URL"
        )
        raise InputError(msg)

    def export_once() -> dict[str, int]:  # a fresh snapshot each attempt
        with connect(url) as conn:
            return export_npi_range(conn, data_dir, index, shards)

    counts = through_outage(
        export_once, ledger=RunLedger(paths), step="export", window=cfg.db_outage_window
    )
    return _finish(paths, EXPORT, index, {"rows": counts})


# --- ingest x S ---------------------------------------------------------------------------
def _checked_slice(
    data_dir: Path, name: str, index: int, shards: int, cfg: Settings
) -> tuple[int, pl.DataFrame, pl.DataFrame]:
    """Slice `index` of one table through its row rules: (rows, good rows, quarantined)."""
    table = table_rows(data_dir, name)
    lo, hi = share(table.total, shards, index)
    return hi - lo, *check_slice(table, name, lo, hi, cfg)


def ingest(paths: RunPaths, index: int) -> dict[str, Any]:
    """Slice `index` of each input through the row rules (scoring.validation): its bad rows
    quarantined, its good rows bucketed by NPI for the copy rules, judged in aggregate."""
    check_inputs_unchanged(paths)
    data_dir, cfg, shards = read_plan(paths)
    out = _dir(paths, "ingest", index)
    rows, payments, bad = _checked_slice(data_dir, PAYMENTS, index, shards, cfg)
    _write_buckets(payments, out, "payments", npi_bucket(pl.col("npi"), shards), cfg)
    write_parquet_atomic(bad, out / "q-payments.parquet")
    _, providers, bad_providers = _checked_slice(data_dir, "providers", index, shards, cfg)
    _write_buckets(providers, out, "providers", npi_bucket(npi_to_int(pl.col("npi")), shards), cfg)
    write_parquet_atomic(bad_providers, out / "q-providers.parquet")
    _, exclusions, bad_exclusions = _checked_slice(data_dir, "exclusions", index, shards, cfg)
    _write_buckets(exclusions, out, "exclusions", npi_bucket(pl.col("npi"), shards), cfg)
    write_parquet_atomic(bad_exclusions, out / "q-exclusions.parquet")
    summary = {
        "payment_rows": rows,
        "payment_rows_valid": payments.height,
        "max_valid_year": payments["year"].max(),
        "quarantined_rows": bad.height + bad_providers.height + bad_exclusions.height,
    }
    return _finish(paths, "ingest", index, summary)


# --- count x B ----------------------------------------------------------------------------
NPI_LIMIT = 10**10  # a valid NPI has ten digits


def _distinct_npi_years(rows: pl.DataFrame, cfg: Settings) -> pl.DataFrame:
    """The distinct (npi, year) pairs of valid rows. Packed into one Int64 when the valid
    years make that exact (a quarter of the time of a two-column unique); never when the
    configured year range could overflow it."""
    span = cfg.max_valid_year - cfg.min_valid_year + 1
    n0, n1, y0, y1 = rows.select(
        pl.col("npi").min().alias("n0"),
        pl.col("npi").max().alias("n1"),
        pl.col("year").min().alias("y0"),
        pl.col("year").max().alias("y1"),
    ).row(0)
    exact = rows.is_empty() or (
        n0 >= 0 and n1 < NPI_LIMIT and y0 >= cfg.min_valid_year and y1 <= cfg.max_valid_year
    )
    if not exact or not 0 < span <= (2**63 - 1) // NPI_LIMIT:
        return rows.unique()
    key = pl.col("npi") * span + (pl.col("year") - cfg.min_valid_year)
    packed = rows.select(key.alias("key")).unique()
    return packed.select(
        (pl.col("key") // span).alias("npi"),
        (pl.col("key") % span + cfg.min_valid_year).cast(pl.Int32).alias("year"),
    )


def count(paths: RunPaths, index: int) -> dict[str, Any]:
    """Distinct NPIs per year, and per candidate T the NPIs with a year in T's window.

    Counted where NPIs are whole (one bucket), so the counts add up across buckets. An
    exact copy of a valid row has the same (npi, year), so duplicates change nothing here.
    """
    _, cfg, _ = read_plan(paths)
    rows = _bucket_rows(
        paths, "ingest", "payments", index, CHECKED_PAYMENT_SCHEMA, columns=["npi", "year"]
    )
    pairs = _distinct_npi_years(rows, cfg)
    per_year = pairs.group_by("year").agg(pl.len().alias("npis")).sort("year")
    candidates: set[int] = set()
    if not pairs.is_empty():
        first, last = int(pairs["year"].min()), int(pairs["year"].max())  # type: ignore[arg-type]
        candidates = set(range(first, last + cfg.window_years))
    if cfg.as_of_year is not None:
        candidates.add(cfg.as_of_year)
    window = {str(t): pairs.filter(in_window(t, cfg))["npi"].n_unique() for t in sorted(candidates)}
    summary = {"per_year": per_year.rows(), "window_population": window}
    return _finish(paths, "count", index, summary)


# --- reduce -------------------------------------------------------------------------------
def _graph_for_run(paths: RunPaths, data_dir: Path, cfg: Settings, ledger: RunLedger) -> None:
    """Ownership steps 2-3 once for every SNF of the graph (small), from the mode's source."""
    if cfg.graph_mode == "neo4j-live":
        neo4j_verify(cfg, ledger)
        write_parquet_atomic(
            pl.DataFrame(schema=QUARANTINE_SCHEMA), _graph_file(paths, "quarantine")
        )
        return
    if cfg.graph_mode == "embedded":
        raw = read_dataset(data_dir, with_graph=True, with_payments=False)
        graph, quarantined = validate_graph(raw)
        if graph is None:
            msg = "the dataset has no ownership graph tables (entities, ownership, ...)"
            raise InputError(msg)
        excluded = None
    else:
        snapshot = neo4j_snapshot(cfg, ledger)
        graph, quarantined, excluded = snapshot.graph, [], snapshot.excluded_npis
    entities = graph.entities.collect()
    snfs = entities.filter(pl.col("entity_type") == "SNF").select(pl.col("entity_id").alias("snf"))
    groups = ownership_groups(snfs.lazy(), graph, cfg).collect()
    flagged = graph.entity_exclusions.select(pl.col("entity_id").alias("node")).unique().collect()
    owner_excluded = groups.join(flagged, on="node", how="semi").select("snf").unique().sort("snf")
    write_parquet_atomic(entities, _graph_file(paths, "entities"))
    write_parquet_atomic(groups, _graph_file(paths, "groups"))
    write_parquet_atomic(owner_excluded, _graph_file(paths, "owner_excluded"))
    write_parquet_atomic(flagged.sort("node"), _graph_file(paths, "flagged"))
    if excluded is not None:
        write_parquet_atomic(excluded, _graph_file(paths, "excluded_npis"))
    q = pl.concat(
        [pl.DataFrame(schema=QUARANTINE_SCHEMA), *[f.cast(QUARANTINE_SCHEMA) for f in quarantined]]
    )  # type: ignore[arg-type]
    write_parquet_atomic(q, _graph_file(paths, "quarantine"))


def reduce(paths: RunPaths, ledger: RunLedger) -> dict[str, Any]:
    """T from the buckets' exact counts; each bucket's providers and batch numbers; the graph."""
    check_inputs_unchanged(paths)  # the graph is read here
    data_dir, cfg, shards = read_plan(paths)
    counts = [read_json(_done_marker(paths, "count", b)) for b in range(shards)]
    per_year = (
        pl.DataFrame(
            [row for c in counts for row in c["per_year"]],
            schema={"year": pl.Int32, "npis": pl.Int64},
            orient="row",
        )
        .group_by("year")
        .agg(pl.col("npis").sum())
        .sort("year")
    )
    try:
        end = window_end(per_year, cfg)
        population = [int(c["window_population"].get(str(end.year), 0)) for c in counts]
        if sum(population) == 0:
            first = end.year - cfg.window_years + 1
            msg = (
                f"{data_dir}: no provider has a valid payment row in the window {first}-{end.year}"
            )
            raise InputError(msg)
    except InputError:
        # nothing to score: the rows the rules refused are the answer to "why", so keep them
        # (exact copies and graph rows are judged by later stages, which do not run)
        write_parquet_atomic(_quarantine(paths, partial=True), paths.quarantine)
        raise
    batches = [-(-n // cfg.batch_size) for n in population]
    offsets = [sum(batches[:b]) for b in range(shards)]
    _graph_for_run(paths, data_dir, cfg, ledger)
    window = {
        "window_end_year": end.year,
        "window_end_reason": end.reason,
        "population": population,
        "batch_offsets": offsets,
        "batches": batches,
    }
    write_json_atomic(window, _window_path(paths))
    return window


# --- aggregate x B ------------------------------------------------------------------------
def _in_row_order(rows: pl.DataFrame) -> pl.DataFrame:
    """Source row order. Tasks' files concatenated in shard order already are (slices are
    consecutive row ranges): checking costs a scan, sorting 2.8 M sorted rows 0.18 s."""
    return rows if rows[ROW].is_sorted() else rows.sort(ROW)


def _bucket_payments(paths: RunPaths, index: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The bucket's valid payment rows in source order, minus exact copies (quarantined)."""
    rows = _in_row_order(_bucket_rows(paths, "ingest", "payments", index, CHECKED_PAYMENT_SCHEMA))
    payments, quarantined = drop_payment_copies([rows])
    payments = payments.with_columns(pl.col("program", "taxonomy", "state").cast(pl.Categorical))
    return payments, quarantined


def _bucket_providers(paths: RunPaths, index: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The bucket's valid provider records, one per NPI (the others quarantined)."""
    schema = {ROW: pl.UInt32(), **{c: pl.String() for c in PROVIDER_COLUMNS}}
    schema.update({"entity_type_code": pl.Int64(), "is_excluded": pl.Boolean()})
    good = _in_row_order(_bucket_rows(paths, "ingest", "providers", index, schema))
    return drop_provider_copies(good)


def _bucket_exclusions(paths: RunPaths, index: int) -> pl.DataFrame:
    return _bucket_rows(paths, "ingest", "exclusions", index, EXCLUSION_SCHEMA)


def _bucket_ownership(
    paths: RunPaths, providers: pl.DataFrame, excluded: pl.DataFrame, cfg: Settings
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Step 1 (SNF match) and step 4 (chain membership) for the bucket's providers.

    Returns (npi, snf_entity_id), per-SNF partial counts (members, excluded members): a
    provider sits in one bucket only, so the partial counts add up exactly; and the
    excluded members themselves (snf, npi, display_name), which `explain` lists.
    """
    entities = read_parquet_named(_graph_file(paths, "entities")).lazy()
    matched = match_snf(providers.lazy(), entities).collect()
    groups = read_parquet_named(_graph_file(paths, "groups")).lazy()
    chain_excluded = excluded
    if _graph_file(paths, "excluded_npis").exists():  # neo4j mode: the graph's LEIE links
        chain_excluded = read_parquet_named(_graph_file(paths, "excluded_npis")).join(
            providers.select("npi"), on="npi", how="semi"
        )
    # every SNF's chain, not only this bucket's matches: members of a chain sit in
    # other buckets than the providers matched to its SNF
    chained = (
        chain_providers(groups, providers.lazy(), entities)
        .join(chain_excluded.lazy().select("npi", "actively_excluded"), on="npi", how="left")
        .with_columns(pl.col("actively_excluded").fill_null(False))
        .collect()
    )
    members = chained.group_by("snf").agg(
        pl.len().cast(pl.Int64).alias("members"),
        pl.col("actively_excluded").sum().cast(pl.Int64).alias("excluded"),
    )
    excluded_members = (
        chained.filter("actively_excluded")
        .join(providers.select("npi", "display_name"), on="npi", how="left")
        .select("snf", "npi", "display_name")
        .sort("snf", "npi")
    )
    return matched.select("npi", "snf_entity_id"), members, excluded_members


def aggregate(paths: RunPaths, index: int) -> dict[str, Any]:
    """One NPI bucket: duplicates, provider-years, peer attributes, totals, ownership; its
    batches; its provider-years cut into peer buckets."""
    _, cfg, shards = read_plan(paths)
    window = read_json(_window_path(paths))
    t = int(window["window_end_year"])
    out = _dir(paths, "aggregate", index)
    payments, dup_payments = _bucket_payments(paths, index)
    providers, dup_providers = _bucket_providers(paths, index)
    exclusions = _bucket_exclusions(paths, index)
    clean = CleanInputs(
        providers, payments, exclusions, None, pl.DataFrame(schema=QUARANTINE_SCHEMA)
    )
    py, window_rows, attrs = provider_year_rows(clean, t, cfg)
    excluded = active_exclusions(exclusions.lazy()).collect()
    if cfg.graph_mode == "neo4j-live":
        from scoring.graphdb.live import LIVE_SCHEMA_NO_NPI

        ownership = pl.DataFrame(schema={"npi": pl.Int64, **LIVE_SCHEMA_NO_NPI})
        members = pl.DataFrame(schema={"snf": pl.String, "members": pl.Int64, "excluded": pl.Int64})
        excluded_members = pl.DataFrame(schema=EXCLUDED_MEMBER_SCHEMA)
    else:
        ownership, members, excluded_members = _bucket_ownership(paths, providers, excluded, cfg)
    per_program = program_amounts(window_rows, t, cfg).collect().lazy()
    totals = program_totals(per_program, cfg).collect()
    scored = provider_rows(attrs, totals, ownership, excluded)
    if scored.height != window["population"][index]:
        msg = (
            f"run {paths.run_id} bucket {index}: {scored.height} providers in the window, "
            f"the count stage found {window['population'][index]}; its files are inconsistent"
        )
        raise RunStateError(msg)
    write_batches(
        paths,
        py.select(SLICE_COLUMNS),
        scored,
        cfg.batch_size,
        first=window["batch_offsets"][index],
        programs=program_shares(per_program, cfg).collect(),
    )
    eligible = py.filter("eligible").select("npi", *PEER_COLUMNS)
    _write_buckets(eligible, out, "eligible", peer_bucket(shards), cfg)
    growth = py.filter(pl.col("g").is_not_null()).select(*GROWTH_KEYS, "g")
    _write_buckets(growth, out, "growth", peer_bucket(shards), cfg)
    digests = npi_digests(window_rows, providers.lazy(), exclusions.lazy()).collect()
    write_parquet_atomic(digests, out / "npi_digest.parquet")
    write_parquet_atomic(ownership, out / "ownership.parquet")
    write_parquet_atomic(members, out / "snf_members.parquet")
    write_parquet_atomic(excluded_members, out / "snf_excluded.parquet")
    write_parquet_atomic(exclusions.sort("npi", "exclusion_id"), out / "exclusions.parquet")
    write_parquet_atomic(dup_payments, out / "q-payments.parquet")
    write_parquet_atomic(dup_providers, out / "q-providers.parquet")
    year = pl.col("year")
    placed = payments.select(  # counted, not filtered: a filter copies every column
        in_window(t, cfg).sum().alias("in"),
        (year < t - cfg.window_years + 1).sum().alias("before"),
        (year > t).sum().alias("after"),
    ).row(0, named=True)
    summary = {
        "payment_rows_valid": payments.height,
        "payment_rows_in_window": placed["in"],
        "payment_rows_before_window": placed["before"],
        "payment_rows_after_window": placed["after"],
        "providers_valid": providers.height,
        "providers_scored": scored.height,
        "provider_years": py.height,
        "quarantined_rows": dup_payments.height + dup_providers.height,
    }
    return _finish(paths, "aggregate", index, summary)


# --- peer_stats x G -----------------------------------------------------------------------
def peer_stats(paths: RunPaths, index: int) -> dict[str, Any]:
    """One peer bucket's groups: medians, MADs, counts, m1 rank tables, growth statistics."""
    out = _dir(paths, "peer_stats", index)
    key_schema = {"peer_taxonomy": pl.String(), "peer_state": pl.String(), "year": pl.Int32()}
    eligible = _bucket_rows(
        paths,
        "aggregate",
        "eligible",
        index,
        {
            "npi": pl.Int64(),
            **key_schema,
            "m1": pl.Float64(),
            "x1": pl.Float64(),
            "x2": pl.Float64(),
            "x3": pl.Float64(),
        },
    ).lazy()
    growth = _bucket_rows(
        paths, "aggregate", "growth", index, {**key_schema, "g": pl.Float64()}
    ).lazy()
    primary, fallback = pl.collect_all(
        [billing_group_stats(eligible, PRIMARY_KEYS), billing_group_stats(eligible, FALLBACK_KEYS)]
    )
    rank_p, rank_f, growth_stats = pl.collect_all(
        [
            m1_rank_table(eligible, primary.lazy(), PRIMARY_KEYS),
            m1_rank_table(eligible, fallback.lazy(), FALLBACK_KEYS),
            growth_group_stats(growth),
        ]
    )
    _, cfg, shards = read_plan(paths)
    counts = member_rank_counts(eligible, primary.lazy(), rank_p.lazy(), PRIMARY_KEYS, "p").join(
        member_rank_counts(eligible, fallback.lazy(), rank_f.lazy(), FALLBACK_KEYS, "f"),
        on=["npi", "year"],
    )
    _write_buckets(counts.collect(), out, MEMBER_COUNTS, npi_bucket(pl.col("npi"), shards), cfg)
    for name, frame in {
        "billing_primary": primary,
        "billing_fallback": fallback,
        "m1_rank_primary": rank_p,
        "m1_rank_fallback": rank_f,
        "growth": growth_stats,
    }.items():
        write_parquet_atomic(frame, out / f"{name}.parquet")
    return _finish(paths, "peer_stats", index, {"groups": primary.height})


def batch_member_counts(paths: RunPaths, npis: pl.Series, shards: int) -> pl.DataFrame:
    """The m1 rank counts of a batch's member provider-years, from every peer bucket's
    file (one NPI bucket's row group each: a batch holds one bucket's NPIs). `shards`:
    the run's (from run.json), so a batch never depends on plan.json."""
    files = _member_count_files(paths)
    if len(files) != shards:
        msg = f"run {paths.run_id}: {len(files)} of {shards} peer_stats shards hold rank counts"
        raise RunStateError(msg)
    if npis.is_empty():
        msg = f"run {paths.run_id}: a batch holds no NPIs"
        raise RunStateError(msg)
    bucket = int(npis[0]) % shards
    if not (npis % shards == bucket).all():
        msg = f"run {paths.run_id}: a batch holds NPIs of more than one NPI bucket"
        raise RunStateError(msg)
    rows = read_buckets(files, BUCKET, bucket)
    return rows.join(npis.to_frame("npi"), on="npi", how="semi")


def _member_count_files(paths: RunPaths) -> list[Path]:
    return _parts(paths, "peer_stats", f"{MEMBER_COUNTS}.parquet")


# --- combine ------------------------------------------------------------------------------
def _global_groups(
    paths: RunPaths, keys: list[str], stats: str, ranks: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The peer buckets' groups numbered as one table (sorted by key), ranks renumbered."""
    parts = _parts(paths, "peer_stats", f"{stats}.parquet")
    frames = [
        read_parquet_named(p).with_columns(pl.lit(i).alias("__part")) for i, p in enumerate(parts)
    ]
    groups = pl.concat(frames).sort(keys).with_row_index("__global")
    ids = groups.select("__part", "group_id", "__global")
    rank_frames = [
        read_parquet_named(p).with_columns(pl.lit(i).alias("__part"))
        for i, p in enumerate(_parts(paths, "peer_stats", f"{ranks}.parquet"))
    ]
    rank = (
        pl.concat(rank_frames)
        .join(ids, on=["__part", "group_id"])
        .select(pl.col("__global").alias("group_id"), "m1", "n_eq", "n_le")
        .sort("m1", "group_id")
    )
    stats_table = groups.drop("group_id", "__part").rename({"__global": "group_id"})
    return stats_table, rank


def _quarantine(paths: RunPaths, *, partial: bool = False) -> pl.DataFrame:
    """Every quarantined row, in the order one whole-table pass lists them (`partial`: only
    the ingest stage's, for a run that ends at reduce)."""
    empty = pl.DataFrame(schema=QUARANTINE_SCHEMA)

    def parts(stage: str, name: str, *, by_row: bool) -> pl.DataFrame:
        frame = _scan(_parts(paths, stage, name), dict(QUARANTINE_SCHEMA))
        return frame.sort(ROW) if by_row else frame

    if partial:
        names = ("q-payments.parquet", "q-providers.parquet", "q-exclusions.parquet")
        return pl.concat([empty, *(parts("ingest", name, by_row=False) for name in names)])
    return pl.concat(
        [
            empty,
            parts("ingest", "q-payments.parquet", by_row=False),
            parts("aggregate", "q-payments.parquet", by_row=True),
            parts("ingest", "q-providers.parquet", by_row=False),
            parts("aggregate", "q-providers.parquet", by_row=True),
            parts("ingest", "q-exclusions.parquet", by_row=False),
            read_parquet_named(_graph_file(paths, "quarantine")),
        ]
    )


def _ownership_stats(paths: RunPaths, cfg: Settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per matched SNF the chain totals (partial counts summed); per provider its SNF's."""
    matched = _scan(
        _parts(paths, "aggregate", "ownership.parquet"),
        {"npi": pl.Int64(), "snf_entity_id": pl.String()},
    )
    if cfg.graph_mode == "neo4j-live":
        return matched, pl.DataFrame(
            schema={
                "snf_entity_id": pl.String,
                **{c: pl.Int64 for c in CHAIN_COLUMNS[:2]},
                "owner_excluded": pl.Boolean,
            }
        )
    members = _scan(
        _parts(paths, "aggregate", "snf_members.parquet"),
        {"snf": pl.String(), "members": pl.Int64(), "excluded": pl.Int64()},
    )
    totals = members.group_by("snf").agg(pl.col("members").sum(), pl.col("excluded").sum())
    owner_excluded = read_parquet_named(_graph_file(paths, "owner_excluded")).with_columns(
        pl.lit(True).alias("owner_excluded")
    )
    per_snf = (
        matched.select(pl.col("snf_entity_id").alias("snf"))
        .unique()
        .join(totals, on="snf", how="left")
        .join(owner_excluded, on="snf", how="left")
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


def _chain_detail(paths: RunPaths, per_snf: pl.DataFrame, cfg: Settings) -> dict[str, pl.DataFrame]:
    """For `explain`, per matched SNF: its chain and group entities with their hop distances
    and EXCLUDED_BY links, and its excluded chain providers."""
    snfs = per_snf.select(pl.col("snf_entity_id").alias("snf"))
    excluded = _scan(_parts(paths, "aggregate", "snf_excluded.parquet"), EXCLUDED_MEMBER_SCHEMA)
    if cfg.graph_mode == "neo4j-live":  # each batch asked Neo4j: no graph in the run
        entities = pl.DataFrame(
            schema={"snf_entity_id": pl.String, "entity_id": pl.String, "name": pl.String,
                    "entity_type": pl.String, "up_hops": pl.Int32, "down_hops": pl.Int32,
                    "excluded_by": pl.Boolean}
        )  # fmt: skip
    else:
        flagged = read_parquet_named(_graph_file(paths, "flagged"))
        entities = (
            read_parquet_named(_graph_file(paths, "groups"))
            .join(snfs, on="snf", how="semi")
            .join(
                read_parquet_named(_graph_file(paths, "entities")),
                left_on="node",
                right_on="entity_id",
                how="left",
            )
            .with_columns(pl.col("node").is_in(flagged["node"].implode()).alias("excluded_by"))
            .select(
                pl.col("snf").alias("snf_entity_id"),
                pl.col("node").alias("entity_id"),
                "name",
                "entity_type",
                "up_hops",
                "down_hops",
                "excluded_by",
            )
            .sort("snf_entity_id", "entity_id")
        )
    members = excluded.join(snfs, on="snf", how="semi").rename({"snf": "snf_entity_id"})
    return {"ownership_entities": entities, "chain_excluded": members.sort("snf_entity_id", "npi")}


def combine(paths: RunPaths) -> RunManifest:
    """Gather the shards into the run's statistics, quarantine, counts and manifest."""
    data_dir, cfg, shards = read_plan(paths)
    window = read_json(_window_path(paths))
    for keys, stats, ranks in (
        (PRIMARY_KEYS, "billing_primary", "m1_rank_primary"),
        (FALLBACK_KEYS, "billing_fallback", "m1_rank_fallback"),
    ):
        table, rank = _global_groups(paths, keys, stats, ranks)
        write_parquet_atomic(table, paths.stat(stats))
        write_parquet_atomic(rank, paths.stat(ranks))
    growth = pl.concat(
        [read_parquet_named(p) for p in _parts(paths, "peer_stats", "growth.parquet")]
    )
    write_parquet_atomic(growth.sort(GROWTH_KEYS), paths.stat("growth"))
    ownership, per_snf = _ownership_stats(paths, cfg)
    write_parquet_atomic(ownership, paths.stat("ownership"))
    write_parquet_atomic(per_snf, paths.stat("ownership_snf"))
    for name, frame in _chain_detail(paths, per_snf, cfg).items():
        write_parquet_atomic(frame, paths.stat(name))
    leie = _scan(_parts(paths, "aggregate", "exclusions.parquet"), EXCLUSION_SCHEMA)
    leie = leie.filter(pl.col("npi").is_not_null()).sort("npi", "exclusion_id")
    write_parquet_atomic(leie, paths.stat(EXCLUSIONS_STAT))
    digests = _scan(
        _parts(paths, "aggregate", "npi_digest.parquet"), {"npi": pl.Int64(), "digest": pl.Int64()}
    )
    write_parquet_atomic(digests.sort("npi"), paths.stat("npi_digest"))
    quarantine = _quarantine(paths)
    write_parquet_atomic(quarantine, paths.quarantine)
    sums: dict[str, int] = {}
    for b in range(shards):
        for key, value in read_json(_done_marker(paths, "aggregate", b)).items():
            if key != "quarantined_rows":
                sums[key] = sums.get(key, 0) + int(value)
    counts = {
        **sums,
        "quarantined_rows": quarantine.height,
        "window_end_year": window["window_end_year"],
        "window_end_reason": window["window_end_reason"],
    }
    write_json_atomic(counts, paths.input_counts)
    plan = read_json(plan_path(paths))
    fingerprint = plan["fingerprint"] or run_fingerprint(data_dir, cfg)
    return RunManifest(
        run_id=paths.run_id,
        kind="full",
        source=str(Path(data_dir).resolve()),
        window_end_year=int(window["window_end_year"]),
        batches_total=sum(window["batches"]),
        batch_size=cfg.batch_size,
        providers_scored=sums["providers_scored"],
        input_fingerprint=fingerprint,
        settings=plan["settings"],
        member_counts=len(_member_count_files(paths)) == shards,
    )


STAGE_BODIES: dict[str, Callable[[RunPaths, int], dict[str, Any]]] = {
    EXPORT: export,
    "ingest": ingest,
    "count": count,
    "aggregate": aggregate,
    "peer_stats": peer_stats,
}


def run_stage_task(paths: RunPaths, stage: str, index: int) -> dict[str, Any]:
    """One shard task of one stage, as every engine calls it (by name: messages carry names)."""
    if stage not in STAGE_BODIES:
        msg = f"unknown stage {stage!r} (stages: {', '.join(STAGE_BODIES)})"
        raise RunStateError(msg)
    shards = read_plan(paths)[2]
    if not 0 <= index < shards:
        msg = f"run {paths.run_id}: {stage} shard {index} out of range 0..{shards - 1}"
        raise RunStateError(msg)
    started = utc_now("milliseconds")
    summary = STAGE_BODIES[stage](paths, index)
    task = {"started_at": started, "finished_at": utc_now("milliseconds"), **task_host()}
    write_json_atomic(task, _task_record(paths, stage, index))  # the report's timeline
    return summary


def task_records(paths: RunPaths) -> list[dict[str, Any]]:
    """Every finished stage task of this prepare: stage, shard, start, end, host, pid."""
    records = []
    for path in sorted(stage_root(paths).glob("*/*/task.json")):
        with contextlib.suppress(OSError, ValueError, TypeError):  # torn or foreign: not drawn
            stage, shard = path.parent.parent.name, int(path.parent.name)
            records.append({"stage": stage, "shard": shard, **read_json(path)})
    return records
