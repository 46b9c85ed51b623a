"""Issue 26, defects 2-5 at the command lines: every refusal is one `error:` line with exit
2 naming the option, the variable, the file or the run; a refused run leaves a failed
ledger; nothing that is not a run is reported as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from claidex.dev.sample import generate
from tests.builders import claidex_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile-commands")
    generate(directory, providers=200, seed=5)
    return directory


def workers_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def one_error_line(result: subprocess.CompletedProcess[str], *wanted: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in wanted:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("args", "env", "wanted"),
    [
        (["--shards", "-1"], {}, "--shards / CLAIDEX_SHARDS"),
        (["--shards", "4097"], {}, "less than or equal to 4096"),
        (["--batch-size", "0"], {}, "--batch-size / CLAIDEX_BATCH_SIZE"),
        ([], {"CLAIDEX_MAX_AMOUNT": "inf"}, "CLAIDEX_MAX_AMOUNT: Input should be a finite number"),
        ([], {"CLAIDEX_MAX_AMOUNT": "nan"}, "CLAIDEX_MAX_AMOUNT"),
        ([], {"CLAIDEX_MAX_AMOUNT": "1e30"}, "exact sums of many rows could overflow"),
        ([], {"CLAIDEX_MAX_VALID_YEAR": "3000000000"}, "CLAIDEX_MAX_VALID_YEAR"),
        ([], {"CLAIDEX_MIN_VALID_YEAR": "2200"}, "is above CLAIDEX_MAX_VALID_YEAR"),
    ],
)
def test_out_of_range_settings_are_one_line_and_leave_no_run(
    small_dataset: Path, tmp_path: Path, args: list[str], env: dict[str, str], wanted: str
) -> None:
    run = tmp_path / "run"
    result = claidex_cli("run", "--data", str(small_dataset), "--run-dir", str(run), "--quiet",
                         *args, env=env)  # fmt: skip
    one_error_line(result, wanted)
    assert not run.exists()


def test_a_bad_variable_stops_every_command_line_in_one_line(tmp_path: Path) -> None:
    env = {"CLAIDEX_BATCH_SIZE": "0", "CLAIDEX_RUN_ROOT": str(tmp_path)}
    one_error_line(workers_cli("status", env=env), "CLAIDEX_BATCH_SIZE")
    one_error_line(claidex_cli("status", "x", env=env), "CLAIDEX_BATCH_SIZE")


def test_a_layout_refused_before_any_row_leaves_a_failed_ledger(
    small_dataset: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    (data / "payments_combined").mkdir()  # both the file and an (empty) parts directory
    run = tmp_path / "run"
    result = claidex_cli("run", "--data", str(data), "--run-dir", str(run), "--quiet")
    one_error_line(result, "keep one form of the payments_combined table")
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["status"] == "failed" and "keep one form" in ledger["error"]
    status = claidex_cli("status", str(run), "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["status"] == "failed"


def test_status_and_resume_refuse_what_is_not_a_run(small_dataset: Path, tmp_path: Path) -> None:
    env = {"CLAIDEX_RUN_ROOT": str(tmp_path / "runs")}
    (tmp_path / "runs").mkdir()
    for command in ("status", "resume"):
        one_error_line(claidex_cli(command, str(small_dataset), env=env), "is not a run directory")
        one_error_line(claidex_cli(command, "../../../etc", env=env), "is not a run directory")
        one_error_line(claidex_cli(command, "nosuchrun", env=env), "no run directory 'nosuchrun'")
    one_error_line(workers_cli("status", "nosuchrun", env=env), "no run nosuchrun under")
    one_error_line(workers_cli("status", "../../../etc", env=env), "is not a plain name")


def test_a_newline_in_a_directory_name_stays_one_line(small_dataset: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "bad\nname"
    shutil.copytree(small_dataset, data)
    (data / "payments_combined.parquet").unlink()
    (data / "payments_combined").mkdir()  # an empty parts directory: refused, naming it
    result = claidex_cli("run", "--data", str(data), "--run-dir", str(tmp_path / "r"), "--quiet")
    line = one_error_line(result, "holds no .parquet parts")
    assert "bad\\nname" in line


def test_a_variable_that_does_not_parse_is_one_line(tmp_path: Path) -> None:
    env = {"CLAIDEX_COMPONENT_WEIGHTS": "notjson", "CLAIDEX_RUN_ROOT": str(tmp_path)}
    one_error_line(claidex_cli("status", "x", env=env), "CLAIDEX_COMPONENT_WEIGHTS")
    one_error_line(workers_cli("status", env=env), "CLAIDEX_COMPONENT_WEIGHTS")


def test_a_run_refused_before_its_plan_is_not_resumed_but_named(
    small_dataset: Path, tmp_path: Path
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    (data / "exclusions").mkdir()  # both forms of the exclusions table
    run = tmp_path / "run"
    one_error_line(claidex_cli("run", "--data", str(data), "--run-dir", str(run), "--quiet"))
    one_error_line(claidex_cli("resume", str(run), "--quiet"), "failed before its plan was written")
