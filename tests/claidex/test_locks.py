"""The dependency locks (claidex/locks/, `bash ops/lock.sh`) agree with each other and with
pyproject.toml, so a pin changed, added or dropped without relocking fails the suite."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from modal_burst.image import LockError, locked_packages, normalised

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "claidex" / "locks"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SPEC = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(?:==(\S+))?")


def specs(lines: list[str]) -> dict[str, tuple[str, str | None]]:
    """Normalised name -> (extras, pinned version) of requirement lines."""
    out = {}
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            match = SPEC.fullmatch(entry)
            assert match, entry
            out[normalised(match[1])] = (match[2] or "", match[3])
    return out


RUNTIME = specs(PROJECT["dependencies"])
DEV_EXTRA = specs(PROJECT["optional-dependencies"]["dev"])
CONTAINER_IN = specs((LOCKS / "container.in").read_text().splitlines())


def roots(lock: Path) -> dict[str, set[str]]:
    """Package -> what uv says required it (`# via ...`): another package or an input file."""
    via: dict[str, set[str]] = {}
    current = None
    listing = False
    for line in lock.read_text().splitlines():
        if not line.startswith((" ", "#")) and line.strip():
            current = normalised(line.split("==", 1)[0])
            via[current] = set()
            listing = False
        elif current and line.strip() == "# via":
            listing = True
        elif current and line.strip().startswith("# via "):
            via[current].add(line.strip().removeprefix("# via "))
        elif current and listing and line.strip().startswith("#   "):
            via[current].add(line.strip().removeprefix("#   "))
    return via


@pytest.mark.parametrize("name", ["runtime.txt", "dev.txt", "container.txt"])
def test_every_lock_pins_every_package_exactly_with_hashes(name: str) -> None:
    text = (LOCKS / name).read_text()
    assert text.splitlines()[1].strip() == "#    bash ops/lock.sh"  # its one generator
    packages = locked_packages(LOCKS / name)
    blocks = re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2])
    assert len(blocks) == len(packages)
    for block in blocks:  # every `name==version` carries its hashes
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_locks_agree_with_each_other() -> None:
    runtime, dev = locked_packages(LOCKS / "runtime.txt"), locked_packages(LOCKS / "dev.txt")
    container = locked_packages(LOCKS / "container.txt")
    assert runtime.items() <= dev.items()  # one version per package in all three
    assert container.items() <= runtime.items()
    assert not set(container) & {"celery", "kombu", "redis", "flower", "modal", "psutil"}


def test_the_locks_agree_with_pyproject() -> None:
    """Top-level pins at their version, and exactly those as the locks' roots."""
    runtime, dev = locked_packages(LOCKS / "runtime.txt"), locked_packages(LOCKS / "dev.txt")
    for name, (_, version) in RUNTIME.items():
        assert version is not None, f"pyproject.toml: {name} is not pinned"
        assert runtime[name] == dev[name] == version, name
    for name, (_, version) in DEV_EXTRA.items():
        assert version is not None and dev[name] == version, name
    project = "claidex (pyproject.toml)"
    assert {n for n, v in roots(LOCKS / "runtime.txt").items() if project in v} == set(RUNTIME)
    dev_roots = {n for n, v in roots(LOCKS / "dev.txt").items() if project in v}
    assert dev_roots == set(RUNTIME) | set(DEV_EXTRA)


def test_the_container_lock_is_the_closure_of_container_in() -> None:
    for name, (extras, version) in CONTAINER_IN.items():
        assert version is None, f"container.in: {name}: versions come from runtime.txt"
        assert RUNTIME[name][0] == extras, f"container.in: {name}: pyproject.toml's extras"
    via = roots(LOCKS / "container.txt")
    assert {n for n, v in via.items() if "-r claidex/locks/container.in" in v} == set(CONTAINER_IN)
    assert {"polars", "psycopg-binary", "neo4j", "pydantic-settings", "matplotlib"} <= set(via)


def test_a_broken_lock_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LockError, match=r"container.txt: the dependency lock is missing"):
        locked_packages(tmp_path / "container.txt")
    (tmp_path / "loose.txt").write_text("polars>=2\n")
    with pytest.raises(LockError, match=r"'polars>=2' is not an exact pin"):
        locked_packages(tmp_path / "loose.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(LockError, match="lists no package"):
        locked_packages(tmp_path / "empty.txt")
    with pytest.raises(LockError, match="cannot read"):
        locked_packages(tmp_path)


def test_setup_and_docker_install_from_the_locks() -> None:
    """ops/setup.sh and the Dockerfile resolve nothing: each installs a lock, hashes required,
    then the project without dependencies (the Modal image: tests/modal_burst/test_image_lock)."""
    setup = (ROOT / "ops" / "setup.sh").read_text()
    assert "LOCK=$ROOT/claidex/locks/dev.txt" in setup
    assert (
        '--require-hashes -r "$LOCK"' in setup
        and '--no-deps --no-build-isolation -e "$ROOT"' in setup
    )
    assert 'stamp="$VENV/.installed-$(cat "$LOCK"' in setup  # a new lock reinstalls
    docker = (ROOT / "ops" / "Dockerfile").read_text()
    assert "COPY claidex/locks/runtime.txt /tmp/runtime.txt" in docker
    assert "--require-hashes -r /tmp/runtime.txt" in docker and "--no-deps ." in docker
    assert "[dev]" not in setup and "pip install --no-cache-dir . " not in docker
