"""Modal burst mode without Modal: the App's functions run in stand-in containers (one process
each, own view of the volume, secrets only from the stand-in's workspace, Modal's retry and
crash rules; see tests/modal_standin.py), driven by the real driver (issue: Modal)."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import mmap
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from types import ModuleType, SimpleNamespace

import polars as pl
import psycopg
import pytest
from modal.exception import InternalFailure, NotFoundError
from rich.progress import Progress

from claidex.local_engine import run_local
from modal_burst import app as burst_app
from modal_burst.burst import BurstRequest, BurstTracker
from modal_burst.driver import merge_only, prepare_stages, run_burst, run_overrides
from modal_burst.image import locked_packages
from modal_burst.layout import PRUNED, VolumeLayout
from modal_burst.prune import prune_runs
from modal_burst.run_secrets import STEPS, MissingSecretError, RunNeeds, secret_uses
from modal_burst.transfer import download_run, upload_dataset
from scoring.config import Settings
from scoring.errors import InputError, RunStateError
from scoring.runs.ledger import RunLedger
from tests.modal_standin import CrashRule, DirectoryVolume, StandIn, StandInForgottenCommitError
from tests.modal_standin_container import OPEN_FILES, Mount

ROOT = Path(__file__).resolve().parents[2]
BATCH = 500
BIG_BATCH = 1_000  # three batches: fewer container starts where a test needs few batches
NEO4J_VARIABLES = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")


@pytest.fixture
def volume(tmp_path: Path, sample_dataset: Path, monkeypatch: pytest.MonkeyPatch):
    """The committed state of the volume, holding the sample dataset as `claidex`. Nothing of
    this process's environment reaches a container: secrets come from a StandIn workspace."""
    stand_in = DirectoryVolume(tmp_path / "volume")
    upload_dataset(stand_in, sample_dataset, "claidex")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return stand_in


@pytest.fixture(scope="module")
def local_scores(sample_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The local engine's bytes, once for the module (read-only: every test compares)."""
    run_dir = tmp_path_factory.mktemp("local") / "run"
    paths = run_local(
        sample_dataset, Settings(batch_size=700), run_dir=run_dir, show_progress=False
    )
    return paths.scores.read_bytes()


def modal_for(volume: DirectoryVolume, **options) -> StandIn:
    return StandIn(burst_app, volume.root, **options)


def postgres(url: str) -> dict[str, dict[str, str]]:
    return {"claidex-postgres": {"DATABASE_URL": url}}


def _request(run_id: str, **extra) -> BurstRequest:
    return BurstRequest(run_id, overrides={"batch_size": BATCH}, publish=False, **extra)


def _prepared(functions, run_id: str, overrides: dict, publish: bool) -> dict:
    """Step 1 as the driver runs it: the plan, each stage's `.map`, reduce and combine."""
    functions["prepare"].remote(run_id, "volume", "claidex", overrides, publish)
    with Progress(disable=True) as bar:
        state = functions["run_status"].remote(run_id)
        status = functions["run_status"].remote
        tracker = BurstTracker(run_id)
        assert prepare_stages(functions, state, bar, status, 1_000, tracker) == {}
    return functions["run_status"].remote(run_id)


def _committed(volume: DirectoryVolume, run_id: str):
    return VolumeLayout(volume.root).run(run_id)


def _files(volume: DirectoryVolume, run_id: str) -> dict[str, int]:
    root = _committed(volume, run_id).root
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*.*")}


def test_bodies_reproduce_the_local_engine_with_max_batches_then_resume(
    volume: DirectoryVolume, local_scores: bytes, tmp_path: Path
) -> None:
    standin = modal_for(volume)  # an empty workspace: no secret exists at all
    drawn = {"batch_size": BATCH, "report_html": True}  # the page, drawn in a container
    with standin.run() as remote:
        functions = remote.functions
        first = replace(_request("burst-1", max_batches=2), overrides=drawn)
        smoke = run_burst(remote, first, show_progress=False)
        assert smoke.status == "partial" and smoke.dispatched == [0, 1]
        assert smoke.batches_done == 2 and smoke.batches_total >= 5
        assert functions["merge_and_calibrate"].remote_calls == []
        paths = _committed(volume, "burst-1")
        assert not paths.scores.exists()
        assert RunLedger(paths).summary()["batches_done"] == 2

        resumed = run_burst(
            remote, replace(_request("burst-1"), overrides=drawn), show_progress=False
        )
    assert resumed.status == "merged" and resumed.batches_done == resumed.batches_total
    assert resumed.dispatched == list(range(2, resumed.batches_total))
    assert functions["score_batch"].mapped == list(range(resumed.batches_total))
    assert len(functions["prepare"].remote_calls) == 1  # the resume did not prepare again
    assert paths.scores.read_bytes() == local_scores
    ledger = RunLedger(paths).read()
    assert ledger["engine"] == "modal"
    workers = {RunLedger(paths).batch_states()[i]["worker"] for i in range(resumed.batches_total)}
    assert all(w.startswith("ta-standin-score_batch-") for w in workers)  # ran in containers
    assert all(seen == () for r in standin.records.values() for seen in r.secrets_seen)

    files = download_run(volume, "burst-1", tmp_path / "down")
    assert {"scores.parquet", "report.json", "report.html", "ledger.json", "run.json"} <= set(files)
    report = json.loads((tmp_path / "down" / "report.json").read_text())
    assert report["header"]["engine"] == "modal" and report["timeline"]["batches"]["tasks"] >= 5
    assert (tmp_path / "down" / "scores.parquet").read_bytes() == local_scores


def _break_batch(volume: DirectoryVolume, run_id: str, index: int) -> tuple[str, bytes]:
    slice_file = _committed(volume, run_id).batch_providers(index)
    key = slice_file.relative_to(volume.root).as_posix()
    original = slice_file.read_bytes()
    volume.write_committed(key, b"not parquet")
    return key, original


def test_driver_dispatches_one_call_per_missing_batch_and_never_merges_a_gap(
    volume: DirectoryVolume, local_scores: bytes
) -> None:
    standin = modal_for(volume)
    with standin.run() as remote:
        functions = remote.functions
        prepared = _prepared(functions, "burst-2", {"batch_size": BATCH}, False)
        total = prepared["batches_total"]
        broken = [_break_batch(volume, "burst-2", i) for i in (1, 3)]

        failed = run_burst(remote, _request("burst-2"), show_progress=False)
        assert failed.status == "failed"
        assert sorted(failed.failed) == [1, 3]
        assert all("RunFileError" in error for error in failed.failed.values())
        assert functions["score_batch"].mapped == list(range(total))  # one input each
        record = standin.records["score_batch"]
        tries = [index for index, _ in record.attempts]
        assert tries.count(1) == tries.count(3) == 4  # Modal: 1 + max_retries=3 per input
        assert tries.count(0) == 1
        assert sorted(record.retry_delays_ms) == [5000, 5000, 10000, 10000, 20000, 20000]
        assert functions["merge_and_calibrate"].remote_calls == []
        ledger = RunLedger(_committed(volume, "burst-2"))
        summary = ledger.summary()
        assert summary["status"] == "failed" and summary["failed_step"] == "score"
        assert summary["batches_failed"] == [1, 3] and "batch 1: RunFileError" in summary["error"]
        state = functions["run_status"].remote("burst-2")
        assert state["missing"] == [1, 3] and set(state["batch_errors"]) == {1, 3}

        for key, original in broken:  # warm containers see the fix only after a reload
            volume.write_committed(key, original)
        functions["score_batch"].mapped.clear()
        done = run_burst(remote, _request("burst-2"), show_progress=False)
        assert functions["score_batch"].mapped == [1, 3]
        assert done.status == "merged" and len(functions["merge_and_calibrate"].remote_calls) == 1
        assert _committed(volume, "burst-2").scores.read_bytes() == local_scores

        again = run_burst(remote, _request("burst-2"), show_progress=False)
        assert again.status == "merged" and functions["score_batch"].mapped == [1, 3]


def test_no_publish_needs_no_postgres_secret_and_publish_names_the_missing_one(
    volume: DirectoryVolume,
) -> None:
    standin = modal_for(volume)  # nobody created claidex-postgres
    with standin.run() as remote:
        quiet = run_burst(remote, _request("quiet"), show_progress=False)
        assert quiet.status == "merged"
        with pytest.raises(MissingSecretError) as publishing:
            loud = BurstRequest("loud", overrides={"batch_size": BATCH})
            run_burst(remote, loud, show_progress=False)
        with pytest.raises(MissingSecretError) as exporting:
            run_burst(remote, _request("export", source="postgres"), show_progress=False)
        assert [call[0] for call in remote.functions["prepare"].remote_calls] == ["quiet"]
        assert remote.functions["run_status"].remote("loud")["exists"] is False  # nothing ran
    message = str(publishing.value)
    assert "\n" not in message and "'claidex-postgres' not found" in message
    assert "`modal secret create claidex-postgres DATABASE_URL=postgresql://" in message
    assert "--no-publish" in message
    assert "--source postgres reads Postgres" in str(exporting.value)


def test_a_postgres_secret_without_its_keys_fails_a_publishing_run_at_start(
    volume: DirectoryVolume, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A secret that exists but holds no DATABASE_URL used to end `merged`, exit 0, with a
    note nobody reads: now the lookup asks Modal for the keys, and the run fails in one line
    before any container starts. CLAIDEX_MODAL_POSTGRES_KEYS names libpq's variables instead;
    a list that reaches no database is refused; a merge container without one raises."""
    from modal_burst import bodies, cli

    monkeypatch.setattr(cli, "require_credentials", lambda: None)
    workspace = {"claidex-postgres": {"PGPASSWORD": "secret", "PGUSER": "claidex"}}
    standin = modal_for(volume, secrets=workspace)
    monkeypatch.setattr(cli, "remote_app", lambda deployed, quiet: standin.run())
    assert cli.main(["full", "--run-id", "no-url", "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: Modal secret 'claidex-postgres' not found or lacks DATABASE_URL")
    assert "the run publishes to Postgres" in line
    ran = {name for name, record in standin.records.items() if record.attempts}
    assert ran == {"run_status"}  # it read the volume; no step started

    monkeypatch.setenv("CLAIDEX_MODAL_POSTGRES_KEYS", "PGHOST,PGDATABASE")
    assert cli.main(["full", "--run-id", "no-host", "--quiet"]) == 2
    assert "lacks PGHOST, PGDATABASE" in capsys.readouterr().err
    monkeypatch.setenv("CLAIDEX_MODAL_POSTGRES_KEYS", "PGPASSWORD")
    assert cli.main(["full", "--run-id", "no-db", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: CLAIDEX_MODAL_POSTGRES_KEYS='PGPASSWORD' names no key that reaches a "
        "database: include one of DATABASE_URL, PGHOST, PGDATABASE, PGSERVICE"
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for name in ("PGHOST", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(bodies.DatabaseError, match="asked to publish, but the merge function"):
        bodies.merge_run(VolumeLayout(volume.root), "no-url", publish=True)


def test_source_postgres_attaches_the_secret_to_prepare_and_the_export_shards_only(
    volume: DirectoryVolume, database_url: str, tmp_path: Path
) -> None:
    from claidex.dev.sample import generate
    from scoring.db.connection import connect
    from scoring.db.load import load_dataset

    data = tmp_path / "production"
    generate(data, providers=1000, seed=21, layout="production")
    with connect(database_url) as conn:
        load_dataset(conn, data)
    expected = run_local(data, Settings(), run_dir=tmp_path / "files", show_progress=False)
    standin = modal_for(volume, secrets=postgres(database_url))
    request = replace(_request("from-db", source="postgres"), overrides={"shards": 3})
    with standin.run() as remote:
        outcome = run_burst(remote, request, show_progress=False)
    assert outcome.status == "merged", outcome.detail
    assert _committed(volume, "from-db").scores.read_bytes() == expected.scores.read_bytes()
    assert standin.records["prepare"].secrets_seen == [("claidex-postgres",)]
    # one pool of shard containers carries it, for every stage (export needs it)
    assert set(standin.records["stage_shard"].secrets_seen) == {("claidex-postgres",)}
    exported = _committed(volume, "from-db").root / "source" / "payments_combined"
    assert sorted(p.name for p in exported.glob("*.parquet")) == [
        f"part-{i:05d}.parquet" for i in range(3)
    ]
    assert set(standin.records["score_batch"].secrets_seen) == {()}
    assert standin.records["merge_and_calibrate"].secrets_seen == [()]  # --no-publish


def test_a_scheduled_burst_reads_postgres_and_an_older_volume_dataset_is_said_stale(
    volume: DirectoryVolume, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beat's weekly run on Modal reads what the fleet's reads: Postgres, when a database is
    configured, not the volume's last upload (here a different, older dataset). Scoring the
    volume must be chosen (CLAIDEX_MODAL_SOURCE=volume); a fleet path keeps the run on the
    fleet. A volume dataset older than the scores on the table publishes with a warning in
    the ledger (`status`) and the report's header."""
    import modal

    from claidex.dev.sample import generate
    from modal_burst import handoff
    from scoring.db.connection import connect
    from scoring.db.load import load_dataset

    data = tmp_path / "production"
    generate(data, providers=1000, seed=21, layout="production")
    with connect(database_url) as conn:
        load_dataset(conn, data)
    expected = run_local(data, Settings(), run_dir=tmp_path / "files", show_progress=False)

    spawned: list[tuple] = []
    monkeypatch.setattr(handoff, "require_credentials", lambda: None)
    monkeypatch.setattr(handoff, "find_secrets", lambda *args: {})  # the workspace: below
    monkeypatch.setattr(
        modal.Function,
        "from_name",
        lambda app, name, **_: SimpleNamespace(
            spawn=lambda *args: spawned.append(args) or SimpleNamespace(object_id="fc")
        ),
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CLAIDEX_MODAL_BATCH_SIZE", str(BIG_BATCH))
    # the sources differ on purpose (a 1,000-provider table, the 3,000-provider sample): the
    # checks before publish would hold the second; this test is about where runs read
    monkeypatch.setenv("CLAIDEX_CHECKS", "0")
    handoff.spawn_full_run("weekly-db", Settings())
    monkeypatch.setenv("CLAIDEX_SCHEDULED_DATA", str(data))
    with pytest.raises(handoff.ModalNotConfiguredError, match="path on the fleet"):
        handoff.spawn_full_run("weekly-path", Settings())
    monkeypatch.setenv("CLAIDEX_MODAL_SOURCE", "volume")
    handoff.spawn_full_run("weekly-volume", Settings())
    for name in ("DATABASE_URL", "CLAIDEX_SCHEDULED_DATA", "CLAIDEX_MODAL_SOURCE"):
        monkeypatch.delenv(name)
    monkeypatch.delenv("CLAIDEX_MODAL_BATCH_SIZE")
    assert [(args[0], args[1]) for args in spawned] == [
        ("weekly-db", "postgres"),
        ("weekly-volume", "volume"),
    ]

    standin = modal_for(volume, secrets=postgres(database_url))
    states = {}
    with standin.run() as remote:
        for run_id, source, data_name, overrides, publish in spawned:  # what run_full does
            request = BurstRequest(run_id, source, data_name, overrides, publish=publish)
            outcome = run_burst(remote, request, show_progress=False)
            assert outcome.status == "published", outcome.detail
            states[run_id] = remote.functions["run_status"].remote(run_id)
    db_run = _committed(volume, "weekly-db")
    assert db_run.scores.read_bytes() == expected.scores.read_bytes()
    assert states["weekly-db"].get("source_warning") is None
    warning = states["weekly-volume"]["source_warning"]
    assert warning.startswith("volume dataset 'claidex' (uploaded ")
    assert "is older than the scores it replaces: run weekly-db read its input" in warning
    report = json.loads(_committed(volume, "weekly-volume").report.read_text())
    assert report["header"]["source_warning"] == warning
    from scoring.reports.html import render_report

    assert "is older than the scores it replaces" in render_report(report)  # report.html


def test_an_app_declaring_a_missing_secret_fails_when_it_runs(
    volume: DirectoryVolume, tmp_path: Path
) -> None:
    """What every command did before: Modal looks up declared secrets at app start."""
    source = tmp_path / "old_app.py"
    source.write_text(
        "import modal\n"
        "from scoring.config import Settings\n"
        "CFG = Settings()\n"
        "app = modal.App('old')\n"
        "@app.function(secrets=[modal.Secret.from_name('claidex-postgres')])\n"
        "def run_status(run_id: str) -> dict:\n"
        "    return {}\n"
        "FUNCTIONS = {'run_status': run_status}\n"
    )
    spec = importlib.util.spec_from_file_location("old_app", source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(NotFoundError, match="claidex-postgres"), StandIn(module, volume.root).run():
        pass


def test_resume_refuses_an_unknown_run_and_keeps_the_runs_publish_choice(
    volume: DirectoryVolume, database_url: str
) -> None:
    standin = modal_for(volume, secrets=postgres(database_url))
    with standin.run() as remote:
        with pytest.raises(RunStateError, match="is not on the volume: nothing to resume"):
            run_burst(remote, BurstRequest("typo", resume=True), show_progress=False)
        assert remote.functions["prepare"].remote_calls == []
        smoke = _request("burst-5", max_batches=1)
        assert run_burst(remote, smoke, show_progress=False).status == "partial"
        resumed = run_burst(
            remote, BurstRequest("burst-5", publish=None, resume=True), show_progress=False
        )
    assert resumed.status == "merged"  # started with --no-publish: the resume does not publish
    assert standin.records["merge_and_calibrate"].secrets_seen == [()]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone() == (0,)


def test_merge_publishes_once_with_the_postgres_secret(
    volume: DirectoryVolume, database_url: str
) -> None:
    standin = modal_for(volume, secrets=postgres(database_url))
    with standin.run() as remote:
        request = BurstRequest("burst-3", overrides={"batch_size": BATCH}, publish=True)
        outcome = run_burst(remote, request, show_progress=False)
        assert outcome.status == "published"
        assert standin.records["merge_and_calibrate"].secrets_seen == [("claidex-postgres",)]
        assert set(standin.records["score_batch"].secrets_seen) == {()}  # batches get none
        scores = pl.read_parquet(_committed(volume, "burst-3").scores)
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone()
        assert rows == (scores.height,)
        merge = remote.functions["merge_and_calibrate"]
        secret = remote.secret("claidex-postgres")
        merged = merge.with_options(secrets=[secret]).remote("burst-3", True)
        assert merged.get("skipped") is True  # merge-only recovery never publishes twice
        assert merge_only(remote, "burst-3", publish=None)["note"] == "already published"


def test_merge_honours_the_runs_publish_choice(volume: DirectoryVolume, database_url: str) -> None:
    standin = modal_for(volume, secrets=postgres(database_url))
    with standin.run() as remote:
        assert run_burst(remote, _request("quiet-merge"), show_progress=False).status == "merged"
        again = merge_only(remote, "quiet-merge", publish=None)  # `merge RUN`
        assert again["status"] == "merged"
        assert standin.records["merge_and_calibrate"].secrets_seen == [(), ()]
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone() == (0,)
        published = merge_only(remote, "quiet-merge", publish=True)  # `merge RUN --publish`
        assert published["status"] == "published"
        assert run_burst(remote, _request("half", max_batches=1), show_progress=False)
        with pytest.raises(RunStateError, match="cannot merge, batches missing: 1, 2"):
            merge_only(remote, "half", publish=None)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone()
    assert rows == (pl.read_parquet(_committed(volume, "quiet-merge").scores).height,)


@pytest.mark.timeout(180)
def test_a_batch_that_kills_its_container_every_time_fails_the_run_visibly(
    volume: DirectoryVolume, local_scores: bytes
) -> None:
    """Out of memory, every time, at the end of batch 2 (and once for batch 4): `.map` counts
    each lost input against max_retries (no delay); with batch_max_attempts below that, the
    run's own bound ends it first (as it does where Modal's server retries without end)."""
    run = "burst-oom"
    rules = [
        CrashRule(f"runs/{run}/chunks/00002.parquet"),
        CrashRule(f"runs/{run}/chunks/00004.parquet", times=1),
    ]
    standin = modal_for(volume, crash=rules)
    request = _request(run)
    request = replace(request, overrides={**request.overrides, "batch_max_attempts": 3})
    with standin.run() as remote:
        outcome = run_burst(remote, request, show_progress=False)
    assert outcome.status == "failed" and sorted(outcome.failed) == [2]
    assert outcome.failed[2].startswith("BatchGaveUpError: batch 2: its worker died 3 times")
    assert standin.crash_count == [3, 1]
    record = standin.records["score_batch"]
    assert [kind for index, kind in record.attempts if index == 2] == ["crash"] * 3 + ["ok"]
    assert [kind for index, kind in record.attempts if index == 4] == ["crash", "ok"]
    assert record.retry_delays_ms == [0] * 4  # lost inputs: retries without delay
    assert standin.records["merge_and_calibrate"].remote_calls == []
    summary = RunLedger(_committed(volume, run)).summary()
    assert summary["status"] == "failed" and summary["batches_failed"] == [2]
    assert "died 3 times" in summary["error"]

    with modal_for(volume).run() as remote:  # memory raised: a resume starts a fresh count
        resumed = run_burst(
            remote, BurstRequest(run, publish=None, resume=True), show_progress=False
        )
    assert resumed.status == "merged" and resumed.dispatched == [2]
    assert _committed(volume, run).scores.read_bytes() == local_scores


# Where an out-of-memory loop strikes, one step after the other: the step's own output,
# put in place (each phase's command is the one the failure before it printed)
CRASH_LOOPS = (
    ("prepare", "prepare", "stages/plan.json"),
    ("count-00001", "prepare", "stages/count/00001/done.json"),
    ("reduce", "prepare", "stages/window.json"),
    ("merge", "merge", "scores.parquet"),
)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", ["deployed", "ephemeral"])
def test_a_step_that_kills_its_container_every_time_fails_the_run_within_its_cap(
    volume: DirectoryVolume, local_scores: bytes, server: str
) -> None:
    """An OOM loop in prepare, a stage shard, reduce, then merge. A deployed app's server
    restarts a crashed input without end: the step's start records on the volume end it at
    step_max_attempts (the body returns gave_up). An ephemeral app's server fails the input
    once the function's crash rate passes (the stand-in: 3 crashes, as many as the cap):
    InternalFailure. Either way the run fails naming the step, its deaths and the command
    that carries it on; that command, the fault gone, starts the step with a fresh budget
    and the run ends with the bytes of a clean run."""
    from scoring.runs.attempts import StepAttempts, describe

    cap = Settings().step_max_attempts
    run = f"loop-{server}"
    paths = _committed(volume, run)
    start = BurstRequest(run, overrides={"batch_size": BIG_BATCH, "shards": 2}, publish=False)
    request, before = start, None
    # the ephemeral model once for a stage (a `.map`) and once for a single step (`.remote`)
    loops = CRASH_LOOPS if server == "deployed" else CRASH_LOOPS[1::2]
    for key, phase, output in loops:
        standin = modal_for(volume, crash=[CrashRule(f"runs/{run}/{output}")], server=server)
        with standin.run() as remote:
            outcome = run_burst(remote, request, show_progress=False)
        assert outcome.status == "failed", (key, outcome)
        assert standin.crash_count == [cap]  # bounded: never more deaths than the cap
        record = StepAttempts(paths).read(key)  # committed: it outlived its containers
        assert record["status"] == "failed"  # the resume's budget is fresh
        if server == "deployed":  # the start after the cap's last death gave up
            assert record["attempt"] == cap + 1
            deaths = f"{describe(key)}: its worker died {cap} times running it (limit {cap}"
        else:  # the server failed the input at the cap's last death
            assert record["attempt"] == cap
            deaths = f"{describe(key)} (its worker died {cap} time(s)): InternalFailure"
        assert deaths in outcome.detail, outcome.detail
        planned = key != "prepare"
        command = (
            f"python -m modal_burst resume {run}"
            if planned
            else (
                f"python -m modal_burst full --run-id {run} --source volume --data-name claidex "
                f"--batch-size {BIG_BATCH} --shards 2 --no-publish"  # what the run started with
            )
        )
        assert outcome.resume == command
        assert outcome.detail.endswith(f"resume with: {outcome.resume}")
        ledger = RunLedger(paths).read()
        assert (ledger["status"], ledger["failed_step"]) == ("failed", phase)
        assert ledger["error"] == outcome.detail
        if before is not None:  # the step that looped before ran once, fault removed
            done = StepAttempts(paths).read(before)
            assert (done["status"], done["attempt"]) == ("done", 1)
        request = BurstRequest(run, resume=True) if planned else start
        before = key

    with modal_for(volume, server=server).run() as remote:
        resumed = run_burst(remote, request, show_progress=False)
    assert resumed.status == "merged", resumed.detail
    assert paths.scores.read_bytes() == local_scores
    assert StepAttempts(paths).read("merge")["status"] == "done"


def test_interrupted_or_timed_out_prepares_are_no_deaths_and_fail_with_the_full_command(
    volume: DirectoryVolume,
) -> None:
    """Three Ctrl-Cs while planning (the App stops: prepare's container dies after its
    start record was committed, before any ledger exists): each `full --run-id` again ends
    the dead start first, so the fourth prepare is attempt 1 of its budget, never 'its
    worker died 3 times'. A prepare that runs past its timeout (FunctionTimeoutError, no
    retries) fails the run naming it, with the `full` command that carries it on."""
    from scoring.runs.attempts import StepAttempts

    run = "plan-stops"
    request = BurstRequest(run, overrides={"batch_size": BIG_BATCH}, publish=False)
    paths = _committed(volume, run)
    for _ in range(3):
        stop = CrashRule(f"runs/{run}/stages/plan.json", times=1, effect="stop")
        outcome = None
        with modal_for(volume, crash=[stop]).run() as remote:
            outcome = run_burst(remote, request, show_progress=False)
        assert outcome is None and not paths.ledger.exists()
    timeout = CrashRule(f"runs/{run}/stages/plan.json", times=1, effect="timeout")
    with modal_for(volume, crash=[timeout]).run() as remote:
        failed = run_burst(remote, request, show_progress=False)
    assert failed.status == "failed" and "FunctionTimeoutError" in failed.detail, failed
    assert failed.resume == (
        f"python -m modal_burst full --run-id {run} --source volume --data-name claidex "
        f"--batch-size {BIG_BATCH} --no-publish"
    )
    with modal_for(volume).run() as remote:
        done = run_burst(remote, request, show_progress=False)
    assert done.status == "merged", done.detail
    assert StepAttempts(paths).read("prepare")["attempt"] == 1  # no start counted as a death


def test_the_stale_source_check_never_fails_a_merge_and_compares_times() -> None:
    """It reads the table before merge: an unreachable database is a warning (publish waits
    out the outage itself), never a failed merge."""
    from datetime import UTC, datetime

    from modal_burst.bodies import stale_source

    read_at = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert stale_source("claidex", "2026-11-30T00:00:00+00:00", ("full-1", read_at)) is None
    older = stale_source("claidex", "2026-11-01T00:00:00+00:00", ("full-1", read_at))
    assert older is not None and "(uploaded 2026-11-01T00:00:00+00:00) is older" in older
    unknown = stale_source("claidex", None, ("full-1", read_at))
    assert unknown is not None and unknown.startswith("volume dataset 'claidex' has no upload")
    assert stale_source("claidex", "2026-11-01T00:00:00+00:00", None) is None  # empty table


def test_an_unreachable_database_makes_the_stale_check_a_warning(tmp_path: Path) -> None:
    from modal_burst.bodies import note_stale_source
    from scoring.runs.store import RunPaths

    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    RunLedger(paths).update(source_dataset="claidex", source_uploaded_at=None)
    note_stale_source(paths, "postgresql://u:p@127.0.0.1:9/nowhere?connect_timeout=2")
    warning = RunLedger(paths).read()["source_warning"]
    assert warning.startswith("volume dataset 'claidex': not compared with the table (")


def test_batches_modal_gives_up_on_are_recorded_failed_so_a_resume_scores_them_afresh(
    volume: DirectoryVolume, local_scores: bytes
) -> None:
    """Batch 1 runs past its timeout every time (FunctionTimeoutError once Modal's retries
    are spent), batch 2 kills its container every time (`.map` counts lost inputs against
    max_retries, then InternalFailure). Neither container ends its batch record; the driver
    records both failed, so the resume does not take those starts for container deaths."""
    run = "burst-given-up"
    rules = [
        CrashRule(f"runs/{run}/chunks/00001.parquet", effect="timeout"),
        CrashRule(f"runs/{run}/chunks/00002.parquet"),
    ]
    standin = modal_for(volume, crash=rules)
    request = replace(_request(run), overrides={"batch_size": BIG_BATCH})
    with standin.run() as remote:
        first = run_burst(remote, request, show_progress=False)
    assert first.status == "failed" and sorted(first.failed) == [1, 2]
    assert first.failed[1].startswith("FunctionTimeoutError")
    assert first.failed[2].startswith("InternalFailure")
    record = standin.records["score_batch"]
    assert [kind for index, kind in record.attempts if index == 1] == ["timeout"] * 4
    assert [kind for index, kind in record.attempts if index == 2] == ["crash"] * 4
    assert sorted(record.retry_delays_ms) == [0, 0, 0, 5000, 10000, 20000]
    states = RunLedger(_committed(volume, run)).batch_states()
    assert states[1]["status"] == states[2]["status"] == "failed"
    assert "FunctionTimeoutError" in states[1]["error"] and "InternalFailure" in states[2]["error"]

    with modal_for(volume).run() as remote:  # timeout and memory raised
        resume = BurstRequest(run, publish=None, resume=True)
        resumed = run_burst(remote, resume, show_progress=False)
    assert resumed.status == "merged" and resumed.dispatched == [1, 2], resumed.failed
    assert _committed(volume, run).scores.read_bytes() == local_scores


def test_a_run_whose_ledger_lacks_the_publish_choice_is_refused_until_one_is_given(
    volume: DirectoryVolume,
) -> None:
    """With background commits, prepare's plan can become visible although the container
    died before the ledger recorded the run's --no-publish: guessing 'publish' would write
    to Postgres, so resume and merge refuse until --publish or --no-publish is given."""
    run = "burst-half-prepared"
    plan = f"runs/{run}/stages/plan.json"
    stop = CrashRule(f"runs/{run}/ledger.json", after=plan, times=1, effect="stop")
    standin = modal_for(volume, crash=[stop], background_commits=True)
    request = replace(_request(run), overrides={"batch_size": BIG_BATCH})  # --no-publish
    outcome = None
    with standin.run() as remote:  # swallows the interrupt, as app.run() does
        outcome = run_burst(remote, request, show_progress=False)
    assert outcome is None
    paths = _committed(volume, run)
    assert (volume.root / plan).exists() and "publish" not in RunLedger(paths).read()

    undecided = r"its ledger does not record whether it publishes .* pass --publish or --no-"
    later = modal_for(volume, background_commits=True)  # no Postgres secret anywhere
    with later.run() as remote:
        with pytest.raises(RunStateError, match=undecided):
            run_burst(remote, BurstRequest(run, resume=True), show_progress=False)
        quiet = BurstRequest(run, publish=False, resume=True)
        assert run_burst(remote, quiet, show_progress=False).status == "merged"
        with pytest.raises(RunStateError, match=undecided):
            merge_only(remote, run, publish=None)
        assert merge_only(remote, run, publish=False)["status"] == "merged"
    assert later.records["merge_and_calibrate"].secrets_seen == [(), ()]


def test_a_handed_off_run_whose_driver_stopped_resumes_with_its_secrets_and_no_false_death(
    volume: DirectoryVolume,
    database_url: str,
    local_scores: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beat hands a run to Modal with its host's secret name; the hand-off checks that name
    and passes it on, so run_full attaches it and run.json records it. run_full's driver
    stops mid-scoring (its App stops: containers die mid-batch, 'running' records stay).
    A resume from a shell that names no secret attaches the run's own, and its dispatch
    counts only the container deaths it sees itself (batch_max_attempts 1 here)."""
    import modal

    from modal_burst import handoff

    checked: list[str] = []
    spawned: list[tuple] = []

    class Looked:
        def __init__(self, name: str) -> None:
            self.name = name

        def hydrate(self) -> Looked:
            checked.append(self.name)
            return self

    class RunFull:
        def spawn(self, *args: object) -> SimpleNamespace:
            spawned.append(args)
            return SimpleNamespace(object_id="fc-1")

    monkeypatch.setattr(handoff, "require_credentials", lambda: None)
    monkeypatch.setattr(modal.Secret, "from_name", lambda name, **_: Looked(name))
    monkeypatch.setattr(modal.Function, "from_name", lambda app, name, **_: RunFull())
    host = {
        "CLAIDEX_MODAL_POSTGRES_SECRET": "pg-beat",  # the Celery host's name for it
        "CLAIDEX_MODAL_SOURCE": "volume",  # chosen: no database on this host
        "CLAIDEX_MODAL_BATCH_SIZE": str(BIG_BATCH),
        "CLAIDEX_BATCH_MAX_ATTEMPTS": "1",
    }
    for name, value in host.items():
        monkeypatch.setenv(name, value)
    assert handoff.spawn_full_run("beat-1", Settings()) == "fc-1"
    ((run_id, source, data_name, overrides, publish),) = spawned
    assert checked == ["pg-beat"] and overrides["modal_postgres_secret"] == "pg-beat"
    for name in host:  # run_full's container and the resuming shell: another environment
        monkeypatch.delenv(name)

    workspace = {"pg-beat": {"DATABASE_URL": database_url}}
    stop = CrashRule(f"runs/{run_id}/chunks/00000.parquet", times=1, effect="stop")
    request = BurstRequest(run_id, source, data_name, overrides, publish=publish)
    outcome = None
    with modal_for(volume, secrets=workspace, crash=[stop]).run() as remote:
        outcome = run_burst(remote, request, show_progress=False)  # what run_full does
    assert outcome is None  # the App stopped: app.run() swallowed the interrupt
    paths = _committed(volume, run_id)
    assert json.loads(paths.manifest.read_text())["settings"]["modal_postgres_secret"] == "pg-beat"
    assert RunLedger(paths).batch_states()[0]["status"] == "running"  # nothing ended it

    resumer = modal_for(volume, secrets=workspace)
    with resumer.run() as remote:
        resumed = run_burst(remote, BurstRequest(run_id, resume=True), show_progress=False)
    assert resumed.status == "published" and resumed.dispatched[0] == 0, resumed.failed
    assert resumer.records["merge_and_calibrate"].secrets_seen == [("pg-beat",)]
    assert paths.scores.read_bytes() == local_scores


def test_ctrl_c_is_one_line_with_the_runs_state_and_the_command_that_resumes_it(
    volume: DirectoryVolume,
    local_scores: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """Ctrl-C stops the App; Modal's app.run() swallows the KeyboardInterrupt (the stand-in
    too), so the CLI must notice that no result came back: one line, exit 130, and the
    command it names carries the run on to the local engine's bytes."""
    from modal_burst import cli

    monkeypatch.setattr(cli, "require_credentials", lambda: None)
    run = "burst-ctrl-c"
    rules = {
        "planning": CrashRule(f"runs/{run}/stages/plan.json", times=1, effect="stop"),
        "scoring": CrashRule(f"runs/{run}/chunks/00001.parquet", times=1, effect="stop"),
    }
    argv = ["full", "--no-publish", "--batch-size", str(BATCH), "--quiet"]
    lines = {}
    for phase, rule in rules.items():
        standin = modal_for(volume, crash=[rule])
        monkeypatch.setattr(cli, "remote_app", lambda deployed, quiet, s=standin: s.run())
        args = [*argv, "--run-id", run] if phase == "scoring" else argv
        if phase == "planning":
            monkeypatch.setattr(cli, "new_run_id", lambda suffix: run)
        assert cli.main(args) == 130
        out = capsys.readouterr()
        (lines[phase],) = out.err.strip().splitlines()
        assert "Traceback" not in out.err + out.out
    assert lines["planning"] == (
        f"run {run}: interrupted while planning; resume with: python -m modal_burst full "
        f"--no-publish --batch-size {BATCH} --quiet --run-id {run}"
    )
    assert lines["scoring"].startswith(f"run {run}: interrupted while scoring (")
    assert lines["scoring"].endswith(f"resume with: python -m modal_burst resume {run}")

    standin = modal_for(volume)
    monkeypatch.setattr(cli, "remote_app", lambda deployed, quiet: standin.run())
    resume = lines["scoring"].split("resume with: python -m modal_burst ")[1].split()
    assert cli.main([*resume, "--quiet"]) == 0
    assert f"run {run}: merged" in capsys.readouterr().out
    assert _committed(volume, run).scores.read_bytes() == local_scores


def test_one_progress_display_modal_s_own_when_its_output_is_on(
    volume: DirectoryVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Modal's output on, app.run() shows a Live ("Running app...", `runner.py::_run_app`
    -> `RichOutputManager.show_status_spinner`) and each .map a bar in it: the driver's rows
    go there too, and it starts no Live of its own. Without it, ours is the only one."""
    import modal
    import rich.live
    from modal.output import OutputManager

    started: list[rich.live.Live] = []
    start = rich.live.Live.start

    def counted(live: rich.live.Live, refresh: bool = False) -> None:
        started.append(live)
        start(live, refresh)

    monkeypatch.setattr(rich.live.Live, "start", counted)
    standin = modal_for(volume)
    with modal.enable_output():
        manager = OutputManager.get()
        with manager.show_status_spinner(), standin.run() as remote:
            outcome = run_burst(remote, _request("one-view"), show_progress=True)
        assert outcome.status == "merged"
        assert len(started) == 1  # Modal's own
        tasks = {t.description: t for t in manager._function_progress.tasks}
        ours = tasks["run one-view"]
        assert ours.total == ours.completed == outcome.batches_total
        assert "score_batch" in tasks and "stage_shard" in tasks  # the maps' own bars
    started.clear()
    from modal_burst.progress import burst_progress

    with burst_progress(True) as bar:  # no Modal output: ours is the one display
        bar.add_task("run own-view", total=3)
    assert isinstance(bar, Progress) and len(started) == 1


def test_maps_stay_within_modals_limits_at_five_times_seed() -> None:
    """5x seed: ~8.9 M providers, ~228 M payment rows. Every .map the driver makes holds at
    most modal_map_window inputs (<= 1,000 run at once, <= 2,000 pending per function), and
    each function's inputs stay under 25,000."""
    from modal_burst import limits
    from modal_burst.driver import mapped

    cfg = Settings()
    size = limits.burst_size(cfg, 5 * limits.SEED_PROVIDERS, 5 * limits.SEED_PAYMENT_ROWS)
    assert size.problems() == []
    assert size.batches > limits.MAP_CONCURRENT_INPUTS  # the window matters at this size
    assert size.shards <= size.largest_map <= limits.MAP_CONCURRENT_INPUTS

    class Counted:
        def __init__(self) -> None:
            self.calls: list[int] = []

        def map(self, inputs, **options):
            items = list(inputs)
            self.calls.append(len(items))
            return [{"batch": i} for i in items]

    function = Counted()
    todo = list(range(size.batches))
    got = [index for index, _ in mapped(function, todo, {}, cfg.modal_map_window)]
    assert got == todo
    assert max(function.calls) <= min(limits.MAP_CONCURRENT_INPUTS, limits.FUNCTION_PENDING_INPUTS)
    assert sum(function.calls) == size.batches < limits.FUNCTION_TOTAL_INPUTS
    with pytest.raises(ValueError):
        Settings(modal_map_window=1_001)
    huge = limits.burst_size(Settings(modal_batch_size=10), 5 * limits.SEED_PROVIDERS, 1)
    assert huge.problems() == ["score_batch: 894054 inputs > 25000 per function"]


def test_the_cli_reports_a_damaged_missing_or_unprepared_run_in_one_line(
    volume: DirectoryVolume, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from modal_burst import cli

    def ledger(run_id: str, **fields: object) -> bytes:
        return json.dumps({"run_id": run_id, **fields}).encode()

    volume.write_committed("runs/torn/ledger.json", b'{"status": "publ')
    volume.write_committed("runs/bad/ledger.json", ledger("bad", status="scoring", publish=False))
    volume.write_committed("runs/bad/run.json", b"{not json")
    failed = ledger("early", status="failed", failed_step="prepare", error="InputError: empty")
    volume.write_committed("runs/early/ledger.json", failed)
    monkeypatch.setattr(cli, "require_credentials", lambda: None)

    def command(*argv: str) -> tuple[int, list[str]]:
        code = cli.main(list(argv))
        return code, capsys.readouterr().err.strip().splitlines()

    with modal_for(volume).run() as remote:
        monkeypatch.setattr(cli, "remote_app", lambda deployed, quiet: nullcontext(remote))
        for run_id, name in (("torn", "ledger.json"), ("bad", "run.json")):
            for argv in (
                ["status", run_id],
                ["resume", run_id, "--quiet"],
                ["merge", run_id, "--quiet"],
                ["full", "--run-id", run_id, "--quiet"],
            ):
                code, err = command(*argv)
                assert code == 2 and len(err) == 1, (argv, err)
                shown = f"error: run {run_id}: runs/{run_id}/{name}: not valid JSON ("
                assert err[0].startswith(shown), err
        assert command("merge", "typo", "--quiet") == (
            2,
            ["error: run typo is not on the volume: nothing to merge (start one with `full`)"],
        )
        code, err = command("resume", "early", "--quiet")
        assert code == 2 and len(err) == 1
        assert "never finished prepare (InputError: empty)" in err[0]
        assert "`python -m modal_burst full --run-id early` with the options it" in err[0]


class DroppingVolume(DirectoryVolume):
    """`remove_file` fails once `removes_left` is spent: a prune interrupted midway."""

    removes_left: int | None = None

    def remove_file(self, path: str, recursive: bool = False) -> None:
        if self.removes_left is not None:
            if self.removes_left == 0:
                raise ConnectionError("connection lost")
            self.removes_left -= 1
        super().remove_file(path, recursive)


def test_prune_finishes_an_interrupted_prune_and_skips_a_run_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from modal_burst import cli

    volume = DroppingVolume(tmp_path / "volume")
    ledger = {"run_id": "old", "status": "published", "created_at": "2026-01-01"}
    volume.write_committed("runs/old/ledger.json", json.dumps(ledger).encode())
    for name in ("chunks/00000.parquet", "batches/providers-00000.parquet", "ledger/batch-0.json"):
        volume.write_committed(f"runs/old/{name}", b"batch file")
    volume.write_committed("runs/old/scores.parquet", b"scores")
    volume.write_committed("runs/torn/ledger.json", b'{"status": "publ')
    root = _committed(volume, "old").root

    volume.removes_left = 1
    with pytest.raises(ConnectionError):
        prune_runs(volume, keep=0)
    assert not (root / PRUNED).exists() and (root / "ledger").exists()
    volume.removes_left = None
    actions = {a.run_id: a for a in prune_runs(volume, keep=0)}
    assert (actions["old"].action, actions["old"].files) == ("pruned", 2)
    assert sorted(p.name for p in root.iterdir()) == ["ledger.json", PRUNED, "scores.parquet"]
    assert actions["torn"].action == "unreadable"
    assert "runs/torn/ledger.json: not valid JSON" in actions["torn"].detail
    assert [a.action for a in prune_runs(volume, keep=0)] == ["pruned already", "unreadable"]

    monkeypatch.setattr(cli, "require_credentials", lambda: None)
    monkeypatch.setattr(cli, "_volume", lambda *args: volume)
    assert cli.main(["prune", "--keep", "0"]) == 0
    out = capsys.readouterr().out
    assert "run torn: skipped, its ledger cannot be read (runs/torn/ledger.json: not valid" in out
    assert "1 pruned already, 1 unreadable" in out


def test_after_a_volume_migration_redeploy_is_named_and_the_old_volume_stays_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import modal
    from modal.exception import InvalidError

    from modal_burst import cli

    hint = cli.volume_hint(InvalidError("Volume 'claidex-data' exists but has version v1"))
    assert "redeploy (`modal deploy -m modal_burst.app`)" in hint
    assert "download RUN DIR --volume claidex-data-v1 --volume-version 1" in hint
    old = DirectoryVolume(tmp_path / "v1")
    old.write_committed("runs/r1/ledger.json", b'{"run_id": "r1", "status": "published"}')
    old.write_committed("runs/r1/scores.parquet", b"old scores")
    opened: list[tuple[str, dict]] = []
    monkeypatch.setattr(
        modal.Volume, "from_name", lambda name, **kw: opened.append((name, kw)) or old
    )
    monkeypatch.setattr(cli, "require_credentials", lambda: None)
    where = ["--volume", "claidex-data-v1", "--volume-version", "1"]
    assert cli.main(["download", "r1", str(tmp_path / "down"), *where]) == 0
    assert (tmp_path / "down" / "scores.parquet").read_bytes() == b"old scores"
    assert cli.main(["status", "r1", *where]) == 0
    assert '"status": "published"' in capsys.readouterr().out
    assert opened == [("claidex-data-v1", {"create_if_missing": False, "version": 1})] * 2


# neo4j-live is the resume test's below: its run, live in every batch, gives the same bytes
# and attaches the same secrets (one burst fewer: ~26 s).
@pytest.mark.parametrize("mode", ["neo4j-snapshot"])
def test_burst_in_a_neo4j_graph_mode_reproduces_the_local_engine(
    volume: DirectoryVolume,
    sample_dataset: Path,
    local_scores: bytes,
    graph_target,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.graphs import load_dataset_graph

    load_dataset_graph(graph_target, sample_dataset)
    neo4j = {name: os.environ[name] for name in NEO4J_VARIABLES if name in os.environ}
    for name in NEO4J_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    standin = modal_for(volume, secrets={"claidex-neo4j": neo4j})
    request = BurstRequest(
        f"burst-{mode}", overrides={"batch_size": BATCH, "graph_mode": mode}, publish=False
    )
    with standin.run() as remote:
        outcome = run_burst(remote, request, show_progress=False)
    assert outcome.status == "merged"
    assert _committed(volume, f"burst-{mode}").scores.read_bytes() == local_scores
    batch_secrets = {("claidex-neo4j",)} if mode == "neo4j-live" else {()}
    assert set(standin.records["score_batch"].secrets_seen) == batch_secrets
    # reduce reads the graph, combine does not, but both are the run's single prepare steps
    assert standin.records["stage_single"].secrets_seen == [("claidex-neo4j",)] * 2
    assert set(standin.records["stage_shard"].secrets_seen) == {()}  # shards read the volume


def test_resume_of_a_neo4j_live_run_takes_its_secrets_from_the_run_not_the_caller(
    volume: DirectoryVolume,
    sample_dataset: Path,
    local_scores: bytes,
    graph_target,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.graphs import load_dataset_graph

    load_dataset_graph(graph_target, sample_dataset)
    neo4j = {name: os.environ[name] for name in NEO4J_VARIABLES if name in os.environ}
    for name in NEO4J_VARIABLES:  # the caller has no Neo4j settings at all
        monkeypatch.delenv(name, raising=False)
    workspace = {"claidex-neo4j": neo4j}
    run = "burst-live"
    start = BurstRequest(
        run, overrides={"batch_size": BATCH, "graph_mode": "neo4j-live"}, publish=False
    )
    starter = modal_for(volume, secrets=workspace)
    with starter.run() as remote:
        first = run_burst(remote, replace(start, max_batches=2), show_progress=False)
        assert first.status == "partial"
    assert set(starter.records["score_batch"].secrets_seen) == {("claidex-neo4j",)}
    assert starter.records["stage_single"].secrets_seen == [("claidex-neo4j",)] * 2
    assert set(starter.records["stage_shard"].secrets_seen) == {()}  # shards read the volume

    monkeypatch.setenv("CLAIDEX_GRAPH_MODE", "embedded")  # whatever this shell says
    resumer = modal_for(volume, secrets=workspace)
    with resumer.run() as remote:  # `resume RUN`: a new command, a new app
        resume = BurstRequest(run, max_batches=1, publish=None, resume=True)
        resumed = run_burst(remote, resume, show_progress=False)
    assert resumed.status == "partial" and resumed.dispatched == [2]
    assert resumer.records["score_batch"].secrets_seen == [("claidex-neo4j",)]

    finisher = modal_for(volume, secrets=workspace)
    with finisher.run() as remote:  # `full --run-id RUN --graph embedded`
        rerun = BurstRequest(run, overrides={"graph_mode": "embedded"}, publish=None)
        finished = run_burst(remote, rerun, show_progress=False)
    assert finished.status == "merged"
    assert set(finisher.records["score_batch"].secrets_seen) == {("claidex-neo4j",)}
    assert finisher.records["prepare"].remote_calls == []
    assert _committed(volume, run).scores.read_bytes() == local_scores

    missing = r"'claidex-neo4j' not found or lacks NEO4J_URI \(graph mode neo4j-live"
    with modal_for(volume).run() as remote, pytest.raises(MissingSecretError, match=missing):
        run_burst(remote, replace(start, run_id=f"{run}-2"), show_progress=False)


def test_missing_dataset_on_the_volume_names_the_upload_command(volume: DirectoryVolume) -> None:
    upload = "modal_burst upload DIR --data-name nope"
    with modal_for(volume).run() as remote, pytest.raises(InputError, match=upload):
        remote.functions["prepare"].remote("burst-4", "volume", "nope", {}, True)


def test_prune_keeps_the_newest_runs_and_never_touches_unfinished_ones(
    volume: DirectoryVolume, database_url: str
) -> None:
    standin = modal_for(volume, secrets=postgres(database_url))
    with standin.run() as remote:
        published = BurstRequest("p1-published", overrides={"batch_size": BATCH})
        assert run_burst(remote, published, show_progress=False).status == "published"
        running = _request("p2-scoring", max_batches=2)
        assert run_burst(remote, running, show_progress=False).status == "partial"
        assert _prepared(remote.functions, "p3-failed", {"batch_size": BATCH}, False)
        _break_batch(volume, "p3-failed", 0)
        assert run_burst(remote, _request("p3-failed"), show_progress=False).status == "failed"
        newest = BurstRequest("p4-published", overrides={"batch_size": BATCH})
        assert run_burst(remote, newest, show_progress=False).status == "published"
        untouched = {
            run: _files(volume, run) for run in ("p2-scoring", "p3-failed", "p4-published")
        }
        before = _files(volume, "p1-published")

        planned = prune_runs(volume, keep=1, dry_run=True)
        assert _files(volume, "p1-published") == before
        actions = {a.run_id: (a.action, a.status) for a in prune_runs(volume, keep=1)}
        assert actions == {
            "p4-published": ("newest", "published"),
            "p3-failed": ("unfinished", "failed"),
            "p2-scoring": ("unfinished", "scoring"),
            "p1-published": ("pruned", "published"),
        }
        assert {run: _files(volume, run) for run in untouched} == untouched
        kept = set(_files(volume, "p1-published"))
        batches = int(RunLedger(_committed(volume, "p4-published")).read()["batches_total"])
        gone = {f for f in before if f.split("/")[0] in ("stages", "chunks", "batches", "ledger")}
        per_batch = {f for f in gone if not f.startswith("stages/")}
        # per batch: a chunk, three slices (providers, provider-years, programs), a record
        assert len(per_batch) == 5 * batches
        assert any(f.startswith("stages/ingest/") for f in gone)  # the stages' intermediates
        assert kept == (set(before) - gone) | {PRUNED}
        assert {"scores.parquet", "run.json", "ledger.json", "report.json"} <= kept
        assert any(f.startswith("stats/") for f in kept)  # incremental runs' reference
        marker = json.loads((_committed(volume, "p1-published").root / PRUNED).read_text())
        assert (
            marker["files"] == len(gone) == next(a.files for a in planned if a.action == "pruned")
        )
        assert prune_runs(volume, keep=1)[-1].action == "pruned already"

        state = remote.functions["run_status"].remote("p1-published")
        assert state["pruned"] and state["missing"] == [] and state["status"] == "published"
        again = run_burst(remote, BurstRequest("p1-published", resume=True), show_progress=False)
        assert again.detail == "already published"
        resumed = run_burst(remote, BurstRequest("p2-scoring", resume=True), show_progress=False)
        assert resumed.status == "merged"  # the in-progress run finished after the prune


PROBE_APP = """
import os, time
from types import SimpleNamespace
import modal

CFG = SimpleNamespace(modal_volume="probe")
LOCAL_SOURCES = ("probe",)
RETRIES = modal.Retries(max_retries=1, initial_delay=2.0)
OPTIONS = {name: {"retries": RETRIES} for name in ("nap", "crash", "die_retried")}
app = modal.App("probe")

@app.function(timeout=1, retries=RETRIES)
def nap(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("PROBE", "no secret")

@app.function()
def die() -> None:
    os._exit(9)

@app.function(retries=RETRIES)
def crash(_: int) -> None:
    os._exit(9)

@app.function(retries=RETRIES)
def die_retried() -> None:
    os._exit(9)

@app.function()
def shipped() -> list[str]:
    return sorted(os.listdir(os.path.dirname(__file__)))

FUNCTIONS = {
    "nap": nap, "die": die, "crash": crash, "die_retried": die_retried, "shipped": shipped
}
"""


def _probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PROBE_APP as an importable App module (removed from sys.modules again at teardown)."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "__init__.py").write_text("")
    (tmp_path / "probe" / "app.py").write_text(PROBE_APP)
    (tmp_path / "probe" / "notes.sql").write_text("-- not Python")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("probe.app", "probe"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module("probe.app")


def test_standin_timeouts_count_as_retries_and_secrets_are_the_only_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: `.map` counts lost inputs against max_retries; a `.remote` lost input is retried
    without counting, by the deployed server (no retry policy) or by the client (a policy);
    only the `.py` files of LOCAL_SOURCES reach a container."""
    from modal.exception import FunctionTimeoutError, InternalFailure

    from tests.modal_standin import StandInCrashLoopError

    monkeypatch.setenv("PROBE", "the caller's")
    probe = _probe(tmp_path, monkeypatch)
    secrets = {"probe": {"PROBE": "from secret"}}
    standin = StandIn(probe, tmp_path / "volume", secrets=secrets, crash_loop_limit=3)
    with standin.run() as remote:
        nap = remote.functions["nap"]
        assert nap.remote(0) == "no secret"  # the caller's environment stays outside
        assert nap.with_options(secrets=[remote.secret("probe")]).remote(0) == "from secret"
        with pytest.raises(FunctionTimeoutError):
            nap.remote(5)
        for looping in ("die", "die_retried"):
            with pytest.raises(StandInCrashLoopError, match="retry it forever"):
                remote.functions[looping].remote()
        (lost,) = remote.functions["crash"].map([1], return_exceptions=True)
        assert isinstance(lost, InternalFailure)
        assert remote.functions["shipped"].remote() == ["__init__.py", "app.py"]
    assert standin.records["nap"].attempts[-2:] == [(5, "timeout"), (5, "timeout")]
    assert standin.records["nap"].retry_delays_ms == [2000]  # one retry, as Retries says
    for looping in ("die", "die_retried"):
        assert [kind for _, kind in standin.records[looping].attempts] == ["crash"] * 3
        assert standin.records[looping].retry_delays_ms == []  # never counted
    assert standin.records["crash"].attempts == [(1, "crash")] * 2  # 1 + max_retries
    assert standin.records["crash"].retry_delays_ms == [0]


def test_an_ephemeral_apps_server_fails_a_crash_loop_and_the_functions_pending_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ephemeral: a `.remote` without a retry policy is rescheduled until the function's
    crash rate passes the stand-in's threshold (3 crashes, half of its inputs), then the
    caller gets InternalFailure and the function's next input fails without a container.
    A `.remote` with a retry policy is the client's to retry, without end, still."""
    from modal.exception import InternalFailure

    from tests.modal_standin import StandInCrashLoopError

    probe = _probe(tmp_path, monkeypatch)
    standin = StandIn(probe, tmp_path / "volume", server="ephemeral", crash_loop_limit=5)
    with standin.run() as remote:
        die = remote.functions["die"]
        for _ in range(2):
            with pytest.raises(InternalFailure, match="failure rate exceeded"):
                die.remote()
        with pytest.raises(StandInCrashLoopError):
            remote.functions["die_retried"].remote()
    assert [kind for _, kind in standin.records["die"].attempts] == ["crash"] * 3 + ["cut_off"]
    retried = [kind for _, kind in standin.records["die_retried"].attempts]
    assert retried == ["crash"] * 3 + ["cut_off"] * 2  # the client retries even a cut-off


def test_a_container_sees_other_containers_writes_only_after_commit_and_reload(
    tmp_path: Path,
) -> None:
    root = tmp_path / "committed"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.txt").write_text("v1")
    first, second = Mount(root, tmp_path / "c1"), Mount(root, tmp_path / "c2")
    first.start()
    second.start()
    (first.view / "d" / "b.txt").write_text("new")
    (first.view / "d" / "a.txt").write_text("v2")
    second.reload()
    assert not (second.view / "d" / "b.txt").exists() and not (root / "d" / "b.txt").exists()
    first.commit()
    assert (root / "d" / "b.txt").read_text() == "new" and (
        root / "d" / "a.txt"
    ).read_text() == "v2"
    assert (second.view / "d" / "a.txt").read_text() == "v1"  # not reloaded yet
    second.reload()
    assert (second.view / "d" / "b.txt").read_text() == "new"
    assert (second.view / "d" / "a.txt").read_text() == "v2"
    (second.view / "d" / "a.txt").unlink()
    (second.view / "d" / "c.txt").write_text("second")
    (first.view / "d" / "c.txt").write_text("first")
    first.commit()
    second.commit()  # last write wins
    assert not (root / "d" / "a.txt").exists() and (root / "d" / "c.txt").read_text() == "second"
    first.reload()
    assert not (first.view / "d" / "a.txt").exists()
    assert (first.view / "d" / "c.txt").read_text() == "second"

    (second.view / "d" / "e.txt").write_text("e")
    second.commit()
    lazy = Mount(root, tmp_path / "c4", skip_reload=True)
    lazy.start()
    (second.view / "d" / "e.txt").write_text("e2")
    second.commit()
    (first.view / "d" / "f.txt").write_text("f")
    (lazy.view / "d" / "f.txt").write_text("f")
    first.commit()  # `_Volume.commit` reloads after committing
    lazy.commit()  # unless the server answers skip_reload
    assert (first.view / "d" / "e.txt").read_text() == "e2"
    assert (lazy.view / "d" / "e.txt").read_text() == "e"
    lazy.reload()
    assert (lazy.view / "d" / "e.txt").read_text() == "e2"

    eager = Mount(root, tmp_path / "c3", background_commits=True)
    eager.start()
    (eager.view / "d" / "g.txt").write_text("g")
    eager.reload()  # Modal: reloading "may implicitly commit"
    assert (root / "d" / "g.txt").read_text() == "g"


def test_reload_and_commit_refuse_while_a_file_of_the_volume_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_Volume.reload` raises the server's refusal with `_open_files_error_annotation`'s
    note; `_Volume.commit` raises it bare from the reload after its commit went through."""
    root = tmp_path / "committed"
    root.mkdir()
    mount = Mount(root, tmp_path / "view")
    mount.start()
    data = mount.view / "d" / "a.bin"
    data.parent.mkdir()
    data.write_bytes(b"x" * 4096)
    with data.open("rb"):
        with pytest.raises(RuntimeError) as refused:
            mount.reload()
        assert str(refused.value) == f"{OPEN_FILES}: path d/a.bin is open"
        with pytest.raises(RuntimeError) as refused:
            mount.commit()
        assert str(refused.value) == OPEN_FILES
        assert (root / "d" / "a.bin").read_bytes() == data.read_bytes()  # committed
    mount.reload()
    mount.commit()

    libc = ctypes.CDLL(None, use_errno=True)  # Python's mmap would keep a descriptor
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, *[ctypes.c_int] * 3, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(data, os.O_RDONLY)
    mapped = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    os.close(fd)  # no descriptor left: the mapping still holds the file open
    with pytest.raises(RuntimeError) as refused:
        mount.reload()
    assert str(refused.value) == OPEN_FILES  # Modal's annotation reads descriptors only
    assert libc.munmap(mapped, 4096) == 0
    monkeypatch.chdir(data.parent)
    with pytest.raises(RuntimeError) as refused:
        mount.reload()
    assert str(refused.value) == f"{OPEN_FILES}: cwd is inside volume"
    monkeypatch.chdir(tmp_path)
    mount.reload()


VOLUME_PROBE_APP = """
import mmap, os, time
from pathlib import Path
from types import SimpleNamespace
import modal

CFG = SimpleNamespace(modal_volume="probe-vol")
LOCAL_SOURCES = ("volprobe",)
IMAGE_ENV = {"PROBE_MOUNT": "/vol"}
app = modal.App("volprobe")
volume = modal.Volume.from_name("probe-vol", create_if_missing=True)
HELD = []  # a warm container keeps module globals between inputs

@app.function(volumes={"/vol": volume})
def act(action: str, name: str = "") -> object:
    path = Path(os.environ["PROBE_MOUNT"]) / name
    if action == "write":
        path.write_text(name)
    elif action == "open":
        HELD.append(path.open("rb"))
    elif action == "close":
        while HELD:
            HELD.pop().close()
    elif action == "commit":
        volume.commit()
    elif action == "reload":
        volume.reload()
    elif action == "die":  # writes, then puts the crash rule's file in place
        path.write_text(name)
        (path.parent / "tmp").write_text("")
        os.replace(path.parent / "tmp", path.parent / "boom")
    return path.exists() if name else None  # any other action: just look

@app.function(volumes={"/vol": volume})
def look(name: str) -> bool:
    volume.reload()
    return (Path(os.environ["PROBE_MOUNT"]) / name).exists()

FUNCTIONS = {"act": act, "look": look}
"""


@pytest.fixture
def volprobe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An App with one volume: `act` does one volume action per input in its one warm
    container, `look` reloads in another container and says whether a file is there."""
    (tmp_path / "volprobe").mkdir()
    (tmp_path / "volprobe" / "__init__.py").write_text("")
    (tmp_path / "volprobe" / "app.py").write_text(VOLUME_PROBE_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("volprobe.app")
    for name in ("volprobe.app", "volprobe"):  # the next test's copy is another folder
        sys.modules.pop(name)


def test_standin_commit_reloads_and_a_file_held_open_refuses_it(
    volprobe: ModuleType, tmp_path: Path
) -> None:
    """In a container: commit() brings other containers' commits in (`_Volume.commit`
    reloads); a file a warm container keeps open makes commit and reload raise Modal's
    RuntimeError, the commit itself kept."""
    committed = DirectoryVolume(tmp_path / "volume")
    standin = StandIn(volprobe, committed.root, max_containers=1)
    with standin.run() as remote:
        act, look = remote.functions["act"], remote.functions["look"]
        assert act.remote("write", "mine.txt") is True
        assert look.remote("theirs.txt") is False  # look's container is up
        committed.write_committed("theirs.txt", b"committed elsewhere")
        assert act.remote("check", "theirs.txt") is False  # not reloaded yet
        act.remote("commit")
        assert act.remote("open", "theirs.txt") is True and look.remote("mine.txt") is True

        act.remote("write", "more.txt")
        with pytest.raises(RuntimeError) as refused:
            act.remote("commit")
        assert str(refused.value) == OPEN_FILES
        assert look.remote("more.txt") is True  # committed before its reload was refused
        with pytest.raises(RuntimeError) as refused:
            act.remote("reload")
        assert str(refused.value) == f"{OPEN_FILES}: path theirs.txt is open"
        act.remote("close")
        act.remote("reload")
        act.remote("commit")


def test_standin_commits_at_shutdown_never_when_killed_and_names_the_forgotten_commit(
    volprobe: ModuleType, tmp_path: Path
) -> None:
    """Modal's final commit when a container stops: it makes a forgotten commit visible only
    after the App stopped, which the stand-in reports; a killed container commits nothing.
    Periodic commits (`commit_interval`) make the forgotten commit pass unnoticed."""
    root = tmp_path / "volume"
    root.mkdir()
    boom = CrashRule("boom", volume="probe-vol")
    standin = StandIn(volprobe, root, max_containers=1, crash=[boom])
    forgotten = r"commit before returning: act \(probe-vol\): late.txt$"
    with pytest.raises(StandInForgottenCommitError, match=forgotten), standin.run() as remote:
        act, look = remote.functions["act"], remote.functions["look"]
        (lost,) = act.map(["die"], kwargs={"name": "lost.txt"}, return_exceptions=True)
        assert isinstance(lost, InternalFailure)  # container act-1 died with lost.txt
        act.remote("write", "late.txt")
        assert look.remote("late.txt") is False  # what the next step would see
    assert (root / "late.txt").exists() and not (root / "lost.txt").exists()
    assert standin.crash_count == [1]

    allowed = StandIn(volprobe, root, allow_shutdown_commits=True)
    with allowed.run() as remote:
        remote.functions["act"].remote("write", "also-late.txt")
    assert (root / "also-late.txt").exists()
    assert allowed.shutdown_commits == [("act", "probe-vol", ["also-late.txt"])]

    ticking = StandIn(volprobe, root, commit_interval=0.05)
    with ticking.run() as remote:
        remote.functions["act"].remote("write", "ticked.txt")
        time.sleep(0.5)
        assert remote.functions["look"].remote("ticked.txt") is True
    assert ticking.shutdown_commits == []


def test_upload_replaces_the_dataset_and_rejects_a_non_dataset(
    volume: DirectoryVolume, sample_dataset: Path, tmp_path: Path
) -> None:
    local = tmp_path / "dataset"
    shutil.copytree(sample_dataset, local)
    (local / "notes.txt").write_text("not a table")
    assert "entities.parquet" in upload_dataset(volume, local, "d")
    (local / "entities.parquet").unlink()
    assert "entities.parquet" not in upload_dataset(volume, local, "d")
    on_volume = sorted(p.name for p in (volume.root / "datasets" / "d").iterdir())
    assert "entities.parquet" not in on_volume and "notes.txt" not in on_volume
    assert "payments_combined.parquet" in on_volume
    with pytest.raises(InputError, match=r"missing providers\.parquet, payments_combined"):
        upload_dataset(volume, tmp_path / "empty", "empty")


def test_run_overrides_carry_the_callers_methodology_not_its_paths() -> None:
    cfg = Settings(as_of_year=2022, run_root=Path("/somewhere"), modal_neo4j_secret="neo-2")
    chosen = run_overrides(cfg, batch_size=None)
    assert chosen["as_of_year"] == 2022 and chosen["batch_size"] == cfg.modal_batch_size
    assert "run_root" not in chosen
    assert chosen["modal_neo4j_secret"] == "neo-2"  # the secrets this caller checks and names
    assert chosen["modal_postgres_secret"] == "claidex-postgres"
    assert run_overrides(cfg, batch_size=9)["batch_size"] == 9
    assert chosen["shard_rows"] == cfg.modal_shard_rows  # a burst's shards are smaller
    assert run_overrides(cfg, shards=5)["shards"] == 5


def test_each_step_gets_only_the_secrets_the_run_needs() -> None:
    def names(needs: RunNeeds) -> dict[str, list[str]]:
        return {step: [u.name for u in uses] for step, uses in secret_uses(needs).items()}

    pg, neo = ["claidex-postgres"], ["claidex-neo4j"]
    none: dict[str, list[str]] = {step: [] for step in STEPS}
    assert names(RunNeeds(publishes=False)) == none
    assert names(RunNeeds()) == {**none, "merge_and_calibrate": pg}
    assert names(RunNeeds(reads_postgres=True, publishes=False)) == {
        **none,
        "prepare": pg,
        "stage_shard": pg,
    }
    snapshot = names(RunNeeds("neo4j-snapshot", publishes=False))
    assert snapshot == {**none, "stage_single": neo}
    live = names(RunNeeds("neo4j-live", reads_postgres=True))
    assert live == {
        **none,
        "prepare": pg,
        "stage_shard": pg,
        "stage_single": neo,
        "score_batch": neo,
        "merge_and_calibrate": pg,
    }
    state = {"graph_mode": "neo4j-live", "publish": False}
    assert RunNeeds.of_run(state, publish=None) == RunNeeds("neo4j-live", publishes=False)
    exporting = {**state, "plan_source": "postgres", "prepared": False}  # mid-export resume
    assert RunNeeds.of_run(exporting, publish=None).reads_postgres is True
    assert RunNeeds.of_run({**exporting, "prepared": True}, publish=None).reads_postgres is False
    assert RunNeeds.of_run(state, publish=True).publishes is True
    assert RunNeeds.of_request({"graph_mode": "neo4j-snapshot"}, "postgres", True) == RunNeeds(
        "neo4j-snapshot", reads_postgres=True
    )
    own = {**state, "postgres_secret": "pg-2", "neo4j_secret": "neo-2"}  # run.json's names
    assert names(RunNeeds.of_run(own, publish=True))["score_batch"] == ["neo-2"]
    assert names(RunNeeds.of_run(own, publish=True))["merge_and_calibrate"] == ["pg-2"]
    undecided = {"run_id": "r1", "graph_mode": "embedded"}  # the ledger lacks the choice
    with pytest.raises(RunStateError, match=r"r1: .* pass --publish or --no-publish"):
        RunNeeds.of_run(undecided, publish=None)
    assert RunNeeds.of_run(undecided, publish=False).publishes is False


def _app_config(**env: str) -> dict:
    """The App as `modal deploy` would see it, imported fresh with the given environment;
    records how volumes are named and what the image installs."""
    script = """
import json, warnings
warnings.simplefilter("ignore")
import modal
calls = {"volumes": [], "installs": []}
from_name = modal.Volume.from_name
def volume_from_name(name, **options):
    calls["volumes"].append({"name": name, **options})
    return from_name(name, **options)
modal.Volume.from_name = volume_from_name
uv_pip_install = modal.Image.uv_pip_install
def record_install(self, *packages, **options):
    calls["installs"].append({"packages": list(packages), **options})
    return uv_pip_install(self, *packages, **options)
modal.Image.uv_pip_install = record_install
def refuse(*args, **options):
    raise AssertionError("pip_install_from_pyproject installs every project dependency")
modal.Image.pip_install_from_pyproject = refuse
modal.Image.pip_install = refuse
from modal_burst import app as a
from modal_burst import cli
cli._volume()
out = {"app": a.app.name, "names": sorted(a.app.registered_functions), **calls}
for name, fn in a.app.registered_functions.items():
    info = fn.info()
    out[name] = {"timeout": info.timeout, "memory": info.memory_mib,
                 "retries": info.max_retries, "cpu": info.cpu, "secrets": info.secrets,
                 "volumes": {p: v.name for p, v in info.volumes.items()}}
out["max_containers"] = a.OPTIONS["score_batch"]["max_containers"]
print(json.dumps(out))
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAIDEX_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_app_configuration() -> None:
    config = _app_config()
    assert config["app"] == "claidex-burst"
    assert config["names"] == [
        "build_info",  # what `check` asks a deployed app
        "merge_and_calibrate",
        "prepare",
        "record_status",
        "run_full",
        "run_status",
        "score_batch",
        "stage_shard",
        "stage_single",
    ]
    assert config["max_containers"] == 300
    batch, merge, prepare = config["score_batch"], config["merge_and_calibrate"], config["prepare"]
    assert (batch["timeout"], batch["memory"], batch["retries"], batch["cpu"]) == (900, 4096, 3, 1)
    shard = config["stage_shard"]  # a shard's memory does not grow with the population
    assert (shard["timeout"], shard["memory"], shard["retries"], shard["cpu"]) == (1800, 4096, 3, 1)
    assert merge["memory"] > batch["memory"] and prepare["memory"] > batch["memory"]
    for single in ("prepare", "stage_single", "merge_and_calibrate"):
        assert config[single]["retries"] is None  # their failures would only repeat
    for name in set(config["names"]) - {"run_full", "build_info"}:
        assert config[name]["volumes"] == {"/data": "claidex-data"}
    assert config["run_full"]["volumes"] == {}  # the driver only calls the other functions
    assert config["build_info"]["volumes"] == {}
    for name in config["names"]:  # declared secrets would be looked up at every app start
        assert config[name]["secrets"] == []
    assert (
        config["volumes"]
        == [  # the App's volume and the client side's (upload, prune)
            {"name": "claidex-data", "create_if_missing": True, "version": 2}
        ]
        * 2
    )
    (installed,) = config["installs"]  # the lock alone, by the dev lock's uv (tests/test_locks.py)
    assert installed == {
        "packages": [],
        "requirements": [str(ROOT / "claidex" / "locks" / "container.txt")],
        "uv_version": locked_packages(ROOT / "claidex" / "locks" / "dev.txt")["uv"],
        "extra_options": "--require-hashes",
    }


def test_app_configuration_follows_settings_but_never_declares_secrets() -> None:
    live = _app_config(CLAIDEX_GRAPH_MODE="neo4j-live", CLAIDEX_MODAL_MAX_CONTAINERS="50")
    assert live["max_containers"] == 50
    assert all(live[name]["secrets"] == [] for name in live["names"])


MODAL_FREE = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}


@pytest.mark.parametrize(
    "command",
    [
        ["full"],
        ["full", "--max-batches", "2", "--no-publish"],
        ["resume", "r1"],
        ["merge", "r1"],
        ["merge", "r1", "--publish"],
        ["status", "r1"],
        ["upload", "."],
        ["download", "r1", "out"],
        ["prune", "--keep", "2"],
    ],
)
def test_every_command_without_credentials_fails_fast_with_one_line(
    command: list[str], tmp_path: Path
) -> None:
    env = {**MODAL_FREE, "HOME": str(tmp_path), "MODAL_TOKEN_ID": "ak-not-a-secret-but-alone"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "modal_burst", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "modal token new" in lines[0], result.stderr
    assert "ak-not-a-secret" not in result.stderr + result.stdout
    assert result.stdout == ""


BROKEN_CONFIGS = {
    "malformed": ("this is [not toml\n", {}, "cannot read its config file"),
    "two profiles, none active": (
        '[a]\ntoken_id = "ak-1"\ntoken_secret = "as-1"\n'
        '[b]\ntoken_id = "ak-2"\ntoken_secret = "as-2"\n',
        {},
        "No Modal profile is active. Please fix by running `modal profile activate`",
    ),
    "MODAL_PROFILE names none": (
        '[a]\ntoken_id = "ak-1"\ntoken_secret = "as-1"\n',
        {"MODAL_PROFILE": "prod"},
        "MODAL_PROFILE='prod' names no profile of",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_CONFIGS))
def test_a_broken_modal_config_is_one_line(case: str, tmp_path: Path) -> None:
    """Modal itself raises a 37-line InvalidError traceback when it is imported with a
    malformed ~/.modal.toml; the hand-off falls back to the fleet on the same one line."""
    text, env, expected = BROKEN_CONFIGS[case]
    (tmp_path / ".modal.toml").write_text(text)
    environment = {**MODAL_FREE, "HOME": str(tmp_path), **env}
    handoff = (
        "from modal_burst.handoff import spawn_full_run\n"
        "from scoring.config import Settings\n"
        "try:\n"
        "    spawn_full_run('r1', Settings())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    runs = [["-m", "modal_burst", "status", "r1"], ["-m", "modal_burst", "check"], ["-c", handoff]]
    for args in runs if case == "malformed" else runs[:1]:
        result = subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
        shown = (result.stderr + result.stdout).strip().splitlines()
        assert len(shown) == 1 and expected in shown[0], result
        assert "as-1" not in shown[0] and "ak-1" not in shown[0]
    if case == "malformed":
        assert shown[0].startswith("ModalNotConfiguredError Modal cannot read its config file")
        assert "not valid TOML at line 1 column" in shown[0]


CREDENTIAL_CASES = """
import json, os
from modal_burst.credentials import ModalNotConfiguredError, require_credentials
cases = {
    "token": {"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"},
    "token id alone": {"MODAL_TOKEN_ID": "ak-1"},
    "oauth client secret": {"MODAL_OAUTH_REFRESH_TOKEN": "r", "MODAL_OAUTH_CLIENT_ID": "oc-1",
                            "MODAL_OAUTH_CLIENT_SECRET": "ov-1"},
    "oauth jwt key": {"MODAL_OAUTH_REFRESH_TOKEN": "r", "MODAL_OAUTH_CLIENT_ID": "oc-1",
                      "MODAL_OAUTH_JWT_KEY": "k"},
    "oauth secret and jwt key": {"MODAL_OAUTH_REFRESH_TOKEN": "r", "MODAL_OAUTH_CLIENT_ID": "oc-1",
                                 "MODAL_OAUTH_CLIENT_SECRET": "ov-1", "MODAL_OAUTH_JWT_KEY": "k"},
    "oauth without client id": {"MODAL_OAUTH_REFRESH_TOKEN": "r",
                                "MODAL_OAUTH_CLIENT_SECRET": "ov-1"},
    "token and oauth": {"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1",
                        "MODAL_OAUTH_REFRESH_TOKEN": "r", "MODAL_OAUTH_CLIENT_ID": "oc-1",
                        "MODAL_OAUTH_CLIENT_SECRET": "ov-1"},
    "inside a container": {"MODAL_IS_REMOTE": "1"},
    "profile only": {},
}
base = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
out = {}
for name, env in cases.items():
    os.environ.clear()
    os.environ.update({**base, **env})
    try:
        require_credentials()
        out[name] = None
    except ModalNotConfiguredError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def _credential_results(home: Path) -> dict[str, str | None]:
    result = subprocess.run(
        [sys.executable, "-c", CREDENTIAL_CASES],
        cwd=ROOT,
        env={**MODAL_FREE, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_every_credential_form_modal_accepts_counts(tmp_path: Path) -> None:
    results = _credential_results(tmp_path)  # no ~/.modal.toml
    accepted = {"token", "oauth client secret", "oauth jwt key", "inside a container"}
    assert {name for name, problem in results.items() if problem is None} == accepted
    assert (
        "modal token new" in results["token id alone"]
        and "modal token new" in results["profile only"]
    )
    for name in ("oauth secret and jwt key", "oauth without client id"):
        assert results[name].startswith("incomplete Modal OAuth credentials")
    assert "both configured" in results["token and oauth"]
    assert all("\n" not in p and "ov-1" not in p for p in results.values() if p)

    (tmp_path / ".modal.toml").write_text(
        '[default]\noauth_refresh_token = "r"\noauth_client_id = "oc-1"\noauth_jwt_key = "k"\n'
    )
    with_profile = _credential_results(tmp_path)
    assert with_profile["profile only"] is None  # OAuth in the active profile
    assert "both configured" in with_profile["token"]  # Modal refuses the mixture too


def test_handoff_without_credentials_is_a_clear_error(tmp_path: Path) -> None:
    """In a fresh process: Modal reads ~/.modal.toml when it is imported."""
    script = (
        "from modal_burst.handoff import spawn_full_run\n"
        "from scoring.config import Settings\n"
        "try:\n"
        "    spawn_full_run('r1', Settings())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**MODAL_FREE, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.startswith("ModalNotConfiguredError no Modal credentials"), result
    assert "modal token new" in result.stdout


def test_resume_and_merge_commands_ask_for_the_runs_publish_choice() -> None:
    from modal_burst.cli import build_parser, publish_choice, resume_request

    plain = resume_request(build_parser().parse_args(["resume", "r1"]))
    assert (plain.run_id, plain.resume, plain.publish) == ("r1", True, None)
    quiet = resume_request(build_parser().parse_args(["resume", "r1", "--no-publish"]))
    assert quiet.publish is False
    assert resume_request(build_parser().parse_args(["resume", "r1", "--publish"])).publish
    parse = build_parser().parse_args
    assert publish_choice(parse(["merge", "r1"])) is None
    assert publish_choice(parse(["merge", "r1", "--no-publish"])) is False
    assert publish_choice(parse(["merge", "r1", "--publish"])) is True
    assert publish_choice(parse(["full", "--run-id", "r1", "--publish"])) is True
    assert parse(["prune"]).keep == 3 and parse(["prune", "--keep", "0"]).keep == 0


def test_a_burst_is_blocked_by_its_checks_like_the_local_engine(
    volume: DirectoryVolume,
    sample_dataset: Path,
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 24: the merge body runs the same checks; a blocked burst leaves the table alone
    and exits 3 with the checks' line; its resume does not re-run it."""
    from modal_burst.cli import report
    from tests.builders import table_bytes, without_medicaid

    upload_dataset(volume, without_medicaid(sample_dataset, tmp_path / "bad"), "bad")
    standin = modal_for(volume, secrets=postgres(database_url))
    overrides = {"batch_size": BIG_BATCH}
    with standin.run() as remote:
        first = run_burst(
            remote, BurstRequest("ref", overrides=overrides, publish=True), show_progress=False
        )
        assert first.status == "published", first.detail
        before = table_bytes(database_url)
        request = BurstRequest("held", data_name="bad", overrides=overrides, publish=True)
        held = run_burst(remote, request, show_progress=False)
        merged_at = _committed(volume, "held").scores.stat().st_mtime_ns
        again = run_burst(remote, replace(request, resume=True), show_progress=False)
        still = merge_only(remote, "held", publish=True)
        assert _committed(volume, "held").scores.stat().st_mtime_ns == merged_at  # not re-run
        assert RunLedger(_committed(volume, "held")).read()["status"] == "blocked"
        assert table_bytes(database_url) == before
        accepted = merge_only(remote, "held", publish=True, accept="Medicaid withdrawn")
    assert held.status == "blocked" and "program_rows[Medicaid]" in held.detail
    assert "python -m modal_burst merge held --accept" in held.detail
    assert again.status == "blocked" and still["status"] == "blocked"
    assert accepted["status"] == "published" and table_bytes(database_url) != before
    ledger = RunLedger(_committed(volume, "held")).read()
    assert ledger["accepted"]["reason"] == "Medicaid withdrawn"
    assert report(held) == 3
    assert capsys.readouterr().err.strip() == f"error: {held.detail}"
