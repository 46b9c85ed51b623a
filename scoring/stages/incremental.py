"""Incremental runs (SPEC §6.6): given NPIs scored against the latest full run.

T, the peer statistics, the percent-rank tables, the ownership results and the
r_raw reference population all come from the reference full run, so rescoring
an NPI whose inputs did not change reproduces its full-run row exactly.
"""

from __future__ import annotations

import hashlib

import polars as pl

from scoring.db.connection import connect
from scoring.db.publish import table_full_run
from scoring.errors import InputError, RunStateError
from scoring.inputs.contract import RawInputs, read_dataset
from scoring.inputs.dataset import DataSource
from scoring.inputs.digest import npi_digests
from scoring.inputs.npi import npi_to_str
from scoring.inputs.quarantine import QUARANTINE_SCHEMA
from scoring.inputs.validation import validate
from scoring.methodology.components.concentration import (
    program_amounts,
    program_shares,
    program_totals,
)
from scoring.methodology.components.exclusion import active_exclusions
from scoring.methodology.provider_scores import STAT_NAMES
from scoring.runs.ledger import RunLedger
from scoring.runs.manifest import RunManifest
from scoring.runs.roots import RunRoot, run_at, runs_under
from scoring.runs.store import (
    INPUT_COUNTS,
    LEDGER,
    QUARANTINE,
    RunPaths,
    run_store,
    share_key,
    stat_key,
    writable_run,
)
from scoring.stages.aggregate import SLICE_COLUMNS
from scoring.stages.batches import write_batches
from scoring.stages.combine import EXCLUSIONS_STAT, EXPLAIN_CHAIN_STATS
from scoring.stages.provider_rows import provider_rows, provider_year_rows

INCREMENTAL_BATCH = 1_000_000  # one batch: incremental runs are small


def published_full_run(run_root: RunRoot, database_url: str) -> RunPaths:
    """The full run whose scores are on the table: the last full publish in claidex_runs."""
    with connect(database_url) as conn:
        row = table_full_run(conn)
    if row is None:
        msg = "no full run has been published (claidex_runs): run a full recompute first"
        raise RunStateError(msg)
    paths = run_at(run_root, row[0])
    if not run_store(paths).exists(LEDGER):
        msg = f"the published full run {row[0]} is not under {run_root} (CLAIDEX_RUN_ROOT)"
        raise RunStateError(msg)
    return paths


def latest_full_run(
    run_root: RunRoot, *, published_only: bool, database_url: str | None = None
) -> RunPaths:
    """The reference for incremental runs: with a database, the full run actually published
    (publish order, not creation order); else the most recent merged or published one."""
    if published_only and database_url is not None:
        return published_full_run(run_root, database_url)
    finished = ("published",) if published_only else ("published", "merged")
    candidates = []
    for paths in runs_under(run_root, holding=None):  # each ledger is read anyway
        state = RunLedger(paths).read()
        if state.get("kind") == "full" and state.get("status") in finished:
            candidates.append((state.get("created_at", ""), paths.run_id))
    if not candidates:
        msg = f"no finished full run under {run_root}: run a full recompute first"
        raise RunStateError(msg)
    return run_at(run_root, max(candidates)[1])


def _only(raw: RawInputs, npis: list[str]) -> RawInputs:
    """The source rows of these NPIs, read once into memory."""
    wanted = pl.Series(npis, dtype=pl.String)

    def pick(frame: pl.LazyFrame) -> pl.LazyFrame:
        return frame.filter(pl.col("npi").is_in(wanted.implode())).collect().lazy()

    return RawInputs(
        raw.data_dir,
        pick(raw.providers),
        pick(raw.payments),
        pick(raw.exclusions),
        None,
        None,
        None,
    )


def _link_reference_stats(paths: RunPaths, reference: RunPaths) -> None:
    held = run_store(reference)
    # the chain totals batches join; what `explain` shows of the chain (runs before it lack it)
    for name in (*STAT_NAMES, "ownership_snf", *EXPLAIN_CHAIN_STATS):
        if name in STAT_NAMES or held.exists(stat_key(name)):
            share_key(reference, paths, stat_key(name))


def _own_exclusions(
    paths: RunPaths, reference: RunPaths, exclusions: pl.DataFrame, npis: list[str]
) -> None:
    """The reference's LEIE rows, those of the rescored NPIs replaced by their current ones."""
    held = run_store(reference)
    if not held.exists(stat_key(EXCLUSIONS_STAT)):
        return
    mine = pl.Series(npis, dtype=pl.String).cast(pl.Int64).implode()
    kept = held.read_frame(stat_key(EXCLUSIONS_STAT)).filter(~pl.col("npi").is_in(mine))
    own = exclusions.select(kept.columns).cast(kept.schema)  # type: ignore[arg-type]
    run_store(paths).write_frame(
        stat_key(EXCLUSIONS_STAT), pl.concat([kept, own]).sort("npi", "exclusion_id")
    )


def prepare_incremental(
    paths: RunPaths, reference: RunPaths, data_dir: DataSource, npis: list[str]
) -> RunManifest:
    """Step 1 for an incremental run: the NPIs' own rows, the reference run's statistics."""
    ref = RunManifest.load(reference)
    cfg, t = ref.cfg, ref.window_end_year
    writable_run(paths)
    paths.clear()
    store = run_store(paths)
    ledger = RunLedger(paths)
    fingerprint = hashlib.blake2b(f"{ref.run_id}:{','.join(npis)}".encode(), digest_size=16)
    ledger.start(kind="incremental", source=str(data_dir), fingerprint=fingerprint.hexdigest())
    ledger.update(reference_run=ref.run_id)
    with ledger.step("prepare"):
        clean = validate(_only(read_dataset(data_dir, with_graph=False), npis), cfg)
        py, window, attrs = provider_year_rows(clean, t, cfg)
        scored = py["npi"].unique()
        requested = pl.Series("npi", npis, dtype=pl.String)
        unknown = requested.filter(~requested.cast(pl.Int64).is_in(scored.implode())).to_list()
        no_data = pl.DataFrame(
            {
                "source": "enqueue",
                "source_row": None,
                "npi": unknown,
                "reason": f"no payment data in {t - cfg.window_years + 1}-{t}",
                "record": None,
            },
            schema=QUARANTINE_SCHEMA,
        )
        store.write_frame(QUARANTINE, pl.concat([clean.quarantine, no_data]))
        # the checks before publish: the rescored NPIs' rows against their quarantine
        store.write_json(INPUT_COUNTS, {"payment_rows_valid": clean.payments.height})
        if py.is_empty():
            msg = f"no payment data for NPI(s): {', '.join(unknown[:20])}"
            raise InputError(msg)
        ownership = run_store(reference).read_frame(stat_key("ownership")).filter(
            pl.col("npi").is_in(scored.implode())
        )
        per_program = program_amounts(window, t, cfg).collect().lazy()
        providers = provider_rows(
            attrs,
            program_totals(per_program, cfg).collect(),
            ownership,
            active_exclusions(clean.exclusions.lazy()).collect(),
        )
        _link_reference_stats(paths, reference)
        _own_exclusions(paths, reference, clean.exclusions, npis)
        write_batches(
            store,
            py.select(SLICE_COLUMNS),
            providers,
            INCREMENTAL_BATCH,
            programs=program_shares(per_program, cfg).collect(),
        )
        manifest = RunManifest(
            run_id=paths.run_id,
            kind="incremental",
            source=str(data_dir),
            window_end_year=t,
            batches_total=1,
            batch_size=INCREMENTAL_BATCH,
            providers_scored=providers.height,
            input_fingerprint=fingerprint.hexdigest(),
            settings=ref.settings,
        )
        manifest.save(paths)
    ledger.set_status(
        "scoring",
        batches_total=1,
        window_end_year=t,
        unknown_npis=unknown,
        providers_scored=providers.height,
    )
    return manifest


def changed_npis(reference: RunPaths, data_dir: DataSource) -> list[str]:
    """NPIs whose source rows (window payments, provider record, LEIE rows) differ from what
    the reference full run scored, or that are new since."""
    ref = RunManifest.load(reference)
    cfg, t = ref.cfg, ref.window_end_year
    raw = read_dataset(data_dir, with_graph=False)
    clean = validate(raw, cfg)
    window = clean.payments.lazy().filter(pl.col("year").is_between(t - cfg.window_years + 1, t))
    current = npi_digests(window, clean.providers.lazy(), clean.exclusions.lazy())
    previous = run_store(reference).scan_frame(stat_key("npi_digest"))
    changed = current.join(previous, on=["npi", "digest"], how="anti")
    scored = window.select("npi").unique()  # only NPIs that have something to score
    return (
        changed.join(scored, on="npi", how="semi")
        .select(npi_to_str(pl.col("npi")))
        .sort("npi")
        .collect()["npi"]
        .to_list()
    )
