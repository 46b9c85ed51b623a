"""`python -m modal_burst check` against a workspace: what it finds wrong, in one place.

The account side asks three things (modal_burst/check.py::ModalAccount): the volume by name
as v2 (`Volume.from_name(..., version=2, create_if_missing=False)`: NotFoundError when
there is none, InvalidError "has version v1" for an old one), each secret with its required
keys (the stand-in's workspace, as the driver's lookups), and the deployed app's
`build_info` (the stamp baked into its image at deploy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modal_burst import app as burst_app
from modal_burst.check import check_command
from modal_burst.image import build_stamp
from tests.modal_standin import StandIn


class WorkspaceAccount:
    """An account whose secrets are a StandIn's workspace (same lookups as the driver's)."""

    def __init__(self, standin: StandIn, volume: int | None, deployed: dict | None) -> None:
        self.standin = standin
        self.volume = volume
        self.deployed = deployed

    def volume_version(self, name: str) -> int | None:
        return self.volume

    def secret_problem(self, name: str, keys: tuple[str, ...]) -> str | None:
        from modal.exception import NotFoundError

        try:
            self.standin.lookup(name, keys)
        except NotFoundError as exc:
            return f"missing or lacks {', '.join(keys)} ({exc})"
        return None

    def deployed_build(self, app: str) -> dict | None:
        return self.deployed


@pytest.fixture
def standin(tmp_path: Path) -> StandIn:
    secrets = {"claidex-postgres": {"DATABASE_URL": "postgresql://u:p@db/claidex"}}
    return StandIn(burst_app, tmp_path / "volume", secrets=secrets)


def test_check_passes_when_the_account_has_everything(
    standin: StandIn, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    account = WorkspaceAccount(standin, 2, build_stamp())
    assert check_command(account) == 0
    out = capsys.readouterr()
    assert "account: volume claidex-data exists, v2" in out.out
    assert "account: secret claidex-postgres holds DATABASE_URL" in out.out
    stamp = build_stamp()
    deployed = (
        f"deployed with claidex {stamp['version']} (lock {stamp['lock']}, code {stamp['code']}), "
        "as this client"
    )
    assert deployed in out.out
    assert out.out.splitlines()[-1] == "ok" and out.err == ""


def test_check_names_every_problem_and_fails(
    standin: StandIn, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAIDEX_MODAL_POSTGRES_KEYS", "PGHOST,PGDATABASE")
    monkeypatch.setenv("CLAIDEX_GRAPH_MODE", "neo4j-live")
    monkeypatch.setenv("CLAIDEX_MODAL_BATCH_SIZE", "100")  # 5x seed: too many inputs
    old = {"version": "0.0.9", "lock": "0123456789ab", "code": "ba9876543210"}
    assert check_command(WorkspaceAccount(standin, 1, old)) == 1
    out = capsys.readouterr()
    problems = [line for line in out.err.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 5, problems
    joined = "\n".join(problems)
    assert "volume claidex-data is v1; burst mode needs a v2 volume: `modal volume rename" in joined
    assert "secret claidex-postgres: missing or lacks PGHOST, PGDATABASE" in joined
    assert "secret claidex-neo4j: missing or lacks NEO4J_URI" in joined
    assert "is deployed with claidex 0.0.9 (lock 0123456789ab, code ba9876543210)" in joined
    assert "5x seed: score_batch: 89710 inputs > 25000 per function" in joined
    assert out.out.splitlines()[-1] == "5 problem(s)"
    assert check_command(WorkspaceAccount(standin, None, None)) == 1
    err = capsys.readouterr().err
    assert "volume claidex-data does not exist" in err and "is not deployed" in err


def test_a_deployed_apps_build_info_is_the_stamp_baked_into_its_image(standin: StandIn) -> None:
    """build_info runs in a container of the App's image: it answers the claidex version and
    lock digest the deploying client computed (IMAGE_ENV), which `check` compares."""
    from tests.modal_standin import StandInFunction

    with standin.run():
        answer = StandInFunction(standin, "build_info", None).remote()
    assert answer == build_stamp()
    assert answer["lock"] != "unknown" and len(answer["lock"]) == 12
    assert answer["code"] != "unknown" and len(answer["code"]) == 12


class UnreachableAccount(WorkspaceAccount):
    """Modal down (or the token refused): every question raises, as the client does."""

    def volume_version(self, name: str) -> int | None:
        from modal.exception import ConnectionError as ModalConnectionError

        raise ModalConnectionError("Deadline exceeded\nmore text")

    def secret_problem(self, name: str, keys: tuple[str, ...]) -> str | None:
        from modal.exception import AuthError

        raise AuthError("Token ID is malformed")


def test_check_reports_an_unreachable_account_in_lines_and_an_old_deployment(
    standin: StandIn, capsys: pytest.CaptureFixture
) -> None:
    """Each account question that fails is a `problem:` line, the others are still asked,
    nothing is a traceback; an app deployed before build_info existed says so."""
    assert check_command(UnreachableAccount(standin, 2, {})) == 1
    out = capsys.readouterr()
    problems = out.err.strip().splitlines()
    assert problems == [
        "problem: volume: ConnectionError: Deadline exceeded",
        "problem: secrets: AuthError: Token ID is malformed",
        "problem: app claidex-burst is deployed without build_info (an older claidex): "
        "redeploy with `modal deploy -m modal_burst.app`",
    ]
    assert "Traceback" not in out.out + out.err
    assert out.out.splitlines()[-1] == "3 problem(s)"
