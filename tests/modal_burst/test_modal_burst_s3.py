"""A burst whose runs (and dataset) live on S3 instead of the volume (issue 25), through the
stand-in (tests/modal_standin.py) against the suite's real S3 server: every function carries
the S3 secret (declared on the App, and first among a step's with_options secrets, which
replace the declared ones), and containers see the credentials only through it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from claidex.local_engine import run_local
from modal_burst.burst import BurstRequest
from modal_burst.driver import run_burst
from modal_burst.run_secrets import MissingSecretError
from scoring.config import Settings
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.devservices import PrivateS3
from tests.modal_standin import DirectoryVolume, StandIn

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture
def s3_app(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """modal_burst.app imported with CLAIDEX_MODAL_RUN_ROOT on the bucket (as `modal deploy`
    would with that environment); the ordinary App again afterwards. The driver's process
    keeps no AWS variable: only containers, through the secret, reach the bucket."""
    from modal_burst import app

    monkeypatch.setenv("CLAIDEX_MODAL_RUN_ROOT", f"{s3_env['root']}/runs")
    try:
        yield importlib.reload(app)
    finally:
        monkeypatch.delenv("CLAIDEX_MODAL_RUN_ROOT")
        importlib.reload(app)


def _secret(s3_server: PrivateS3) -> dict[str, dict[str, str]]:
    return {"claidex-s3": s3_server.env()}


def test_a_burst_on_an_s3_run_root_and_dataset_gives_the_local_bytes(
    s3_app: ModuleType,
    s3_server: PrivateS3,
    s3_env: dict[str, str],
    sample_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = s3_server.upload(sample_dataset, f"{s3_env['root'].split('/', 3)[3]}/data")
    local = run_local(sample_dataset, Settings(batch_size=700), run_dir=tmp_path / "local")
    volume = DirectoryVolume(tmp_path / "volume")  # mounted, and left empty
    standin = StandIn(s3_app, volume.root, secrets=_secret(s3_server))
    request = BurstRequest("s3-burst", data_name=data, overrides={"batch_size": 500}, publish=False)
    for name in AWS_VARIABLES:  # what the containers get comes from the secret alone
        monkeypatch.delenv(name)
    with standin.run() as remote:
        outcome = run_burst(remote, request, show_progress=False)
    assert outcome.status == "merged", outcome
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    paths = RunPaths(f"{s3_env['root']}/runs/s3-burst")
    assert paths.store.read_bytes("scores.parquet") == local.scores.read_bytes()
    state = RunLedger(paths).read()
    assert state["engine"] == "modal" and state["source"] == data
    assert not list((tmp_path / "volume").rglob("*.parquet")), "nothing on the volume"
    seen = {names for record in standin.records.values() for names in record.secrets_seen}
    assert seen and all(names[:1] == ("claidex-s3",) for names in seen), seen


def test_an_s3_burst_without_its_secret_fails_in_one_line_naming_it(
    s3_app: ModuleType, s3_server: PrivateS3, tmp_path: Path
) -> None:
    volume = DirectoryVolume(tmp_path / "volume")
    lacking = {"claidex-s3": {"AWS_ACCESS_KEY_ID": "only-the-id"}}
    standin = StandIn(s3_app, volume.root, secrets=lacking)
    with pytest.raises(Exception) as raised, standin.run() as remote:
        run_burst(remote, BurstRequest("no-secret", publish=False), show_progress=False)
    text = str(raised.value)
    assert "claidex-s3" in text and "AWS_SECRET_ACCESS_KEY" in text, text
    assert isinstance(raised.value, MissingSecretError) or "Secret" in text


def test_download_and_prune_say_where_the_runs_are_when_they_are_on_s3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modal_burst.cli import _runs_on_s3
    from scoring.errors import InputError

    monkeypatch.setenv("CLAIDEX_MODAL_RUN_ROOT", "s3://claidex-runs/burst")
    for command in ("download", "prune"):
        with pytest.raises(InputError, match=r"runs are on S3 \(s3://claidex-runs/burst\)"):
            _runs_on_s3(command)
    monkeypatch.delenv("CLAIDEX_MODAL_RUN_ROOT")
    _runs_on_s3("download")  # the volume: nothing to say
