"""A wheel install deploys an image with the whole locked closure; without the lock, one line.

The wheel is installed with `pip install --no-deps --target DIR` and imported outside any
checkout (`python -S`, PYTHONPATH=DIR:<the venv's site-packages>, so the editable install's
.pth never puts the checkout on the path). The image is read with modal's own Dockerfile
functions (tests/modal_image.py): the commands and context files a deploy would send.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from modal_burst.image import locked_packages

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scoring", "workers", "modal_burst", "claidex")
CHECKOUT_LOCK = ROOT / "claidex" / "locks" / "container.txt"


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel (from a copy: setuptools builds in the source tree) and
    installed into a bare directory."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = work / "wheels"
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels]
    subprocess.run([*build, source], check=True, timeout=120)
    (wheel,) = wheels.glob("claidex-*.whl")
    target = work / "site"
    install = [*pip, "install", "--no-deps", "--no-index", "--no-compile", "--target", target]
    subprocess.run([*install, wheel], check=True, timeout=120)
    return target


def outside_checkout(
    site: Path, tmp_path: Path, *args: str, token: bool = True
) -> subprocess.CompletedProcess:
    """`python -S ARGS` with the installed wheel first on the path, in an empty directory,
    with no Modal credentials file (a made-up token unless `token` is False) and none of the
    caller's CLAIDEX_ settings."""
    venv_site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": f"{site}:{venv_site}",
    }
    if token:
        env |= {"MODAL_TOKEN_ID": "ak-not-a-token", "MODAL_TOKEN_SECRET": "as-not-a-token"}
    return subprocess.run(
        [sys.executable, "-S", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_wheel_install_deploys_an_image_with_the_whole_closure(
    wheel_install: Path, tmp_path: Path
) -> None:
    reader = (ROOT / "tests" / "modal_image.py").read_text()
    result = outside_checkout(wheel_install, tmp_path, "-c", reader, "modal_burst.app")
    assert result.returncode == 0, result.stderr
    image = json.loads(result.stdout)
    assert Path(image["file"]).is_relative_to(wheel_install)  # the wheel's app, not the checkout's
    commands = [c for layer in image["layers"] for c in layer["commands"]]
    (sent,) = [f for layer in image["layers"] for f in layer["context_files"].values()]
    assert Path(sent) == wheel_install / "claidex" / "locks" / "container.txt"
    locked = locked_packages(Path(sent))
    assert locked == locked_packages(CHECKOUT_LOCK)  # every locked package at its version
    assert {"polars", "polars-runtime-32", "pyarrow", "psycopg-binary", "pydantic-core"} <= set(
        locked
    )
    uv = locked_packages(wheel_install / "claidex" / "locks" / "dev.txt")["uv"]
    assert f"COPY --from=ghcr.io/astral-sh/uv:{uv} /uv /.uv/uv" in commands
    assert not [c for c in commands if "uv:latest" in c]
    (install,) = [c for c in commands if "uv pip install" in c]
    assert install.endswith("--require-hashes --requirements /.uv/0/container.txt")


def test_check_runs_from_a_wheel_without_credentials(wheel_install: Path, tmp_path: Path) -> None:
    """`check` from a non-editable install, outside any checkout, with no credentials: it
    prints the wheel's whole locked closure, names and limits, says the account was not
    checked, and exits 0."""
    result = outside_checkout(wheel_install, tmp_path, "-m", "modal_burst", "check", token=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    lock = wheel_install / "claidex" / "locks" / "container.txt"
    locked = locked_packages(lock)
    assert lines[1].startswith("image: debian_slim, Python 3.11, uv ")
    assert f"{len(locked)} locked packages from {lock} (build " in lines[1]
    assert lines[2].split() == [f"{name}=={version}" for name, version in sorted(locked.items())]
    assert "secret claidex-postgres: must hold DATABASE_URL (" in result.stdout
    assert "account: not checked (no Modal credentials: run `modal token new`" in result.stdout
    assert lines[-1] == "ok"


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "modal_burst", "full", "--max-batches", "1", "--no-publish"],
        ["-m", "modal", "deploy", "-m", "modal_burst.app"],
    ],
)
def test_a_wheel_without_its_lock_fails_with_one_line(
    wheel_install: Path, tmp_path: Path, command: list[str]
) -> None:
    broken = tmp_path / "site"
    shutil.copytree(wheel_install, broken, symlinks=True)
    lock = broken / "claidex" / "locks" / "container.txt"
    lock.unlink()
    result = outside_checkout(broken, tmp_path, *command)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {lock}: the dependency lock is missing (in a checkout `bash ops/lock.sh` "
        "writes it; an installed claidex must be a wheel built with it)"
    ]


IMAGE_PROBE_APP = """
import importlib, importlib.metadata
from types import SimpleNamespace
import modal

CFG = SimpleNamespace(modal_volume="probe")
LOCAL_SOURCES = ("imageprobe",)
app = modal.App("imageprobe")
image = modal.Image.debian_slim(python_version="3.11").uv_pip_install(
    requirements=[{lock!r}], uv_version={uv!r}
)

def can_import(names):
    found = {{}}
    for name in names:
        try:
            importlib.import_module(name)
            found[name] = True
        except ModuleNotFoundError:
            found[name] = False
    return found

@app.function(image=image)
def imports(names: list[str]) -> dict[str, bool]:
    return can_import(names)

@app.function()
def imports_bare(names: list[str]) -> dict[str, bool]:  # the App's default image
    return can_import(names)

@app.function(image=image)
def distributions() -> list[str]:
    return sorted(d.metadata["Name"] for d in importlib.metadata.distributions())

FUNCTIONS = {{"imports": imports, "imports_bare": imports_bare, "distributions": distributions}}
"""
DEV_ONLY = ["kombu", "billiard", "tornado", "celery", "redis", "flower"]
DEV_ONLY += ["psutil", "pytest", "yaml", "playwright", "jpype"]


def test_standin_containers_hold_exactly_the_images_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container lock's distributions, Modal's client and its dependencies, the base
    image's package tools; nothing else of the dev venv, so a stray import fails here."""
    import importlib
    import importlib.metadata

    from modal_burst.image import normalised
    from tests.modal_image import builder_version
    from tests.modal_standin import StandIn

    uv = locked_packages(ROOT / "claidex" / "locks" / "dev.txt")["uv"]
    (tmp_path / "imageprobe").mkdir()
    (tmp_path / "imageprobe" / "__init__.py").write_text("")
    source = IMAGE_PROBE_APP.format(lock=str(CHECKOUT_LOCK), uv=uv)
    (tmp_path / "imageprobe" / "app.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = importlib.import_module("imageprobe.app")
    locked = locked_packages(CHECKOUT_LOCK)
    client = Path(importlib.metadata.distribution("modal").locate_file("modal/builder"))
    client_pins = (client / f"{builder_version()}.txt").read_text().split()
    tools = {"pip", "wheel", "uv"}  # debian_slim's `pip install --upgrade pip wheel uv`
    installed = {normalised(d.metadata["Name"]) for d in importlib.metadata.distributions()}
    expected = set(locked) | {normalised(p.split("==")[0]) for p in client_pins if "==" in p}
    expected |= tools & installed
    with StandIn(probe, tmp_path / "volume").run() as remote:
        found = remote.functions["imports"].remote(["polars", "matplotlib", "modal", *DEV_ONLY])
        bare = remote.functions["imports_bare"].remote(["polars", "modal", "aiohttp", "kombu"])
        dists = remote.functions["distributions"].remote()
    assert found == {"polars": True, "matplotlib": True, "modal": True} | dict.fromkeys(
        DEV_ONLY, False
    )
    assert bare == {"polars": False, "modal": True, "aiohttp": True, "kombu": False}
    assert {normalised(d) for d in dists} == expected  # modal's dist-info is not mounted
    assert len(dists) == len(expected)
    for name in ("imageprobe.app", "imageprobe"):
        monkeypatch.delitem(sys.modules, name)
