"""Issue 13: the prepare stages fan out over shards and give the same bytes for any count."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from claidex.dev.sample import generate
from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.errors import RunStateError
from scoring.inputs.npi import checked_npis
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths, read_json
from scoring.stages.drive import resume_prepare, run_serially
from scoring.stages.incremental import prepare_incremental
from scoring.stages.merge import merge_and_calibrate
from scoring.stages.pipeline import Work, stage_progress
from scoring.stages.score_batch import score_batch
from scoring.stages.stage_files import missing_shards

SHARDS = (1, 3, 16, 64)
STAT_FILES = ("billing_primary", "billing_fallback", "m1_rank_primary", "growth", "npi_digest")


def _hostile_copy(source: Path, target: Path) -> None:
    """The sample plus every kind of bad row: rule failures, exact copies, duplicate
    provider NPIs, bad LEIE rows and dangling graph links, spread over the file."""
    shutil.copytree(source, target)
    payments = pl.read_parquet(source / "payments_combined.parquet")
    n = payments.height
    copies = payments.gather(list(range(0, n, 97)))  # exact duplicates, far from their originals
    broken = payments.gather(list(range(5, n, 131))).with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(pl.lit(-1.0))
        .otherwise(pl.col("payments"))
        .alias("payments"),
        pl.when(pl.int_range(pl.len()) % 3 == 1)
        .then(pl.lit("123"))
        .otherwise(pl.col("npi"))
        .alias("npi"),
        pl.when(pl.int_range(pl.len()) % 3 == 2)
        .then(pl.lit(1800))
        .otherwise(pl.col("year"))
        .alias("year"),
    )
    mixed = pl.concat([payments, copies, broken]).sample(fraction=1.0, shuffle=True, seed=4)
    mixed.write_parquet(target / "payments_combined.parquet", row_group_size=5_000)
    providers = pl.read_parquet(source / "providers.parquet")
    twins = providers.gather(list(range(0, providers.height, 50))).with_columns(
        pl.lit("A TWIN RECORD").alias("display_name")
    )
    bad = providers.head(4).with_columns(pl.lit("12345").alias("npi"))
    pl.concat([twins, providers, bad]).write_parquet(target / "providers.parquet")
    exclusions = pl.read_parquet(source / "exclusions.parquet")
    pl.concat(
        [exclusions, exclusions.head(2).with_columns(pl.lit("").alias("exclusion_id"))]
    ).write_parquet(target / "exclusions.parquet")
    ownership = pl.read_parquet(source / "ownership.parquet")
    dangling = ownership.head(2).with_columns(pl.lit("NO-SUCH-ENTITY").alias("owner_id"))
    pl.concat([ownership, dangling]).write_parquet(target / "ownership.parquet")


@pytest.fixture(scope="module")
def hostile_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clean = tmp_path_factory.mktemp("shard-clean")
    generate(clean, providers=1200, seed=13)
    target = tmp_path_factory.mktemp("shard-hostile") / "data"
    _hostile_copy(clean, target)
    return target


@pytest.fixture(scope="module")
def reference(hostile_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> RunPaths:
    root = tmp_path_factory.mktemp("shard-ref")
    return run_local(
        hostile_dataset, Settings(batch_size=10**9), run_dir=root / "ref", show_progress=False
    )


@pytest.mark.parametrize(
    ("shards", "batch_size", "workers", "fuse"),
    [(3, 7, 1, True), (16, 1000, 2, True), (64, 97, 1, True), (1, 250, 2, False)],
)
def test_any_shard_count_gives_the_same_bytes(
    hostile_dataset: Path,
    reference: RunPaths,
    tmp_path: Path,
    shards: int,
    batch_size: int,
    workers: int,
    fuse: bool,
) -> None:
    """Against the reference, a fused plan (one shard: its stages as one task, no shuffle
    files): every sharded plan, and the one-shard plan run as separate stages, alike."""
    assert read_json(reference.root / "stages" / "plan.json")["fused"] is True
    assert not list((reference.root / "stages").glob("ingest/*/payments.parquet"))
    assert not list((reference.root / "stages").glob("aggregate/*/eligible.parquet"))
    cfg = Settings(shards=shards, batch_size=batch_size, workers=workers, fuse=fuse)
    paths = run_local(hostile_dataset, cfg, run_dir=tmp_path / "run", show_progress=False)
    assert read_json(paths.root / "stages" / "plan.json")["fused"] is False
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()
    for name in STAT_FILES:
        assert paths.stat(name).read_bytes() == reference.stat(name).read_bytes(), name
    counts, expected = read_json(paths.input_counts), read_json(reference.input_counts)
    assert counts == expected
    assert _report_numbers(paths) == _report_numbers(reference)
    assert RunLedger(paths).read()["stages"] == {
        stage: f"{shards}/{shards}" for stage in ("ingest", "count", "aggregate", "peer_stats")
    }
    assert RunLedger(reference).read()["stages"] == {
        stage: "1/1" for stage in ("fused", "ingest", "count", "aggregate", "peer_stats")
    }


def _report_numbers(paths: RunPaths) -> dict[str, object]:
    """report.json without what names the run, times it or counts its batches."""
    report = read_json(paths.report)
    run_only = ("header", "timeline", "run_id", "batches", "timings_seconds")
    return {k: v for k, v in report.items() if k not in run_only}


def test_the_hostile_rows_are_all_quarantined(hostile_dataset: Path, reference: RunPaths) -> None:
    """The reference itself is right: every planted bad row is in quarantine, once."""
    quarantine = pl.read_parquet(reference.quarantine)
    reasons = quarantine.group_by("source", "reason").len().sort("source", "reason")
    by_reason = {(s, r): n for s, r, n in reasons.rows()}
    payments = pl.read_parquet(hostile_dataset / "payments_combined.parquet")
    assert by_reason[("payments_combined", "duplicate row")] >= payments.height // 100
    assert by_reason[("payments_combined", "payments negative")] > 0
    assert by_reason[("payments_combined", "npi not 10 digits")] > 0
    assert by_reason[("providers", "duplicate npi")] > 0
    assert by_reason[("exclusions", "exclusion_id missing")] == 2
    assert by_reason[("ownership", "owner_id not in entities")] == 2
    assert quarantine.select("source", "source_row").is_unique().all()
    counts = read_json(reference.input_counts)
    assert (
        counts["payment_rows_valid"]
        + quarantine.filter(pl.col("source") == "payments_combined").height
        == payments.height
    )


def test_resume_reruns_only_the_missing_shards(
    hostile_dataset: Path, reference: RunPaths, tmp_path: Path
) -> None:
    """A prepare that died mid-stage: the finished shards are kept, the rest re-run once."""
    cfg = Settings(shards=8, batch_size=300)
    paths = RunPaths(tmp_path / "run")

    class KilledError(Exception):
        pass

    def dies_in_aggregate(p: RunPaths, work: Work) -> None:
        if work.name == "aggregate":
            run_serially(p, Work(work.step, work.indices[:3]))
            raise KilledError
        run_serially(p, work)

    from scoring.stages.drive import prepare

    with pytest.raises(KilledError):
        prepare(paths, hostile_dataset, cfg, dies_in_aggregate)
    assert missing_shards(paths, "ingest", 8) == []
    assert missing_shards(paths, "aggregate", 8) == [3, 4, 5, 6, 7]
    assert stage_progress(paths)["aggregate"] == "3/8"
    kept = {
        i: (paths.root / "stages" / "aggregate" / f"{i:05d}" / "done.json").stat().st_mtime_ns
        for i in range(3)
    }
    ran: list[tuple[str, int]] = []

    def recording(p: RunPaths, work: Work) -> None:
        ran.extend((work.name, i) for i in work.indices)
        run_serially(p, work)

    manifest = resume_prepare(paths, recording)
    assert ran == [("aggregate", i) for i in range(3, 8)] + [("peer_stats", i) for i in range(8)]
    for i, mtime in kept.items():
        done = paths.root / "stages" / "aggregate" / f"{i:05d}" / "done.json"
        assert done.stat().st_mtime_ns == mtime
    for batch in range(manifest.batches_total):
        score_batch(paths, batch)
    merge_and_calibrate(paths)
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()


def test_a_fused_task_killed_midway_leaves_no_stage_done_and_resumes_to_the_same_bytes(
    hostile_dataset: Path, reference: RunPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after aggregate, before peer_stats: no stage of the task reads as done (a code
    version without the fused step resuming it would otherwise read shuffle files the task
    never wrote), and a resume runs the fused task again to the reference's bytes."""
    import scoring.stages.fused as fused_module

    class KilledError(Exception):
        pass

    def killed(*_args: object) -> None:
        raise KilledError

    paths = RunPaths(tmp_path / "run")
    monkeypatch.setattr(fused_module, "peer_group_stats", killed)
    from scoring.stages.drive import prepare

    with pytest.raises(KilledError):
        prepare(paths, hostile_dataset, Settings(batch_size=10**9), run_serially)
    for stage in ("fused", "ingest", "aggregate", "peer_stats"):
        assert missing_shards(paths, stage, 1) == [0], stage
    monkeypatch.undo()
    ran: list[str] = []

    def recording(p: RunPaths, work: Work) -> None:
        ran.append(work.name)
        run_serially(p, work)

    manifest = resume_prepare(paths, recording)
    assert ran == ["fused"]
    for batch in range(manifest.batches_total):
        score_batch(paths, batch)
    merge_and_calibrate(paths)
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()


def test_incremental_against_a_sharded_reference(sample_dataset: Path, tmp_path: Path) -> None:
    full = run_local(
        sample_dataset,
        Settings(shards=16, batch_size=200),
        run_dir=tmp_path / "full",
        show_progress=False,
    )
    scores = pl.read_parquet(full.scores)
    chained = scores.filter(pl.col("chain_provider_count") > 0).head(50)
    picked = pl.concat([scores.sample(n=100, seed=8), chained]).unique("npi").sort("npi")
    assert picked["chain_provider_count"].fill_null(0).sum() > 0  # chains are in the sample
    paths = RunPaths(tmp_path / "inc")
    prepare_incremental(paths, full, sample_dataset, checked_npis(picked["npi"].to_list()))
    score_batch(paths, 0)
    redone = merge_and_calibrate(paths, full)
    assert redone.equals(picked)


def _volume_with(dataset: Path, root: Path):
    from modal_burst.transfer import upload_dataset
    from tests.modal_standin import DirectoryVolume

    volume = DirectoryVolume(root / "volume")
    upload_dataset(volume, dataset, "claidex")
    return volume


# 64 shards is test_any_shard_count_gives_the_same_bytes[64-97-1]'s (the same stage bodies,
# locally); on the stand-in it took 80-180 s and added no path that 3 and 16 do not take.
@pytest.mark.parametrize(("shards", "batch_size"), [(3, 450), (16, 10**9)])
def test_the_modal_standin_maps_each_stage_and_gives_the_same_bytes(
    hostile_dataset: Path,
    reference: RunPaths,
    tmp_path: Path,
    shards: int,
    batch_size: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modal_burst import app as burst_app
    from modal_burst.burst import BurstRequest
    from modal_burst.driver import run_burst
    from modal_burst.layout import VolumeLayout
    from tests.modal_standin import StandIn

    monkeypatch.delenv("DATABASE_URL", raising=False)
    volume = _volume_with(hostile_dataset, tmp_path)
    standin = StandIn(burst_app, volume.root)
    overrides = {"shards": shards, "batch_size": batch_size}
    with standin.run() as remote:
        outcome = run_burst(
            remote, BurstRequest("m1", overrides=overrides, publish=False), show_progress=False
        )
    assert outcome.status == "merged", outcome.detail
    paths = VolumeLayout(volume.root).run("m1")
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()
    assert read_json(paths.input_counts) == read_json(reference.input_counts)
    shard = standin.records["stage_shard"]
    assert sorted(shard.mapped) == sorted(list(range(shards)) * 4)  # every stage, each once
    singles = [call[1] for call in standin.records["stage_single"].remote_calls]
    assert singles == ["reduce", "combine"]  # each once, in the table's order


def test_a_modal_shard_that_keeps_dying_fails_the_run_and_resume_runs_only_it(
    hostile_dataset: Path, reference: RunPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard whose container dies once is retried by Modal; one that dies past the
    retries fails the run at prepare, naming the shard; a resume maps only that shard."""
    from modal_burst import app as burst_app
    from modal_burst.burst import BurstRequest
    from modal_burst.driver import run_burst
    from modal_burst.layout import VolumeLayout
    from tests.modal_standin import CrashRule, StandIn

    monkeypatch.delenv("DATABASE_URL", raising=False)
    volume = _volume_with(hostile_dataset, tmp_path)
    stage_dir = "runs/m2/stages"
    once = CrashRule(f"{stage_dir}/ingest/00001/done.json", times=1)
    always = CrashRule(f"{stage_dir}/aggregate/00002/done.json")
    standin = StandIn(burst_app, volume.root, crash=[once, always])
    request = BurstRequest("m2", overrides={"shards": 4, "batch_size": 300}, publish=False)
    with standin.run() as remote:
        failed = run_burst(remote, request, show_progress=False)
    assert failed.status == "failed"
    assert "aggregate" in failed.detail and "shard 2" in failed.detail
    paths = VolumeLayout(volume.root).run("m2")
    state = RunLedger(paths).read()
    assert state["status"] == "failed" and state["failed_step"] == "prepare"
    assert missing_shards(paths, "aggregate", 4) == [2]
    assert missing_shards(paths, "ingest", 4) == []  # the one death was retried
    assert standin.crash_count[0] == 1

    resumer = StandIn(burst_app, volume.root)
    with resumer.run() as remote:
        resumed = run_burst(remote, BurstRequest("m2", resume=True), show_progress=False)
    assert resumed.status == "merged", resumed.detail
    # aggregate's missing shard, then all of peer_stats (never started)
    assert sorted(resumer.records["stage_shard"].mapped) == [0, 1, 2, 2, 3]
    assert resumer.records["prepare"].remote_calls == []
    assert paths.scores.read_bytes() == reference.scores.read_bytes()


def test_shards_zero_sizes_the_run_from_its_payment_rows(
    hostile_dataset: Path, reference: RunPaths, tmp_path: Path
) -> None:
    rows = pl.scan_parquet(hostile_dataset / "payments_combined.parquet").select(pl.len())
    total = rows.collect().item()
    cfg = Settings(shards=0, shard_rows=total // 4, batch_size=500)  # 5 shards (4 and a rest)
    paths = run_local(hostile_dataset, cfg, run_dir=tmp_path / "auto", show_progress=False)
    assert read_json(paths.root / "stages" / "plan.json")["shards"] == -(-total // (total // 4))
    assert RunLedger(paths).read()["stages"]["ingest"] == "5/5"
    assert paths.scores.read_bytes() == reference.scores.read_bytes()


def test_claidex_resume_finishes_an_interrupted_prepare_and_refuses_changed_inputs(
    hostile_dataset: Path, reference: RunPaths, tmp_path: Path
) -> None:
    """`claidex resume RUN` after a prepare died in aggregate: only the missing shards run;
    a resume that would ingest inputs replaced since the plan is refused."""
    from claidex.local_engine import resume_local
    from scoring.errors import InputError
    from scoring.stages.drive import prepare

    data = tmp_path / "data"
    shutil.copytree(hostile_dataset, data)
    cfg = Settings(shards=6, batch_size=400)

    class KilledError(Exception):
        pass

    def dies_in_aggregate(p: RunPaths, work: Work) -> None:
        cut = work.indices[:2] if work.name == "aggregate" else work.indices
        run_serially(p, Work(work.step, cut))
        if work.name == "aggregate":
            raise KilledError

    paths = RunPaths(tmp_path / "run")
    with pytest.raises(KilledError):
        prepare(paths, data, cfg, dies_in_aggregate)
    resume_local(paths, workers=2, show_progress=False)
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert RunLedger(paths).read()["stages"]["aggregate"] == "6/6"

    def dies_in_ingest(p: RunPaths, work: Work) -> None:
        run_serially(p, Work(work.step, work.indices[:2]))
        raise KilledError

    again = RunPaths(tmp_path / "again")
    with pytest.raises(KilledError):
        prepare(again, data, cfg, dies_in_ingest)
    payments = pl.read_parquet(data / "payments_combined.parquet")
    payments.head(payments.height - 1).write_parquet(data / "payments_combined.parquet")
    with pytest.raises(InputError, match=r"changed since the run was planned"):
        resume_local(again, workers=1, show_progress=False)


def test_packed_and_two_column_npi_years_agree_and_wide_year_ranges_are_refused() -> None:
    """count packs (npi, year) into one integer when that is exact, and takes the two-column
    path for a row it cannot pack: the same pairs either way. A year range wide enough to
    overflow the packing is refused where settings are read (years are Int32 anyway)."""
    from scoring.config import SettingsError
    from scoring.stages.count import NPI_LIMIT, _distinct_npi_years

    rows = pl.DataFrame(
        {"npi": [1234567893, 1234567893, 1245319599, 1245319599], "year": [2020, 2020, 2019, 2021]},
        schema={"npi": pl.Int64, "year": pl.Int32},
    )
    order = ["npi", "year"]
    assert _distinct_npi_years(rows, Settings()).sort(order).equals(rows.unique().sort(order))
    odd = rows.vstack(pl.DataFrame({"npi": [NPI_LIMIT], "year": [2020]}, schema=rows.schema))
    assert _distinct_npi_years(odd, Settings()).sort(order).equals(odd.unique().sort(order))
    with pytest.raises(SettingsError, match="CLAIDEX_MAX_VALID_YEAR"):
        Settings(max_valid_year=10**12)


def test_batches_read_their_members_rank_counts_and_refuse_inconsistent_ones(
    hostile_dataset: Path, tmp_path: Path
) -> None:
    """peer_stats keeps each member provider-year's m1 rank counts, so a full run's batch
    reads its own rows instead of the population's rank tables: the same chunk as the
    rank-table lookup; a counts file missing a member's row fails the batch, never
    scoring that provider-year at the 50th percentile."""
    from scoring.methodology.provider_scores import score_providers
    from scoring.runs.manifest import RunManifest
    from scoring.runs.store import read_parquet_named, write_bucketed_atomic
    from scoring.stages.peer_groups import batch_member_counts
    from scoring.stages.score_batch import compute_batch, load_stats, with_chain_totals
    from scoring.stages.stage_files import BUCKET

    paths = run_local(
        hostile_dataset,
        Settings(shards=4, batch_size=150),
        run_dir=tmp_path / "run",
        show_progress=False,
    )
    manifest = RunManifest.load(paths)
    assert manifest.member_counts  # combine found every peer_stats shard's file
    for batch in range(manifest.batches_total):
        providers = read_parquet_named(paths.batch_providers(batch))
        counts = batch_member_counts(paths, providers["npi"], 4)
        assert counts.height > 0
        looked_up = score_providers(
            read_parquet_named(paths.batch_provider_years(batch)).lazy(),
            with_chain_totals(providers, paths).lazy(),
            load_stats(paths),
            t=manifest.window_end_year,
            cfg=manifest.cfg,
        ).collect()
        computed = compute_batch(paths, manifest, batch).drop("prepare_id")
        assert computed.equals(looked_up), batch

    victim = paths.root / "stages" / "peer_stats" / "00002" / "member_counts.parquet"
    rows = pl.read_parquet(victim)
    write_bucketed_atomic(rows.slice(1), victim, BUCKET)  # one member's counts lost
    lost = rows.row(0, named=True)
    batch = next(
        b
        for b in range(manifest.batches_total)
        if lost["npi"] in read_parquet_named(paths.batch_providers(b))["npi"].to_list()
    )
    with pytest.raises(RunStateError, match=r"rank counts for .* eligible provider-years"):
        compute_batch(paths, manifest, batch)
    shifted = rows.with_columns(  # as many rows, one of them for a provider-year not there
        pl.when(pl.int_range(pl.len()) == 0).then(pl.col("year") - 50).otherwise(pl.col("year"))
    )
    write_bucketed_atomic(shifted, victim, BUCKET)
    with pytest.raises(RunStateError, match=r"\(1 without one\)"):
        compute_batch(paths, manifest, batch)
    victim.unlink()  # a shard without its file: the run refuses, never half-uses them
    with pytest.raises(RunStateError, match=r"3 of 4 peer_stats shards hold rank counts"):
        compute_batch(paths, manifest, batch)


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_stage_files_give_the_same_bytes(
    hostile_dataset: Path, reference: RunPaths, tmp_path: Path, compression: str
) -> None:
    cfg = Settings(shards=3, batch_size=400, stage_compression=compression)  # type: ignore[arg-type]
    paths = run_local(hostile_dataset, cfg, run_dir=tmp_path / "run", show_progress=False)
    assert paths.scores.read_bytes() == reference.scores.read_bytes()
    assert paths.quarantine.read_bytes() == reference.quarantine.read_bytes()
    ingest = paths.root / "stages" / "ingest" / "00000" / "payments.parquet"
    import pyarrow.parquet as pq

    assert pq.ParquetFile(ingest).metadata.row_group(0).column(1).compression == compression.upper()
