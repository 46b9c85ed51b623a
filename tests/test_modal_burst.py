"""Modal burst mode without Modal: the App's function bodies run locally over a directory laid
out like the volume, driven through stand-ins for Function.map and the Volume (issue: Modal)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import polars as pl
import psycopg
import pytest

from claidex.local_engine import run_local
from modal_burst import app as burst_app
from modal_burst.driver import BurstRequest, run_burst, run_overrides
from modal_burst.layout import VolumeLayout
from modal_burst.transfer import download_run, upload_dataset
from scoring.config import Settings
from scoring.errors import InputError, RunStateError
from scoring.ledger import RunLedger
from tests.modal_standin import DirectoryVolume, local_functions

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500


@pytest.fixture
def volume(tmp_path: Path, sample_dataset: Path, monkeypatch: pytest.MonkeyPatch):
    """A directory laid out like the volume, holding the sample dataset as `claidex`; the App's
    functions see it through CLAIDEX_MODAL_MOUNT."""
    root = tmp_path / "volume"
    stand_in = DirectoryVolume(root)
    upload_dataset(stand_in, sample_dataset, "claidex")
    monkeypatch.setenv("CLAIDEX_MODAL_MOUNT", str(root))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    warnings.filterwarnings("ignore", message=".*executing locally.*")
    return stand_in


@pytest.fixture
def local_scores(sample_dataset: Path, tmp_path: Path) -> bytes:
    paths = run_local(
        sample_dataset, Settings(batch_size=700), run_dir=tmp_path / "local", show_progress=False
    )
    return paths.scores.read_bytes()


def _request(run_id: str, **extra) -> BurstRequest:
    return BurstRequest(run_id, overrides={"batch_size": BATCH}, publish=False, **extra)


def test_bodies_reproduce_the_local_engine_with_max_batches_then_resume(
    volume: DirectoryVolume, local_scores: bytes, tmp_path: Path
) -> None:
    functions = local_functions(burst_app.FUNCTIONS)
    smoke = run_burst(functions, _request("burst-1", max_batches=2), show_progress=False)
    assert smoke.status == "partial" and smoke.dispatched == [0, 1]
    assert smoke.batches_done == 2 and smoke.batches_total >= 5
    assert functions["merge_and_calibrate"].remote_calls == []
    paths = VolumeLayout(volume.root).run("burst-1")
    assert not paths.scores.exists()
    assert RunLedger(paths).summary()["batches_done"] == 2

    resumed = run_burst(functions, _request("burst-1"), show_progress=False)
    assert resumed.status == "merged" and resumed.batches_done == resumed.batches_total
    assert resumed.dispatched == list(range(2, resumed.batches_total))
    assert functions["score_batch"].mapped == list(range(resumed.batches_total))
    assert len(functions["prepare"].remote_calls) == 1  # the resume did not prepare again
    assert paths.scores.read_bytes() == local_scores
    assert RunLedger(paths).read()["engine"] == "modal"

    files = download_run(volume, "burst-1", tmp_path / "down")
    assert {"scores.parquet", "report.json", "ledger.json", "run.json"} <= set(files)
    assert (tmp_path / "down" / "scores.parquet").read_bytes() == local_scores


def _break_batch(volume: DirectoryVolume, run_id: str, index: int) -> tuple[Path, bytes]:
    slice_file = VolumeLayout(volume.root).run(run_id).batch_providers(index)
    original = slice_file.read_bytes()
    slice_file.write_bytes(b"not parquet")
    return slice_file, original


def test_driver_dispatches_one_call_per_missing_batch_and_never_merges_a_gap(
    volume: DirectoryVolume, local_scores: bytes
) -> None:
    functions = local_functions(burst_app.FUNCTIONS)
    prepared = functions["prepare"].remote(
        "burst-2", "volume", "claidex", {"batch_size": BATCH}, False
    )
    total = prepared["batches_total"]
    broken = [_break_batch(volume, "burst-2", i) for i in (1, 3)]

    failed = run_burst(functions, _request("burst-2"), show_progress=False)
    assert failed.status == "failed"
    assert sorted(failed.failed) == [1, 3]
    assert all("RunFileError" in error for error in failed.failed.values())
    assert functions["score_batch"].mapped == list(range(total))  # one call each
    assert functions["merge_and_calibrate"].remote_calls == []
    ledger = RunLedger(VolumeLayout(volume.root).run("burst-2"))
    summary = ledger.summary()
    assert summary["status"] == "failed" and summary["failed_step"] == "score"
    assert summary["batches_failed"] == [1, 3] and "batch 1: RunFileError" in summary["error"]
    state = functions["run_status"].remote("burst-2")
    assert state["missing"] == [1, 3] and set(state["batch_errors"]) == {1, 3}

    for slice_file, original in broken:
        slice_file.write_bytes(original)
    functions["score_batch"].mapped.clear()
    done = run_burst(functions, _request("burst-2"), show_progress=False)
    assert functions["score_batch"].mapped == [1, 3]
    assert done.status == "merged" and len(functions["merge_and_calibrate"].remote_calls) == 1
    assert VolumeLayout(volume.root).run("burst-2").scores.read_bytes() == local_scores

    again = run_burst(functions, _request("burst-2"), show_progress=False)
    assert again.status == "merged" and functions["score_batch"].mapped == [1, 3]


def test_resume_refuses_an_unknown_run_and_keeps_the_runs_publish_choice(
    volume: DirectoryVolume, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    functions = local_functions(burst_app.FUNCTIONS)
    with pytest.raises(RunStateError, match="is not on the volume: nothing to resume"):
        run_burst(functions, BurstRequest("typo", resume=True), show_progress=False)
    assert functions["prepare"].remote_calls == []
    monkeypatch.setenv("DATABASE_URL", database_url)
    smoke = BurstRequest("burst-5", overrides={"batch_size": BATCH}, max_batches=1, publish=False)
    assert run_burst(functions, smoke, show_progress=False).status == "partial"
    resumed = run_burst(
        functions, BurstRequest("burst-5", publish=None, resume=True), show_progress=False
    )
    assert resumed.status == "merged"  # started with --no-publish: the resume does not publish
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone() == (0,)


def test_merge_publishes_once_with_the_postgres_secret(
    volume: DirectoryVolume, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)  # what the claidex-postgres secret provides
    functions = local_functions(burst_app.FUNCTIONS)
    request = BurstRequest("burst-3", overrides={"batch_size": BATCH}, publish=True)
    outcome = run_burst(functions, request, show_progress=False)
    assert outcome.status == "published"
    scores = pl.read_parquet(VolumeLayout(volume.root).run("burst-3").scores)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM provider_risk_scores").fetchone()
    assert rows == (scores.height,)
    merged = functions["merge_and_calibrate"].remote("burst-3", True)
    assert merged.get("skipped") is True  # merge-only recovery never publishes twice


def test_missing_dataset_on_the_volume_names_the_upload_command(volume: DirectoryVolume) -> None:
    with pytest.raises(InputError, match="modal_burst upload DIR --data-name nope"):
        burst_app.prepare.local("burst-4", "volume", "nope", {}, True)


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
    cfg = Settings(as_of_year=2022, run_root=Path("/somewhere"))
    chosen = run_overrides(cfg, batch_size=None)
    assert chosen["as_of_year"] == 2022 and chosen["batch_size"] == cfg.modal_batch_size
    assert "run_root" not in chosen
    assert run_overrides(cfg, batch_size=9)["batch_size"] == 9


def _app_config(**env: str) -> dict:
    """The App as `modal deploy` would see it, imported fresh with the given environment."""
    script = """
import json, warnings
warnings.simplefilter("ignore")
from modal_burst import app as a
out = {"app": a.app.name, "names": sorted(a.app.registered_functions)}
for name, fn in a.app.registered_functions.items():
    info = fn.info()
    out[name] = {"timeout": info.timeout, "memory": info.memory_mib,
                 "retries": info.max_retries, "cpu": info.cpu, "secrets": info.secrets,
                 "volumes": {p: v.name for p, v in info.volumes.items()}}
out["max_containers"] = a.SCORE_BATCH_OPTIONS["max_containers"]
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


POSTGRES = ["modal.Secret.from_name('claidex-postgres')"]
NEO4J = ["modal.Secret.from_name('claidex-neo4j')"]


def test_app_configuration() -> None:
    config = _app_config()
    assert config["app"] == "claidex-burst"
    assert config["names"] == [
        "merge_and_calibrate",
        "prepare",
        "record_status",
        "run_full",
        "run_status",
        "score_batch",
    ]
    assert config["max_containers"] == 300
    batch, merge, prepare = config["score_batch"], config["merge_and_calibrate"], config["prepare"]
    assert (batch["timeout"], batch["memory"], batch["retries"], batch["cpu"]) == (900, 4096, 3, 1)
    assert merge["memory"] > batch["memory"] and prepare["memory"] > batch["memory"]
    assert prepare["retries"] is None and merge["retries"] is None  # failures would repeat
    for name in ("prepare", "score_batch", "merge_and_calibrate", "run_status", "record_status"):
        assert config[name]["volumes"] == {"/data": "claidex-data"}
    assert config["run_full"]["volumes"] == {}  # the driver only calls the other functions
    assert batch["secrets"] == [] and config["run_full"]["secrets"] == []
    assert prepare["secrets"] == POSTGRES and merge["secrets"] == POSTGRES
    assert config["run_status"]["secrets"] == []


def test_app_configuration_follows_settings_and_graph_mode() -> None:
    live = _app_config(CLAIDEX_GRAPH_MODE="neo4j-live", CLAIDEX_MODAL_MAX_CONTAINERS="50")
    assert live["max_containers"] == 50
    assert live["score_batch"]["secrets"] == NEO4J
    assert live["prepare"]["secrets"] == POSTGRES + NEO4J
    assert live["merge_and_calibrate"]["secrets"] == POSTGRES
    snapshot = _app_config(CLAIDEX_GRAPH_MODE="neo4j-snapshot")
    assert snapshot["score_batch"]["secrets"] == []
    assert snapshot["prepare"]["secrets"] == POSTGRES + NEO4J


@pytest.mark.parametrize(
    "command",
    [
        ["full"],
        ["full", "--max-batches", "2", "--no-publish"],
        ["resume", "r1"],
        ["merge", "r1"],
        ["status", "r1"],
        ["upload", "."],
        ["download", "r1", "out"],
    ],
)
def test_every_command_without_credentials_fails_fast_with_one_line(
    command: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(HOME=str(tmp_path), MODAL_TOKEN_ID="ak-not-a-secret-but-alone")
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.startswith("ModalNotConfiguredError no Modal credentials"), result
    assert "modal token new" in result.stdout


@pytest.mark.parametrize("mode", ["neo4j-snapshot", "neo4j-live"])
def test_burst_in_a_neo4j_graph_mode_reproduces_the_local_engine(
    volume: DirectoryVolume, sample_dataset: Path, local_scores: bytes, graph_target, mode: str
) -> None:
    from tests.graphs import load_dataset_graph

    load_dataset_graph(graph_target, sample_dataset)
    functions = local_functions(burst_app.FUNCTIONS)
    request = BurstRequest(
        f"burst-{mode}", overrides={"batch_size": BATCH, "graph_mode": mode}, publish=False
    )
    outcome = run_burst(functions, request, show_progress=False)
    assert outcome.status == "merged"
    assert VolumeLayout(volume.root).run(f"burst-{mode}").scores.read_bytes() == local_scores


def test_resume_command_asks_for_an_existing_run_and_the_runs_publish_choice() -> None:
    from modal_burst.cli import build_parser, resume_request

    plain = resume_request(build_parser().parse_args(["resume", "r1"]))
    assert (plain.run_id, plain.resume, plain.publish) == ("r1", True, None)
    quiet = resume_request(build_parser().parse_args(["resume", "r1", "--no-publish"]))
    assert quiet.publish is False
