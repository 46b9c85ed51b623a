"""Step 1: validate and load inputs, compute global statistics and ownership, cut batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl

from scoring.concentration import program_totals
from scoring.config import Settings
from scoring.digest import npi_digests
from scoring.errors import InputError
from scoring.exclusion import active_exclusions
from scoring.graphdb.connection import GraphUnavailableError, neo4j_target
from scoring.graphdb.live import LIVE_SCHEMA_NO_NPI
from scoring.graphdb.snapshot import read_snapshot, verify_graph
from scoring.inputs import CORE_FILES, GRAPH_FILES, dataset_file, read_dataset
from scoring.ledger import RunLedger, input_fingerprint
from scoring.manifest import RunManifest
from scoring.ownership import ownership_counts
from scoring.peer_stats import (
    FALLBACK_KEYS,
    PRIMARY_KEYS,
    billing_group_stats,
    billing_metrics,
    growth_group_stats,
    m1_rank_table,
)
from scoring.population import (
    in_window,
    npis_per_year,
    peer_attributes,
    provider_years,
    window_end,
    with_growth,
)
from scoring.rundir import RunPaths, writable_run_dir, write_json_atomic, write_parquet_atomic
from scoring.steps.outage import through_outage
from scoring.validation import CleanInputs, validate

T = TypeVar("T")
SLICE_COLUMNS = ["npi", "year", "payments", "claims", "beneficiaries", "g"]


def _input_files(data_dir: Path, cfg: Settings) -> list[Path]:
    names = CORE_FILES + (GRAPH_FILES if cfg.graph_mode == "embedded" else ())
    paths = [dataset_file(data_dir, name) for name in names]
    return [path for path in paths if path.is_file()]


def _ownership_table(
    clean: CleanInputs, excluded: pl.DataFrame, cfg: Settings, ledger: RunLedger
) -> pl.DataFrame:
    """Per provider with an SNF match: the chain results, from the graph mode's source.

    neo4j-live leaves the table empty here (each batch asks Neo4j) but checks the
    connection first, so a wrong URI or password fails prepare, not every batch.
    """
    if cfg.graph_mode == "embedded":
        if clean.graph is None:
            msg = "the dataset has no ownership graph tables (entities, ownership, ...)"
            raise InputError(msg)
        graph, chain_excluded = clean.graph, excluded
    else:
        target = neo4j_target()

        def graph_down(exc: BaseException) -> bool | None:
            return True if isinstance(exc, GraphUnavailableError) else None

        def ride_out(action: Callable[[], T]) -> T:  # Neo4j restarting: wait, visibly
            return through_outage(
                action,
                ledger=ledger,
                step="prepare",
                window=cfg.neo4j_outage_window,
                judge=graph_down,
                what="Neo4j",
                gave_up=GraphUnavailableError,  # still transient: a task retry may find it back
            )

        if cfg.graph_mode == "neo4j-live":
            ride_out(lambda: verify_graph(target, cfg))
            return pl.DataFrame(schema={"npi": pl.Int64, **LIVE_SCHEMA_NO_NPI})
        snapshot = ride_out(lambda: read_snapshot(target, cfg))
        graph, chain_excluded = snapshot.graph, snapshot.excluded_npis
    return ownership_counts(clean.providers.lazy(), chain_excluded.lazy(), graph, cfg).collect()


def write_batches(
    paths: RunPaths, py: pl.DataFrame, providers: pl.DataFrame, batch_size: int
) -> int:
    """Cut the NPI-sorted population into batches; each batch gets only its own rows.

    Both frames must be sorted by npi: slice bounds come from a binary search.
    """
    n = providers.height
    total = max(1, -(-n // batch_size))
    starts = providers["npi"].gather(list(range(0, n, batch_size)))
    py_offsets = [*py["npi"].search_sorted(starts, side="left").to_list(), py.height]
    for index in range(total):
        lo, hi = index * batch_size, min(n, (index + 1) * batch_size)
        write_parquet_atomic(providers.slice(lo, hi - lo), paths.batch_providers(index))
        a, b = py_offsets[index], py_offsets[index + 1]
        write_parquet_atomic(py.slice(a, b - a), paths.batch_provider_years(index))
    return total


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
    window = clean.payments.lazy().filter(in_window(t, cfg))
    py = provider_years(window, cfg)
    population = py.select("npi").unique().sort("npi")
    attrs = peer_attributes(population, clean.providers.lazy(), window, cfg)
    py_df = billing_metrics(with_growth(py).join(attrs, on="npi"), cfg).sort("npi", "year")
    return py_df.collect(), window, attrs


def _prepare(paths: RunPaths, data_dir: Path, cfg: Settings, fingerprint: str) -> RunManifest:
    raw = read_dataset(data_dir, with_graph=cfg.graph_mode == "embedded")
    clean = validate(raw, cfg)
    write_parquet_atomic(clean.quarantine, paths.quarantine)
    end = window_end(npis_per_year(clean.payments.lazy().select("npi", "year")).collect(), cfg)
    t = end.year
    py, window, attrs = provider_year_rows(clean, t, cfg)
    eligible = py.lazy().filter("eligible")
    primary, fallback = pl.collect_all(
        [billing_group_stats(eligible, PRIMARY_KEYS), billing_group_stats(eligible, FALLBACK_KEYS)]
    )
    rank_p, rank_f, growth, totals, excluded = pl.collect_all(
        [
            m1_rank_table(eligible, primary.lazy(), PRIMARY_KEYS),
            m1_rank_table(eligible, fallback.lazy(), FALLBACK_KEYS),
            growth_group_stats(py.lazy()),
            program_totals(window, t, cfg),
            active_exclusions(clean.exclusions.lazy()),
        ]
    )
    for name, frame in {
        "billing_primary": primary,
        "billing_fallback": fallback,
        "m1_rank_primary": rank_p,
        "m1_rank_fallback": rank_f,
        "growth": growth,
    }.items():
        write_parquet_atomic(frame, paths.stat(name))
    ownership = _ownership_table(clean, excluded, cfg, RunLedger(paths))
    write_parquet_atomic(ownership, paths.stat("ownership"))  # for incremental runs
    digests = npi_digests(window, clean.providers.lazy(), clean.exclusions.lazy()).collect()
    write_parquet_atomic(digests, paths.stat("npi_digest"))  # for the daily refresh
    providers = provider_rows(attrs, totals, ownership, excluded)
    if providers.is_empty():
        first = t - cfg.window_years + 1
        msg = f"{data_dir}: no provider has a valid payment row in the window {first}-{t}"
        raise InputError(msg)
    batches = write_batches(paths, py.select(SLICE_COLUMNS), providers, cfg.batch_size)
    year = pl.col("year")
    counts = {
        "payment_rows_valid": clean.payments.height,
        "payment_rows_in_window": clean.payments.filter(in_window(t, cfg)).height,
        "payment_rows_before_window": clean.payments.filter(year < t - cfg.window_years + 1).height,
        "payment_rows_after_window": clean.payments.filter(year > t).height,
        "providers_valid": clean.providers.height,
        "providers_scored": providers.height,
        "provider_years": py.height,
        "quarantined_rows": clean.quarantine.height,
        "window_end_year": t,
        "window_end_reason": end.reason,
    }
    write_json_atomic(counts, paths.input_counts)
    return RunManifest(
        run_id=paths.run_id,
        kind="full",
        source=str(Path(data_dir).resolve()),
        window_end_year=t,
        batches_total=batches,
        batch_size=cfg.batch_size,
        providers_scored=providers.height,
        input_fingerprint=fingerprint,
        settings=cfg.model_dump(mode="json"),
    )


def prepare(paths: RunPaths, data_dir: Path, cfg: Settings) -> RunManifest:
    """Step 1 of a full run over a dataset directory; records status and timing in the ledger."""
    writable_run_dir(paths.root)
    paths.clear()
    ledger = RunLedger(paths)
    ledger.start(
        kind="full",
        source=str(Path(data_dir).resolve()),
        fingerprint=input_fingerprint(_input_files(data_dir, cfg)),
    )
    with ledger.step("prepare"):
        manifest = _prepare(paths, data_dir, cfg, ledger.read()["input_fingerprint"])
        manifest.save(paths)
    ledger.set_status(
        "scoring",
        batches_total=manifest.batches_total,
        window_end_year=manifest.window_end_year,
        providers_scored=manifest.providers_scored,
    )
    return manifest
