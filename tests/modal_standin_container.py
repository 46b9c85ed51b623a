"""One stand-in Modal container: a process that imports the App module and serves inputs.

tests/modal_standin.py starts this file as a script, one process per container; it is
never imported by application code. Module level uses the standard library only: the
container's own imports (the App module, Modal, polars) happen in `main`, inside the
container's environment. What it mirrors of modal 1.6.4 (site-packages/modal):

- How a container runs a function: `_runtime/user_code_imports.py::
  import_single_function_service` imports the App's module by name in the container and
  takes the function by its qualified name; inputs then run one after another in that
  process (a warm container serves many inputs, so module globals persist between them).
- `modal.is_local()` is False inside a container (`_runtime/execution_context.py::
  is_local`: a task lifecycle manager exists there); we set that singleton.
- Volumes (`volume.py::_Volume`, class docstring): a container sees the volume as it was
  when the container started; "you need to explicitly reload the volume to see changes
  made since it was mounted", and "explicitly commit any changes you make to the volume
  for the changes to become visible outside the current container". Concurrent changes:
  "last write wins" per file. `Mount` below implements that over a per-container copy
  (`view`) of the committed directory (`root`).
- `commit()` reloads: `_Volume.commit` calls `_do_reload` after a successful VolumeCommit
  unless the server answers `skip_reload` (`Mount(skip_reload=True)` plays that answer).
- Open files: "Volumes can only be reloaded if there are no open files for the volume"
  (class docstring). The server refuses with "there are open files preventing the
  operation"; `_Volume.reload` re-raises it as RuntimeError, annotated by
  `volume.py::_open_files_error_annotation` (": cwd is inside volume", ": path REL is
  open"), while `_Volume.commit` re-raises its reload's refusal unannotated, after the
  commit itself went through. The stand-in looks at this process's cwd, its
  /proc/self/fd links and its /proc/self/maps (a memory-mapped file keeps the file open
  too, though Modal's annotation, reading fds only, does not name it).
- Background commits: Modal mounts volumes with `allow_background_commits=True`
  (`volume.py::_volume_to_mount_proto`); the volumes guide ("Background commits"): "every
  few seconds while your Function or Sandbox executes, the contents of attached Volumes
  will be committed without your application code calling `.commit`. A final snapshot
  and commit is also automatically performed on container shutdown." A background commit
  pushes; it never reloads the view under the running code. The stand-in models:
  - the shutdown commit, always, when a container stops normally (the App stops and its
    idle containers end), never when it is killed (a crash rule, a timeout). The
    container reports what that commit carried: on a running App a container shuts down
    once idle for its `scaledown_window` ("Max time (in seconds) a container can remain
    idle while scaling down", `app.py::_App.function`), long after the next step read the
    volume, so a write only the shutdown commit carries is a forgotten commit; the
    stand-in fails the run's `with` block over it unless the test allows it;
  - periodic commits every `commit_interval` seconds (a thread), off by default: they
    would make a forgotten commit work whenever the next step happens to start after the
    next tick, so with them on a test passes or fails by timing, never by the code;
  - `background_commits` on: the worst moments, deterministically. Every reload commits
    this container's changes first (`_Volume.reload` docstring: reloading "may
    implicitly commit"), and a container killed by a rule has everything it wrote
    committed just before it dies (a background commit ran at the worst moment), so code
    that relies on a write staying invisible until its own commit fails instead.
- A container killed by the kernel (out of memory: SIGKILL, exit 137) loses everything it
  has not committed. A `crash` rule from the test reproduces that: when the function puts
  the named file in place (an `os.rename`/`os.replace`, audited via `sys.addaudithook`),
  the process exits with 137 at once, before the rename. The rule names the function's
  output, not a point in our code, so it fires whether or not the code commits early.
  `after`: only once that file exists in the container's view. What the death means
  (out of memory, a timeout, the app stopping) is decided on the stand-in's side.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import pickle
import shutil
import struct
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

FRAME = struct.Struct("!Q")
OOM_EXIT = 137  # what an out-of-memory kill (SIGKILL) looks like from outside
Signature = tuple[int, int, int]  # inode, size, mtime: a file replaced or rewritten differs

OPEN_FILES = "there are open files preventing the operation"  # the server's refusal
_STANDIN_IO = threading.local()  # the crash hook ignores the stand-in's own copies


def send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message)
    stream.write(FRAME.pack(len(data)) + data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next message, or EOFError when the other side is gone."""
    header = stream.read(FRAME.size)
    if len(header) < FRAME.size:
        raise EOFError
    (size,) = FRAME.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


@contextmanager
def volume_lock(root: Path) -> Iterator[None]:
    """Serialises commits, reloads and client-side operations on one volume directory
    (across processes, and across a container's threads: each call opens its own handle)."""
    with (root.parent / f".{root.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _STANDIN_IO.active = True
        try:
            yield
        finally:
            _STANDIN_IO.active = False
            fcntl.flock(handle, fcntl.LOCK_UN)


def scan(directory: Path) -> dict[str, Signature]:
    """Every file under `directory`; one removed while it is scanned (by the function, during
    a background commit) is left out."""
    found: dict[str, Signature] = {}
    for path in directory.rglob("*"):
        try:
            if not path.is_file() or path.is_symlink():
                continue
            stat = path.stat()
        except FileNotFoundError:
            continue
        found[path.relative_to(directory).as_posix()] = (
            stat.st_ino,
            stat.st_size,
            stat.st_mtime_ns,
        )
    return found


def signature(path: Path) -> Signature:
    stat = path.stat()
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def put(source: Path, target: Path) -> None:
    """Copy a file into place whole (readers see the old file or the new one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.standin-{os.getpid()}.tmp")
    shutil.copy2(source, tmp)
    os.replace(tmp, target)


def remove(path: Path, top: Path) -> None:
    """Remove a file and the directories it leaves empty (up to `top`)."""
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != top and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


class Mount:
    """One container's view of a volume: `view` is its copy of the committed `root`.

    `synced[rel]` = (root signature, view signature) of each file whose view copy equals a
    committed version; a view file that differs from it (or is not there) is this
    container's own uncommitted change, a synced file missing from the view its own
    uncommitted deletion."""

    def __init__(
        self,
        root: Path,
        view: Path,
        *,
        background_commits: bool = False,
        skip_reload: bool = False,
    ) -> None:
        self.root = root
        self.view = view
        self.background_commits = background_commits
        self.skip_reload = skip_reload
        self.synced: dict[str, tuple[Signature, Signature]] = {}

    def start(self) -> None:
        """The volume as it is when the container starts."""
        self.view.mkdir(parents=True, exist_ok=True)
        with volume_lock(self.root):
            self._refresh()

    def reload(self) -> None:
        """`_Volume.reload`: others' commits become visible; this container's uncommitted
        changes stay (and are committed first when background commits are on). Refused
        while a file of the volume is open, with Modal's annotation."""
        with volume_lock(self.root):
            if self.background_commits:
                self._push()
            self._refuse_if_open(annotate=True)
            self._refresh()

    def commit(self) -> None:
        """`_Volume.commit`: this container's changes become the committed state (last write
        wins), then the view is reloaded unless the server answered skip_reload. That
        reload is refused while a file is open, unannotated, the commit itself kept."""
        with volume_lock(self.root):
            self._push()
            if not self.skip_reload:
                self._refuse_if_open(annotate=False)
                self._refresh()

    def background_commit(self) -> list[str]:
        """A commit Modal makes on its own (periodic, at shutdown): it pushes, never
        reloads. Returns the files (and deletions) it carried."""
        with volume_lock(self.root):
            return self._push()

    def open_files(self) -> tuple[str | None, list[str]]:
        """What keeps this process's view open: the annotation `_open_files_error_annotation`
        would give (cwd inside the volume, else the first descriptor open in it), and the
        files mapped into memory, which keep a file open though Modal's annotation, reading
        descriptors only, never names them."""
        view = Path(os.path.realpath(self.view))
        annotation = None
        if Path(os.getcwd()).is_relative_to(view):
            annotation = "cwd is inside volume"
        for fd in [] if annotation else os.listdir("/proc/self/fd"):
            try:
                target = Path(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:  # closed meanwhile (the listing's own descriptor)
                continue
            if target.is_relative_to(view):
                annotation = f"path {target.relative_to(view)} is open"
                break
        mapped = []
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and Path(fields[5]).is_relative_to(view):
                mapped.append(Path(fields[5]).relative_to(view).as_posix())
        return annotation, mapped

    def _refuse_if_open(self, *, annotate: bool) -> None:
        """The server's refusal; `_Volume.reload` adds the annotation, `_Volume.commit` not."""
        annotation, mapped = self.open_files()
        if annotation is None and not mapped:
            return
        if annotate and annotation is not None:
            raise RuntimeError(f"{OPEN_FILES}: {annotation}")
        raise RuntimeError(OPEN_FILES)

    def _push(self) -> list[str]:
        carried: list[str] = []
        view = scan(self.view)
        for rel, sig in view.items():
            if rel not in self.synced or self.synced[rel][1] != sig:
                try:
                    put(self.view / rel, self.root / rel)
                except FileNotFoundError:  # removed by the function meanwhile
                    continue
                self.synced[rel] = (signature(self.root / rel), sig)
                carried.append(rel)
        for rel in [rel for rel in self.synced if rel not in view]:
            remove(self.root / rel, self.root)
            del self.synced[rel]
            carried.append(rel)
        return carried

    def _refresh(self) -> None:
        root, view = scan(self.root), scan(self.view)
        synced: dict[str, tuple[Signature, Signature]] = {}
        for rel, root_sig in root.items():
            before, mine = self.synced.get(rel), view.get(rel)
            if mine is None and before is not None:  # deleted here, not committed yet
                synced[rel] = before
                continue
            if mine is not None and (before is None or before[1] != mine):
                continue  # written here, not committed yet
            if mine is None or before is None or before[0] != root_sig:
                put(self.root / rel, self.view / rel)
            synced[rel] = (root_sig, signature(self.view / rel))
        for rel, before in self.synced.items():
            if rel not in root and view.get(rel) == before[1]:
                remove(self.view / rel, self.view)  # removed by another container
        self.synced = synced


def patch_modal(mounts: dict[str, Mount]) -> None:
    """Inside a container: is_local() is False, Volume.commit/reload act on this view."""
    import modal
    from modal._runtime.task_lifecycle_manager import _TaskLifecycleManager

    _TaskLifecycleManager._singleton = object()  # type: ignore[assignment]

    def mount_of(volume: Any) -> Mount:
        if volume.name not in mounts:
            msg = f"volume {volume.name!r} is not mounted in this container"
            raise RuntimeError(msg)
        return mounts[volume.name]

    modal.Volume.commit = lambda volume: mount_of(volume).commit()  # type: ignore[method-assign]
    modal.Volume.reload = lambda volume: mount_of(volume).reload()  # type: ignore[method-assign]


def install_crash_rules(
    rules: list[dict[str, Any]], mounts: dict[str, Mount], out: BinaryIO
) -> None:
    """Die like an out-of-memory kill when the function puts a crash rule's file in place.

    A rule with a budget (a file holding how many crashes are left, shared by all the
    containers) crashes only while the budget lasts; a rule with `after` only once that
    file is in the container's view. With background commits on, the container's writes
    so far are committed just before it dies."""
    targets = {
        os.path.normpath(mounts[rule["volume"]].view / rule["path"]): rule
        for rule in rules
        if rule["volume"] in mounts
    }

    def spend(budget: str | None) -> bool:
        if budget is None:
            return True
        with open(budget, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            left = int(handle.read() or 0)
            if left <= 0:
                return False
            handle.seek(0)
            handle.truncate()
            handle.write(str(left - 1))
            return True

    def armed(rule: dict[str, Any]) -> bool:
        after = rule.get("after")
        return after is None or (mounts[rule["volume"]].view / after).exists()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "os.rename" or getattr(_STANDIN_IO, "active", False) or not targets:
            return
        rule = targets.get(os.path.normpath(os.path.abspath(os.fsdecode(args[1]))))
        if rule is not None and armed(rule) and spend(rule["budget"]):
            for mount in mounts.values():
                if mount.background_commits:
                    mount.background_commit()
            send(out, ("crashing", rule["id"]))
            os._exit(OOM_EXIT)

    sys.addaudithook(hook)


def commit_periodically(mounts: dict[str, Mount], every: float, stop: threading.Event) -> None:
    """Modal's background commits while the container runs: a push every `every` seconds."""
    while not stop.wait(every):
        for mount in mounts.values():
            try:
                mount.background_commit()
            except Exception:  # a race with the function's own writes: the next tick retries
                traceback.print_exc()


def main() -> None:
    sys.path.pop(0)  # this script's folder (tests/) is not in the image
    config = json.loads(Path(sys.argv[1]).read_text())
    out = os.fdopen(os.dup(1), "wb")  # replies; the function's own prints go to stderr
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    home = Path(sys.argv[1]).parent
    background = bool(config.get("background_commits"))
    mounts = {
        name: Mount(Path(root), Path(view), background_commits=background)
        for name, (root, view) in config["mounts"].items()
    }
    for mount in mounts.values():
        mount.start()
    patch_modal(mounts)
    install_crash_rules(config["crash"], mounts, out)
    import warnings

    warnings.simplefilter("ignore")  # deprecation notes of the Modal client
    module = importlib.import_module(config["module"])
    function = getattr(module, config["function"])
    stop = threading.Event()
    periodic = threading.Thread(
        target=commit_periodically,
        args=(mounts, float(config.get("commit_interval") or 0), stop),
        daemon=True,
    )
    if config.get("commit_interval"):
        periodic.start()
    send(out, ("ready",))
    while True:
        try:
            args, kwargs = receive(requests)
        except EOFError:  # the container stops normally: the final snapshot and commit
            stop.set()
            if periodic.is_alive():
                periodic.join()
            carried = {name: mount.background_commit() for name, mount in mounts.items()}
            (home / "shutdown.json").write_text(json.dumps(carried))
            return
        try:
            reply: tuple[Any, ...] = ("ok", function.local(*args, **kwargs))
        except Exception as exc:
            reply = ("error", exc, "".join(traceback.format_exception(exc)))
        try:
            send(out, reply)
        except Exception as exc:  # an exception or result pickle cannot carry
            send(out, ("unpicklable", f"{type(exc).__name__}: {exc}", repr(reply[1])))


if __name__ == "__main__":
    main()
