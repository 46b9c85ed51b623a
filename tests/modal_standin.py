"""A local stand-in for Modal, strict where the burst code depends on Modal's behaviour.

`StandIn(app_module, volume_root, secrets=...)` plays Modal for the App in `app_module`:
`with standin.run() as remote:` is `app.run()`, and `remote` is what the driver talks to
(`remote.functions[name]` with `.remote`, `.map`, `.with_options`; `remote.secret(name)`).
`DirectoryVolume` plays the client-side `modal.Volume` API over the committed directory.

Each behaviour below says what of modal 1.6.4 (.venv/lib/python3.11/site-packages/modal)
or of Modal's documentation it mirrors:

Secrets
- Looked up by name when the App runs, for every secret a function declares
  (`runner.py::_create_all_objects` loads each function's dependencies; `secret.py::
  _Secret.from_name` sends SecretGetOrCreate), and a missing one is
  `modal.exception.NotFoundError` (gRPC NOT_FOUND, `_grpc_client.py`). `run()` does so.
- A variant from `Function.with_options(secrets=...)` replaces the function's secrets and
  runs in its own container pool (`_functions.py::_Function.with_options` docstring,
  `_function_variants.py::_FunctionOptions.to_proto`: replace_secret_ids); its secrets are
  looked up when the variant is first used (`_make_function_variant`: hydrate_lazily, the
  options' secrets as deps). `remote.secret(name)` is `Secret.from_name(name).hydrate()`.
- A container's environment is the image's env plus its secrets' keys, never the
  caller's environment (`Function.local` docstring: only a local call sees "secrets
  available in the caller environment").

Containers and the volume (details in tests/modal_standin_container.py)
- Every container is its own process (`python -S` on the project's interpreter) with its
  own copy of the volume: writes are visible to other containers only after `commit()`,
  others' commits only after `reload()` or a `commit()` (which reloads,
  `volume.py::_Volume.commit`); last write wins per file (`volume.py::_Volume`). Both
  refuse while a file of the volume is open in the container ("there are open files
  preventing the operation", `_Volume.reload`).
- Background commits (`allow_background_commits=True`, the mount option Modal sets;
  Modal's volumes guide): a container that stops normally commits what it still holds,
  and `run()` fails with StandInForgottenCommitError when that final commit carried
  anything (on Modal it comes a scaledown window after the container's last input, after
  the next step read the volume) unless `allow_shutdown_commits`. `commit_interval`
  adds periodic commits (off by default: with them a forgotten commit works by timing).
  `background_commits=True` is the worst case: every reload commits first, and a
  container killed by a rule has all it wrote committed just before it dies.
- Warm containers serve inputs one after another (up to `max_containers` per pool, at most
  the function's own `max_containers`); containers stop when the App stops.
- A container's packages are exactly the image's (`image_site`), nothing else of the dev
  venv (a stray import fails here as it would on Modal):
  - what the image's build installs: each layer's Dockerfile commands as modal sends them
    (tests/modal_image.py), i.e. the container lock that `uv_pip_install(requirements=...)`
    copies in (`_image.py::_Image.uv_pip_install`), each locked version checked against
    the dev venv's (which provides the files), and the package tools the `debian_slim`
    base installs (`_image.py::_Image.debian_slim`: `pip install --upgrade` of
    `_base_image_config("package_tools", version)`, `builder/base-images.json`); the image
    builder version is the local config's, else modal's latest
    (`_image.py::_get_image_builder_version`). What the python:3.11-slim image ships
    besides (setuptools, say) is outside modal's source and left out: the strict side;
  - the client's dependencies, which Modal mounts at /__modal/deps for builder versions
    after 2024.10 (`_functions.py::_Function._from_local`: mount_client_dependencies;
    `mount.py::_create_single_client_dependency_mount` installs `builder/{version}.txt`);
  - the client itself: the folders of `mount.py::MODAL_PACKAGES` and synchronicity, without
    their dist-info (`mount.py::_create_client_mount`).
  The code is a copy of the `.py` files of the packages of `LOCAL_SOURCES`
  (`Image.add_local_python_source`, whose default `ignore=NON_PYTHON_FILES` drops
  everything else), with no pyproject.toml or lock beside it.

Failures (`_functions.py::_Invocation.run_function`, `parallel_map.py::_MapItemContext.
handle_get_outputs_response`, `retries.py::RetryManager`, guide "Failures and retries")
- An exception or a timeout (`FunctionTimeoutError`, `_utils/function_utils.py::
  _process_result`) counts against `modal.Retries.max_retries` ("User errors including
  timeouts are managed by the user specified retry policy"); the delay before retry n is
  what `RetryManager.get_delay_ms` computes (initial_delay * backoff_coefficient ** (n - 1),
  at least 1 s). Delays are recorded, and slept multiplied by `time_scale` (0: not slept).
  A function without `retries` fails at the first exception.
- A container that dies (on start-up or mid-input, e.g. out of memory) loses its input.
  Who retries it (the server's `sync_client_retries_enabled` is taken as set, as the
  stand-in always did: the client-side paths below are the client's own code):
  - `.remote` of a function with a retry policy of at least one retry: the client. The
    server reports the lost input as GENERIC_STATUS_INTERNAL_FAILURE and
    `_Invocation.run_function` retries it at once, without counting it against the policy
    and without end (`MAX_INTERNAL_FAILURE_COUNT` bounds only `_InputPlaneInvocation`);
  - `.remote` of a function without one (`run_function` then only awaits the single
    output, `not ctx.retry_policy or ctx.retry_policy.retries == 0`): Modal's server,
    as `server` says (below); an input the server fails reaches the caller as
    `InternalFailure` (`_process_result`);
  - `.map`: the client. A lost input counts against max_retries like any failure, retried
    with no delay (`handle_get_outputs_response`: "lost inputs will count towards the retry
    policy"); past max_retries (at once without `retries`) the caller gets InternalFailure.
- `server`, what Modal's server does with crashed containers (guide "Failures and retries",
  https://modal.com/docs/guide/retries, Container crashes; it gives no number for the
  failure rate):
  - "deployed": "container crashes will be retried indefinitely": the stand-in restarts the
    input on a new container and never returns to the caller; after `crash_loop_limit`
    crashes of one input (high: 25 by default) it raises StandInCrashLoopError into the
    caller, so the TEST fails where Modal would loop until the function's timeout. The
    same limit ends the client's endless retries of a `.remote` with a retry policy.
  - "ephemeral": "retried until a failure rate is exceeded, after which all pending inputs
    will be failed and the exception will be propagated to the caller". The stand-in's
    threshold, per function (a with_options variant is a function of its own) and App run:
    at least EPHEMERAL_MIN_CRASHES (3) crashes that make up at least EPHEMERAL_CRASH_RATE
    (half) of the inputs its containers ran. Low on purpose, at the default
    step_max_attempts: the server may well cut a crash loop before the run's own cap does,
    and the driver must say which step either way. From then on every pending input of the
    function (waiting for a container, or for a client-side retry) fails with
    INTERNAL_FAILURE without a container, recorded as "cut_off"; inputs already running in
    a healthy container finish.
- A `CrashRule` decides what a death is: `effect="oom"` (the container dies: a lost
  input), `"timeout"` (the container is killed at its timeout there: FunctionTimeoutError,
  counted as above, without waiting the timeout out), `"stop"` (the App stops there, as when
  the driver of an ephemeral app is interrupted: every container is killed at once and the
  caller gets KeyboardInterrupt; nothing ends its batches' records).
- The caller gets the function's own exception (pickled back, `_process_result`), or
  `RemoteError` when it cannot be pickled.
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import modal
from modal.exception import FunctionTimeoutError, InternalFailure, NotFoundError, RemoteError
from modal.mount import MODAL_PACKAGES
from modal.output import OutputManager
from modal.retries import RetryManager
from modal.volume import FileEntryType

from modal_burst.image import PIN, locked_packages, normalised
from tests.modal_image import builder_version, dockerfile_layers
from tests.modal_standin_container import receive, send, volume_lock

CONTAINER_SCRIPT = Path(__file__).with_name("modal_standin_container.py")
CRASH_LOOP_LIMIT = 25  # a safety limit: far above any cap our code sets
STARTUP_TIMEOUT = 60.0
SERVERS = ("deployed", "ephemeral")
EPHEMERAL_MIN_CRASHES = 3
EPHEMERAL_CRASH_RATE = 0.5


class StandInCrashLoopError(AssertionError):
    """An input kept killing its containers, and Modal would retry it forever (a deployed
    app's server, or the client for a `.remote` with a retry policy)."""


class StandInForgottenCommitError(AssertionError):
    """Only a container's shutdown commit made some of its writes visible."""


def declared_required_keys(secret: Any) -> list[str]:
    """The `required_keys` a `modal.Secret.from_name` handle was made with: they live only in
    its loader's closure, which sends them in SecretGetOrCreate (`secret.py::_Secret.from_name`
    `_load`), where "the server asserts these keys exist on the Secret"."""
    from modal._utils.async_utils import synchronizer

    load = synchronizer._translate_in(secret)._load
    cells = dict(zip(load.__code__.co_freevars, load.__closure__ or (), strict=True))
    return list(cells["required_keys"].cell_contents) if "required_keys" in cells else []


@dataclass(frozen=True)
class StandInSecret:
    name: str
    env: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class CrashRule:
    """Kill the container (exit 137, like an out-of-memory kill) when the function puts this
    file (a path inside the volume) in place; `times` None: every time. `after`: only once
    that file is in the container's view. `effect`: what the death is to Modal, "oom" (a
    lost input), "timeout" (the function's timeout ran out there) or "stop" (the App stops:
    its driver was interrupted)."""

    path: str
    times: int | None = None
    volume: str | None = None  # default: the App's volume
    after: str | None = None
    effect: str = "oom"

    def __post_init__(self) -> None:
        assert self.effect in ("oom", "timeout", "stop"), self.effect


@dataclass
class CallRecord:
    """What tests count, per function (shared by its with_options variants)."""

    remote_calls: list[tuple[Any, ...]] = field(default_factory=list)
    mapped: list[Any] = field(default_factory=list)
    attempts: list[tuple[Any, str]] = field(default_factory=list)  # (first arg, outcome)
    retry_delays_ms: list[float] = field(default_factory=list)
    secrets_seen: list[tuple[str, ...]] = field(default_factory=list)  # per attempt


CLIENT_MOUNT = (*MODAL_PACKAGES, "synchronicity")  # mount.py::_create_client_mount
INSTALL_OPTIONS_WITH_VALUE = ("--requirements", "-r")


def _site() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _installs(command: str, copied: dict[str, str]) -> dict[str, str | None]:
    """What one `RUN ... pip install ...` of an image layer installs: name -> exact version
    (None: whatever pip picks). Requirement files are read from the context files that the
    layer's COPY commands put where the command reads them."""
    words = command.replace("--python $(command -v python)", "").split()
    words = words[words.index("install") + 1 :]
    installs: dict[str, str | None] = {}
    while words:
        word = words.pop(0)
        if word in INSTALL_OPTIONS_WITH_VALUE:
            installs.update(locked_packages(Path(copied[words.pop(0)])))
        elif not word.startswith("-"):
            match = PIN.fullmatch(word) or re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)()", word)
            assert match, f"the stand-in cannot read this image's install of {word!r}: {command}"
            installs[normalised(match[1])] = match[2] or None
    return installs


def image_packages(image: Any, version: str | None = None) -> dict[str, str | None]:
    """The distributions an image's build installs (name -> exact version, None: any): each
    layer's `pip install`/`uv pip install`, as the Dockerfile commands modal sends say
    (tests/modal_image.py), requirement files included (`_image.py::_Image.uv_pip_install`
    copies each into the build context)."""
    version = version or builder_version()
    assert version > "2024.10", f"image builder {version}: the stand-in models 2025.06 and later"
    packages: dict[str, str | None] = {}
    for layer in dockerfile_layers(image, version):
        copied: dict[str, str] = {}
        for command in layer["commands"]:
            words = command.split()
            if words[0] == "COPY" and not words[1].startswith("--from="):
                copied[words[2]] = layer["context_files"][words[1]]
            elif words[0] == "RUN" and "pip install" in command:
                packages.update(_installs(command, copied))
    return packages


def client_packages(version: str | None = None) -> set[str]:
    """What Modal adds to every container of a builder version after 2024.10: the client's
    own dependencies, mounted at /__modal/deps (`_functions.py::_Function._from_local`:
    mount_client_dependencies; `mount.py::_create_single_client_dependency_mount` installs
    `builder/{version}.txt`). The client itself is mounted too (CLIENT_MOUNT)."""
    from packaging.requirements import Requirement

    version = version or builder_version()
    pins = Path(modal.__file__).with_name("builder") / f"{version}.txt"
    requirements = [Requirement(line) for line in pins.read_text().splitlines() if line.strip()]
    return {normalised(r.name) for r in requirements if r.marker is None or r.marker.evaluate()}


@functools.cache
def _client_mount() -> frozenset[str]:
    """`dist:package` for each package of the client mount: Modal mounts the package folders
    alone, without their dist-info (mount.py::_create_client_mount)."""
    dists = importlib.metadata.packages_distributions()
    return frozenset(
        f"{normalised(d)}:{package}" for package in CLIENT_MOUNT for d in dists[package]
    )


@functools.cache
def _owners() -> dict[tuple[str, ...], frozenset[str]]:
    """Every path of the project's site-packages (and each folder above it) -> who installed
    it: a distribution's name, or `dist:package` for a distribution of the client mount."""
    mounted = {token.split(":")[0] for token in _client_mount()}
    owners: dict[tuple[str, ...], set[str]] = {}
    for dist in importlib.metadata.distributions(path=[str(_site())]):
        name = normalised(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if parts[0] == "..":  # scripts, outside site-packages
                continue
            token = f"{name}:{parts[0]}" if name in mounted else name
            for depth in range(1, len(parts) + 1):
                owners.setdefault(parts[:depth], set()).add(token)
    return {path: frozenset(tokens) for path, tokens in owners.items()}


_IMAGE_SITES: dict[frozenset[str], Path] = {}


def image_site(packages: dict[str, str | None], version: str | None = None) -> Path:
    """site-packages as a container has it: the image's packages (at the versions it pins,
    checked against the project's interpreter, which provides them), the client's
    dependencies and the client itself (CLIENT_MOUNT), nothing else of the dev venv."""
    site = _site()
    for name, pinned in sorted(packages.items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if pinned is not None and installed != pinned:
            msg = f"the image pins {name}=={pinned}, .venv has {installed}: bash ops/setup.sh"
            raise AssertionError(msg)
    key = frozenset({*packages, *client_packages(version), *_client_mount()})
    if key in _IMAGE_SITES:
        return _IMAGE_SITES[key]
    owners = _owners()
    target = Path(tempfile.mkdtemp(prefix="standin-image-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)

    def place(path: tuple[str, ...]) -> None:
        """The whole entry when only allowed distributions own it, else its allowed part."""
        if owners[path] <= key:
            (target / Path(*path)).symlink_to(site / Path(*path))
        elif owners[path] & key:
            (target / Path(*path)).mkdir()
            for child in sorted((site / Path(*path)).iterdir()):
                if (*path, child.name) in owners:
                    place((*path, child.name))

    for entry in sorted(site.iterdir()):
        if (entry.name,) in owners:
            place((entry.name,))
    _IMAGE_SITES[key] = target
    return target


@dataclass
class Outcome:
    kind: str  # ok, error, timeout, crash; cut_off: failed by the server, no container
    value: Any = None
    detail: str = ""
    rule: int | None = None


class Container:
    """One container process of one pool."""

    def __init__(self, pool: Pool, number: int) -> None:
        self.pool = pool
        standin = pool.standin
        self.home = standin.workdir / "containers" / f"{pool.label}-{number}"
        self.home.mkdir(parents=True)
        mounts = {
            name: (str(standin.volumes[name]), str(self.home / "volume" / name))
            for name in pool.mounts.values()
        }
        crash = [
            {
                "id": i,
                "path": rule.path,
                "volume": rule.volume or standin.volume_name,
                "budget": standin.crash_budget(i),
                "after": rule.after,
            }
            for i, rule in enumerate(standin.crash)
        ]
        config = {
            "module": standin.app_module.__name__,
            "function": pool.name,
            "mounts": mounts,
            "crash": crash,
            "background_commits": standin.background_commits,
            "commit_interval": standin.commit_interval,
        }
        (self.home / "config.json").write_text(json.dumps(config))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([str(standin.code_dir), str(pool.site)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "MODAL_IS_REMOTE": "1",
            "MODAL_TASK_ID": f"ta-standin-{pool.label}-{number}",
            **getattr(standin.app_module, "IMAGE_ENV", {}),
            **pool.env,
        }
        for mount_path, name in pool.mounts.items():  # the mount point is the view
            for key, value in list(env.items()):
                if value == mount_path:
                    env[key] = mounts[name][1]
        self.log = (self.home / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-S", str(CONTAINER_SCRIPT), str(self.home / "config.json")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=standin.code_dir,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.requests: BinaryIO = self.process.stdin
        self.replies: BinaryIO = self.process.stdout

    def stderr_tail(self) -> str:
        self.log.flush()
        lines = (self.home / "stderr.log").read_text(errors="replace").strip().splitlines()
        return "\n".join(lines[-15:])

    def _read(self, deadline: float) -> Any:
        """The next reply; TimeoutError past the deadline, EOFError when the process died."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.replies], [], [], remaining)[0]:
            raise TimeoutError
        return receive(self.replies)

    def start(self) -> Outcome | None:
        """Wait until the App module is imported; an Outcome when the container died instead."""
        try:
            self._read(time.monotonic() + STARTUP_TIMEOUT)
        except (EOFError, TimeoutError):
            tail = self.stderr_tail()  # before stop() closes the log
            self.stop()
            return Outcome("crash", detail=f"container died on start-up:\n{tail}")
        return None

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> Outcome:
        rule = None
        try:
            send(self.requests, (args, kwargs))
            deadline = time.monotonic() + timeout
            reply = self._read(deadline)
            if reply[0] == "crashing":
                rule = reply[1]
                reply = self._read(deadline)
        except TimeoutError:  # Modal terminates the container at its timeout
            self.process.kill()
            self.process.wait()
            return Outcome("timeout", detail=f"timed out after {timeout} s")
        except (EOFError, BrokenPipeError):
            code = self.process.wait()
            return Outcome("crash", detail=f"exit code {code}:\n{self.stderr_tail()}", rule=rule)
        if reply[0] == "ok":
            return Outcome("ok", reply[1])
        if reply[0] == "unpicklable":
            return Outcome("error", RemoteError(reply[1]), detail=reply[2])
        return Outcome("error", reply[1], detail=reply[2])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.requests.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        report = self.home / "shutdown.json"
        if self.process.returncode == 0 and report.exists():  # stopped, not killed
            for volume, carried in json.loads(report.read_text()).items():
                if carried:
                    self.pool.standin.shutdown_commits.append((self.pool.label, volume, carried))
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


class Pool:
    """The containers of one function (or one with_options variant)."""

    def __init__(self, standin: StandIn, name: str, env: dict[str, str], label: str) -> None:
        self.standin = standin
        self.name = name
        self.env = env
        self.label = label
        function = getattr(standin.app_module, name)
        info = function.info()
        self.timeout = float(info.timeout)
        self.mounts = {path: mount.name for path, mount in info.volumes.items()}
        self.site = standin.site_of(name)
        options = getattr(standin.app_module, "OPTIONS", {}).get(name, {})
        own_limit = options.get("max_containers") or standin.max_containers
        self.max_containers = min(standin.max_containers, own_limit)
        self.retries: modal.Retries | None = options.get("retries")
        if self.retries is not None:
            assert info.max_retries == self.retries.max_retries
        self.idle: list[Container] = []
        self.containers: set[Container] = set()  # idle or busy, until stopped
        self.started = 0
        self.live = 0
        self.changed = threading.Condition()
        self.ran = 0  # inputs its containers ran (to an output, a timeout or a crash)
        self.crashes = 0
        self.cut_off = False  # ephemeral: past the failure rate, pending inputs fail

    def _cut(self) -> Outcome:
        return Outcome("cut_off", detail=f"{self.name}: a pending input failed by the server")

    def acquire(self) -> Container | Outcome:
        """A container for one input, or, once the server cut the function off, its failure."""
        with self.changed:
            while not self.cut_off and not self.idle and self.live >= self.max_containers:
                self.changed.wait()
            if self.cut_off:
                return self._cut()
            if self.idle:
                return self.idle.pop()
            self.live += 1
            number = self.started = self.started + 1
        container = Container(self, number)
        with self.changed:
            self.containers.add(container)
        failed = container.start()
        if failed is not None:
            self.release(container, alive=False)
            return failed
        return container

    def ran_input(self, kind: str) -> bool:
        """Count an input a container ran; True when the server now fails every pending
        input (the ephemeral failure rate, see the module docstring)."""
        with self.changed:
            self.ran += 1
            self.crashes += kind == "crash"
            over = self.crashes >= EPHEMERAL_MIN_CRASHES and (
                self.crashes >= EPHEMERAL_CRASH_RATE * self.ran
            )
            if self.standin.server == "ephemeral" and over and not self.cut_off:
                self.cut_off = True
                self.changed.notify_all()
            return self.cut_off

    def release(self, container: Container, *, alive: bool) -> None:
        if not alive:
            container.stop()
        with self.changed:
            if alive:
                self.idle.append(container)
            else:
                self.live -= 1
                self.containers.discard(container)
            self.changed.notify()

    def kill(self) -> None:
        """The App stops now: every container of the pool dies where it is."""
        with self.changed:
            for container in self.containers:
                if container.process.poll() is None:
                    container.process.kill()
            self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            for container in self.idle:
                container.stop()
                self.containers.discard(container)
            self.idle.clear()


class StandInFunction:
    """A modal.Function of the App (or a with_options variant of one)."""

    def __init__(self, standin: StandIn, name: str, secrets: tuple[Any, ...] | None) -> None:
        self.standin = standin
        self.name = name
        self.secrets = secrets  # None: the ones the function declares
        self.record = standin.records.setdefault(name, CallRecord())

    @property
    def remote_calls(self) -> list[tuple[Any, ...]]:
        return self.record.remote_calls

    @property
    def mapped(self) -> list[Any]:
        return self.record.mapped

    def with_options(self, *, secrets: Iterable[Any]) -> StandInFunction:
        return StandInFunction(self.standin, self.name, tuple(secrets))

    def _resolved(self) -> list[StandInSecret]:
        declared = self.secrets
        if declared is None:
            declared = tuple(getattr(self.standin.app_module, self.name)._spec_.secrets)
        return [
            s
            if isinstance(s, StandInSecret)
            else self.standin.lookup(s.name, declared_required_keys(s))
            for s in declared
        ]

    def hydrate(self) -> StandInFunction:
        self._resolved()
        return self

    def _pool(self) -> tuple[Pool, tuple[str, ...]]:
        secrets = self._resolved()
        env: dict[str, str] = {}
        for secret in secrets:
            env.update(secret.env)
        names = tuple(s.name for s in secrets)
        return self.standin.pool(self.name, names, env), names

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, mapped: bool) -> Any:
        """One input until the caller gets its output or error (module docstring, Failures)."""
        pool, names = self._pool()
        manager = RetryManager(pool.retries._to_proto()) if pool.retries else None
        # `_Invocation.run_function` retries a `.remote` only under a policy of 1+ retries;
        # parallel_map retries every `.map` input by its policy (none: no retry)
        client_retries = mapped or (pool.retries is not None and pool.retries.max_retries > 0)
        restarts = 0  # crashes of this input retried without counting
        while True:
            self.standin.check_running()
            got = pool.acquire()
            if isinstance(got, Outcome):  # died on start-up, or cut off by the server
                outcome = got
            else:
                outcome = got.call(args, kwargs, pool.timeout)
                pool.release(got, alive=outcome.kind in ("ok", "error"))
            self.standin.check_running()  # killed because another call stopped the App
            effect = None if outcome.rule is None else self.standin.crash[outcome.rule].effect
            if outcome.rule is not None:
                self.standin.crashed(outcome.rule)
            if effect == "timeout":
                outcome = Outcome("timeout", detail="timed out (CrashRule)")
            kind = "stop" if effect == "stop" else outcome.kind
            self.record.attempts.append((args[0] if args else None, kind))
            self.record.secrets_seen.append(names)
            if effect == "stop":
                self.standin.stop_app()
                self.standin.check_running()
            cut_off = pool.cut_off if kind == "cut_off" else pool.ran_input(outcome.kind)
            if outcome.kind == "ok":
                return outcome.value
            if outcome.kind in ("crash", "cut_off"):
                server_retries = not client_retries and not cut_off  # deployed: never cut off
                if server_retries or (client_retries and not mapped):
                    restarts += 1
                    self._crash_loop(args, restarts, outcome)
                    continue  # rescheduled on a new container, not counted as a retry
                if not client_retries:  # the server failed the input
                    msg = f"input lost, the function's failure rate exceeded: {outcome.detail}"
                    raise InternalFailure(msg)
            delay = manager.get_delay_ms() if manager else None
            if delay is None:
                if outcome.kind == "timeout":
                    raise FunctionTimeoutError(outcome.detail)
                if outcome.kind in ("crash", "cut_off"):
                    raise InternalFailure(f"input lost: {outcome.detail}")
                raise outcome.value
            if outcome.kind in ("crash", "cut_off"):
                delay = 0  # .map: a lost input counts against the policy, without delay
            self.record.retry_delays_ms.append(delay)
            time.sleep(delay / 1000 * self.standin.time_scale)

    def _crash_loop(self, args: tuple[Any, ...], restarts: int, last: Outcome) -> None:
        """The safety limit on retries Modal would make without end: the test fails."""
        if restarts >= self.standin.crash_loop_limit:
            msg = (
                f"stand-in: {self.name}{args} killed its container {restarts} times; "
                f"Modal would retry it forever. Last: {last.detail}"
            )
            raise StandInCrashLoopError(msg)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.record.remote_calls.append(args)
        return self._call(args, kwargs, mapped=False)

    def map(
        self,
        inputs: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        assert order_outputs, "the driver pairs results with batch indexes by position"
        items = list(inputs)
        self.record.mapped.extend(items)
        pool, _ = self._pool()
        # each map draws its own bar in Modal's display (`_functions.py::_Function._map`:
        # OutputManager.get().function_progress_callback(name, total=None), then
        # (outputs completed, inputs created) per output, `parallel_map.py::_map_invocation`)
        counts = OutputManager.get().function_progress_callback(self.name, total=None)
        with ThreadPoolExecutor(max_workers=pool.max_containers) as workers:
            futures = [
                workers.submit(self._call, (item,), kwargs or {}, mapped=True) for item in items
            ]
            for done, future in enumerate(futures, start=1):
                counts(done, len(items))
                try:
                    yield future.result()
                except StandInCrashLoopError:
                    raise
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    yield exc


class StandInRemote:
    """What the driver talks to (modal_burst.driver.Remote)."""

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.functions = {
            name: StandInFunction(standin, name, None) for name in standin.app_module.FUNCTIONS
        }

    def secret(self, name: str, required_keys: tuple[str, ...] = ()) -> StandInSecret:
        return self.standin.lookup(name, required_keys)


class StandIn:
    """Modal for one App module, its volume directory and a workspace of secrets."""

    def __init__(
        self,
        app_module: ModuleType,
        volume_root: Path,
        *,
        secrets: dict[str, dict[str, str]] | None = None,
        crash: Iterable[CrashRule] = (),
        time_scale: float = 0.0,
        max_containers: int = 2,
        crash_loop_limit: int = CRASH_LOOP_LIMIT,
        background_commits: bool = False,
        commit_interval: float | None = None,
        allow_shutdown_commits: bool = False,
        server: str = "deployed",
    ) -> None:
        assert server in SERVERS, server
        self.server = server  # what Modal's server does with crashes (module docstring)
        self.app_module = app_module
        self.volume_name = app_module.CFG.modal_volume
        self.volumes = {self.volume_name: volume_root}
        self.workspace = dict(secrets or {})
        self.crash = list(crash)
        self.crash_count = [0] * len(self.crash)
        self.time_scale = time_scale
        self.max_containers = max_containers
        self.crash_loop_limit = crash_loop_limit
        self.background_commits = background_commits
        self.commit_interval = commit_interval
        self.allow_shutdown_commits = allow_shutdown_commits
        self.shutdown_commits: list[tuple[str, str, list[str]]] = []  # pool, volume, files
        self.stopped = False
        self.records: dict[str, CallRecord] = {}
        self.pools: dict[tuple[str, tuple[str, ...]], Pool] = {}
        self.lock = threading.Lock()
        self.workdir = volume_root.parent / f".standin-{volume_root.name}"
        for stale in self.workdir.glob("crash-*.left"):  # an earlier StandIn's rule budgets
            stale.unlink()
        self.code_dir = self.workdir / "code"
        depth = len(app_module.__name__.split("."))  # the folder holding the top package
        self.source_root = Path(str(app_module.__file__)).resolve().parents[depth - 1]

    def site_of(self, name: str) -> Path:
        """The function's image as its containers see it: the function's own image, else the
        App's default, `Image.debian_slim()` (`app.py::_App._get_default_image`)."""
        from modal._utils.async_utils import synchronizer

        image = synchronizer._translate_in(getattr(self.app_module, name))._spec.image
        return image_site(image_packages(image or modal.Image.debian_slim()))

    def lookup(self, name: str, required_keys: Iterable[str] = ()) -> StandInSecret:
        """`Secret.from_name(name, required_keys=...)`: "the server asserts these keys exist on
        the Secret" (`secret.py::_Secret.from_name`). The status it answers a missing key with
        is not in the client's source; the stand-in sends NOT_FOUND (NotFoundError), one of
        the three the driver takes for a missing or incomplete secret."""
        if name not in self.workspace:
            msg = f"Secret '{name}' not found in environment 'main'"
            raise NotFoundError(msg)
        lacking = [key for key in required_keys if key not in self.workspace[name]]
        if lacking:
            msg = f"Secret '{name}' is missing required keys: {', '.join(lacking)}"
            raise NotFoundError(msg)
        return StandInSecret(name, dict(self.workspace[name]))

    def crash_budget(self, rule: int) -> str | None:
        """A file holding how many more times the rule may crash (shared by containers)."""
        times = self.crash[rule].times
        if times is None:
            return None
        budget = self.workdir / f"crash-{rule}.left"
        if not budget.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            budget.write_text(str(times))
        return str(budget)

    def crashed(self, rule: int) -> None:
        with self.lock:
            self.crash_count[rule] += 1

    def stop_app(self) -> None:
        """A crash rule with effect 'stop': the App stops, killing every container at once."""
        with self.lock:
            self.stopped = True
            pools = list(self.pools.values())
        for pool in pools:
            pool.kill()

    def check_running(self) -> None:
        """After the App stopped, every call in flight ends like the driver: interrupted."""
        if self.stopped:
            raise KeyboardInterrupt

    def pool(self, name: str, secrets: tuple[str, ...], env: dict[str, str]) -> Pool:
        with self.lock:
            key = (name, secrets)
            if key not in self.pools:
                label = "-".join((name, *secrets))
                self.pools[key] = Pool(self, name, env, label)
            return self.pools[key]

    @contextmanager
    def run(self) -> Iterator[StandInRemote]:
        """`app.run()`: every secret a function declares is looked up now. A KeyboardInterrupt
        in the block (Ctrl-C, or a 'stop' rule) stops the App and is swallowed, as
        `runner.py::_run_app` does ("except KeyboardInterrupt": disconnect, then `return`):
        the caller's `with` ends normally and code after it runs without a result."""
        self.stopped = False
        self.shutdown_commits.clear()
        remote = StandInRemote(self)
        for function in remote.functions.values():
            function.hydrate()
        self.code_dir.mkdir(parents=True, exist_ok=True)
        for package in getattr(self.app_module, "LOCAL_SOURCES", ()):  # copies, as Modal
            shutil.rmtree(self.code_dir / package, ignore_errors=True)  # mounts them at /root
            shutil.copytree(self.source_root / package, self.code_dir / package, ignore=_non_py)
        try:
            yield remote
        except KeyboardInterrupt:
            self.stop_app()
        finally:
            for pool in self.pools.values():
                pool.stop()
            self.pools.clear()
        self.refuse_forgotten_commits()

    def refuse_forgotten_commits(self) -> None:
        """Writes only the containers' shutdown commits carried: on Modal they turn up a
        scaledown window after the container's last input, so the step after it missed
        them (unless the test allows it, to look at the shutdown commit itself)."""
        if self.allow_shutdown_commits or not self.shutdown_commits:
            return
        found = "; ".join(
            f"{pool} ({volume}): {', '.join(sorted(files)[:5])}"
            for pool, volume, files in self.shutdown_commits
        )
        msg = (
            "stand-in: only their container's shutdown commit made these writes visible, "
            "which Modal makes a scaledown window after the container's last input; "
            f"commit before returning: {found}"
        )
        raise StandInForgottenCommitError(msg)


def _non_py(folder: str, names: list[str]) -> list[str]:
    """What `add_local_python_source` leaves out (NON_PYTHON_FILES): all but `.py` files."""
    return [
        n
        for n in names
        if n == "__pycache__" or (not n.endswith(".py") and not Path(folder, n).is_dir())
    ]


@dataclass
class Entry:
    """modal.volume.FileEntry: a path relative to the volume root."""

    path: str
    type: FileEntryType
    mtime: int
    size: int


class DirectoryVolume:
    """The client-side modal.Volume API (batch_upload, listdir, read_file, remove_file) over
    the committed state, the directory containers commit into (`volume.py::_Volume`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploaded: list[str] = []

    def _local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @contextmanager
    def batch_upload(self, force: bool = False) -> Iterator[DirectoryVolume]:
        with volume_lock(self.root):
            yield self

    def put_file(self, local: Path | str | io.BytesIO, remote: str) -> None:
        target = self._local(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = local.getvalue() if isinstance(local, io.BytesIO) else Path(local).read_bytes()
        tmp = target.with_name(f".{target.name}.upload")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.uploaded.append(remote)

    def write_committed(self, path: str, data: bytes) -> None:
        """Test helper: change a committed file the way a client-side upload would."""
        with self.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(data), path)

    def listdir(self, path: str, *, recursive: bool = False) -> list[Entry]:
        with volume_lock(self.root):
            folder = self._local(path)
            if not folder.exists():
                msg = f"No such file or directory: {path}"
                raise NotFoundError(msg)
            if folder.is_file():
                children: Iterable[Path] = [folder]
            else:
                children = folder.rglob("*") if recursive else folder.iterdir()
            return [self._entry(child) for child in sorted(children)]

    def _entry(self, path: Path) -> Entry:
        stat = path.stat()
        kind = FileEntryType.DIRECTORY if path.is_dir() else FileEntryType.FILE
        return Entry(path.relative_to(self.root).as_posix(), kind, int(stat.st_mtime), stat.st_size)

    def read_file(self, path: str) -> Iterator[bytes]:
        with volume_lock(self.root):
            try:
                data = self._local(path).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                raise FileNotFoundError(path) from None
        yield from (data[i : i + (1 << 16)] for i in range(0, len(data), 1 << 16))

    def remove_file(self, path: str, recursive: bool = False) -> None:
        with volume_lock(self.root):
            target = self._local(path)
            if not target.exists():
                raise FileNotFoundError(path)
            if target.is_dir():
                if not recursive:
                    msg = f"{path} is a directory"
                    raise IsADirectoryError(msg)
                shutil.rmtree(target)
            else:
                target.unlink()
