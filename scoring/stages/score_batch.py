"""Step 2: score one batch against the run's global statistics; idempotent."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from scoring.errors import BatchGaveUpError, RunStateError, StorageFullError
from scoring.graphdb.connection import neo4j_target
from scoring.graphdb.live import with_live_ownership
from scoring.methodology.peer_stats import eligible_expr
from scoring.methodology.provider_scores import PREPARE_ID, STAT_NAMES, PeerStats, score_providers
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.retry_policy import out_of_attempts, storage_full
from scoring.runs.store import RunPaths, batch_key, chunk_key, run_store, stat_key
from scoring.stages.combine import CHAIN_COLUMNS
from scoring.stages.peer_groups import batch_member_counts


@dataclass(frozen=True)
class BatchResult:
    batch_index: int
    rows: int
    seconds: float


def load_stats(paths: RunPaths) -> PeerStats:
    """Lazy handles on the run's global peer statistics tables."""
    store = run_store(paths)
    return PeerStats(**{name: store.scan_frame(stat_key(name)) for name in STAT_NAMES})


def with_chain_totals(providers: pl.DataFrame, paths: RunPaths) -> pl.DataFrame:
    """The chain results of each provider's SNF: the buckets' partial counts, summed by the
    combine stage, so a batch never needs the rest of the population."""
    per_snf = run_store(paths).read_frame(stat_key("ownership_snf"))
    return providers.drop(CHAIN_COLUMNS, strict=False).join(per_snf, on="snf_entity_id", how="left")


def compute_batch(paths: RunPaths, manifest: RunManifest, batch_index: int) -> pl.DataFrame:
    """The batch's chunk, computed from its own slice only."""
    if not 0 <= batch_index < manifest.batches_total:
        last = manifest.batches_total - 1
        msg = f"run {manifest.run_id}: batch {batch_index} out of range 0..{last}"
        raise RunStateError(msg)
    store = run_store(paths)
    providers = store.read_frame(batch_key(batch_index, "providers"))
    if manifest.cfg.graph_mode == "neo4j-live":  # the legacy design: this batch asks Neo4j
        providers = with_live_ownership(providers, neo4j_target(), manifest.cfg)
    else:
        providers = with_chain_totals(providers, paths)
    provider_years = store.read_frame(batch_key(batch_index, "provider_years"))
    counts = None
    if manifest.member_counts:
        counts = batch_member_counts(paths, providers["npi"], manifest.cfg.shards)
        eligible = provider_years.filter(eligible_expr(manifest.cfg))
        unmatched = eligible.join(counts, on=["npi", "year"], how="anti").height
        if unmatched or counts.height != eligible.height:  # else percentiles would be wrong
            msg = (
                f"run {manifest.run_id} batch {batch_index}: {counts.height} rank counts for "
                f"{eligible.height} eligible provider-years ({unmatched} without one); "
                "the peer_stats files are inconsistent"
            )
            raise RunStateError(msg)
    chunk = score_providers(
        provider_years.lazy(),
        providers.lazy(),
        load_stats(paths),
        t=manifest.window_end_year,
        cfg=manifest.cfg,
        member_counts=None if counts is None else counts.lazy(),
    ).collect()
    chunk = chunk.with_columns(pl.lit(manifest.prepare_id).alias(PREPARE_ID))
    if chunk.height != providers.height:
        msg = (
            f"run {manifest.run_id} batch {batch_index}: scored {chunk.height} of "
            f"{providers.height} providers; the batch slice is inconsistent"
        )
        raise RunStateError(msg)
    return chunk


def score_batch(
    paths: RunPaths,
    batch_index: int,
    *,
    worker: str = "local",
    redelivered: bool = False,
    on_start: Callable[[], None] | None = None,
) -> BatchResult:
    """Run step 2 for one batch: write its chunk (same bytes on every re-run) and ledger entry.

    `on_start` runs once the start is recorded: Modal commits the volume there, so a
    container killed mid-batch still counts as an attempt (batch_max_attempts)."""
    started = time.perf_counter()
    ledger = RunLedger(paths)
    attempt = ledger.batch_started(batch_index, worker=worker, redelivered=redelivered)
    if on_start is not None:
        on_start()
    try:
        manifest = RunManifest.load(paths)
        limit = manifest.cfg.batch_max_attempts
        if out_of_attempts(attempt, limit):
            msg = (
                f"batch {batch_index}: its worker died {attempt - 1} times running it "
                f"(limit {limit}); failing it instead of retrying forever"
            )
            raise BatchGaveUpError(msg)
        beat = manifest.cfg.heartbeat_seconds
        with ledger.heartbeat(f"batch-{batch_index:05d}", worker=worker, every=beat):
            chunk = compute_batch(paths, manifest, batch_index)
            run_store(paths).write_frame(chunk_key(batch_index), chunk)
    except Exception as exc:
        if not isinstance(exc, BatchGaveUpError) and storage_full(paths):
            # not this batch's failure: it is interrupted, the run stalls (never fails) and
            # the batch runs again once space is freed (a retry, a resume, the watchdog)
            with contextlib.suppress(OSError):
                ledger.batch_interrupted(batch_index, f"disk full: {type(exc).__name__}: {exc}")
            msg = (
                f"run {paths.run_id} batch {batch_index}: the run directory's disk is full "
                f"({type(exc).__name__}); the batch runs again once space is freed"
            )
            raise StorageFullError(msg) from exc
        ledger.batch_failed(batch_index, f"{type(exc).__name__}: {exc}")
        raise
    seconds = time.perf_counter() - started
    ledger.batch_done(
        batch_index, rows=chunk.height, seconds=seconds, worker=worker, redelivered=redelivered
    )
    return BatchResult(batch_index, chunk.height, seconds)
