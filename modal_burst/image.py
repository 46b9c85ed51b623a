"""The Modal image: exactly the container lock's packages, nothing resolved at build time.

The lock (claidex/locks/container.txt, made by ops/lock.sh with `uv pip compile`: every
transitive version exact, with hashes) ships inside the package, so a wheel install deploys
the same image as a checkout. A missing lock must fail the deploy: `Image.uv_pip_install()`
with neither packages nor requirements returns the image unchanged (modal/_image.py::
_Image.uv_pip_install), which deploys fine and then fails every container on `import polars`.
The uv that installs it is the dev lock's (`uv_version=None` would copy
ghcr.io/astral-sh/uv:latest), so the image is the same from week to week.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

import modal

from scoring.errors import ClaidexError

PYTHON_VERSION = "3.11"  # the version the locks are compiled for (ops/lock.sh)
LOCAL_SOURCES = ("scoring", "modal_burst")  # all the code containers import
LOCKS_PACKAGE = "claidex"  # the locks are its package data, claidex/locks/
CONTAINER_LOCK = "container.txt"
DEV_LOCK = "dev.txt"  # pins uv
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


class LockError(ClaidexError):
    """A lock the image needs is missing or unreadable: a deploy would build a wrong image."""


def normalised(name: str) -> str:
    """`Typing_Extensions` -> `typing-extensions`, as pip and uv compare names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locks_dir() -> Path:
    """claidex/locks/ wherever the package is installed (found without importing it)."""
    spec = importlib.util.find_spec(LOCKS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = f"the dependency locks are missing: package {LOCKS_PACKAGE!r} is not installed"
        raise LockError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / "locks"


def container_lock() -> Path:
    """The lock the Modal image installs: the closure of what containers import."""
    return locks_dir() / CONTAINER_LOCK


def locked_packages(path: Path) -> dict[str, str]:
    """Normalised name -> exact version, for every package of a `uv pip compile` lock."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        msg = (
            f"{path}: the dependency lock is missing (in a checkout `bash ops/lock.sh` writes it; "
            "an installed claidex must be a wheel built with it)"
        )
        raise LockError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read the dependency lock: {getattr(exc, 'strerror', None) or exc}"
        raise LockError(msg) from None
    packages: dict[str, str] = {}
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry or entry.startswith("--hash="):
            continue
        match = PIN.match(entry)
        if match is None:
            msg = f"{path}: not a dependency lock: {entry!r} is not an exact pin"
            raise LockError(msg)
        packages[normalised(match[1])] = match[2]
    if not packages:
        msg = f"{path}: the dependency lock lists no package"
        raise LockError(msg)
    return packages


def uv_version() -> str:
    """The uv the dev lock pins: the one that compiled the locks installs the image too."""
    path = locks_dir() / DEV_LOCK
    version = locked_packages(path).get("uv")
    if version is None:
        msg = f"{path}: the dev lock pins no uv (pyproject.toml's dev extra must)"
        raise LockError(msg)
    return version


def container_image(env: Mapping[str, str]) -> modal.Image:
    """The image every function runs in. Defined locally (`modal deploy`, `app.run()`), it
    needs the lock and raises LockError without one; inside a container the image is built
    already and the code there has no lock beside it (`add_local_python_source` ships only
    `.py` files), so none is read."""
    image = modal.Image.debian_slim(python_version=PYTHON_VERSION)
    if modal.is_local():
        lock = container_lock()
        locked_packages(lock)  # readable and a lock, now rather than at build time
        image = image.uv_pip_install(
            requirements=[str(lock)],
            uv_version=uv_version(),
            extra_options="--require-hashes",  # a package missing from the lock fails the build
        )
    return image.env(dict(env)).add_local_python_source(*LOCAL_SOURCES)


def package_version() -> str:
    """The installed claidex's version (a wheel or an editable install); "unknown" else."""
    import importlib.metadata

    try:
        return importlib.metadata.version("claidex")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_stamp() -> dict[str, str]:
    """This client's claidex version and container lock digest: baked into the image's
    environment at deploy, so `check` can tell whether the deployed app is this build."""
    import hashlib

    version = package_version()
    lock = container_lock()
    locked_packages(lock)  # a missing or unreadable lock: LockError, one line
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    return {"version": version, "lock": digest, "code": code_digest()}


def code_digest() -> str:
    """The `.py` files containers get (`LOCAL_SOURCES`), by path and content: a checkout
    stays at one version across commits, so the version alone cannot tell two builds apart."""
    import hashlib

    digest = hashlib.sha256()
    for package in LOCAL_SOURCES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
