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
  "last write wins" per file. `commit()` reloads only when the server does not answer
  `skip_reload` (`_Volume.commit`); the stand-in's commit never reloads, so code that needs
  other containers' commits must `reload()` itself. `Mount` below implements that over a
  per-container copy (`view`) of the committed directory (`root`).
- Background commits: Modal mounts volumes with `allow_background_commits=True`
  (`volume.py::_volume_to_mount_proto`), and `reload()` "may implicitly commit" uncommitted
  changes (`_Volume.reload` docstring); the guide adds commits every few seconds and one
  at shutdown. By default the stand-in makes none, so code that forgets to commit fails
  here instead of working by timing luck. With `background_commits` on, the opposite
  worst case: every reload commits this container's changes first, and a container killed
  by a rule has everything it wrote committed just before it dies (a background commit
  ran at the worst moment), so code that relies on a write staying invisible until its
  own commit fails instead.
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
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

FRAME = struct.Struct("!Q")
OOM_EXIT = 137  # what an out-of-memory kill (SIGKILL) looks like from outside
Signature = tuple[int, int, int]  # inode, size, mtime: a file replaced or rewritten differs

_IN_STANDIN_IO = False  # the crash hook ignores the stand-in's own copies


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
    """Serialises commits, reloads and client-side operations on one volume directory."""
    global _IN_STANDIN_IO
    with (root.parent / f".{root.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _IN_STANDIN_IO = True
        try:
            yield
        finally:
            _IN_STANDIN_IO = False
            fcntl.flock(handle, fcntl.LOCK_UN)


def scan(directory: Path) -> dict[str, Signature]:
    found: dict[str, Signature] = {}
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
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

    def __init__(self, root: Path, view: Path, *, background_commits: bool = False) -> None:
        self.root = root
        self.view = view
        self.background_commits = background_commits
        self.synced: dict[str, tuple[Signature, Signature]] = {}

    def start(self) -> None:
        """The volume as it is when the container starts."""
        self.view.mkdir(parents=True, exist_ok=True)
        with volume_lock(self.root):
            self._refresh()

    def reload(self) -> None:
        """Others' commits become visible; this container's uncommitted changes stay (and
        are committed first when background commits are on)."""
        with volume_lock(self.root):
            if self.background_commits:
                self._push()
            self._refresh()

    def commit(self) -> None:
        """This container's changes become the committed state (last write wins); the view
        is not reloaded (as when Modal answers skip_reload)."""
        with volume_lock(self.root):
            self._push()

    def _push(self) -> None:
        view = scan(self.view)
        for rel, sig in view.items():
            if rel not in self.synced or self.synced[rel][1] != sig:
                put(self.view / rel, self.root / rel)
                self.synced[rel] = (signature(self.root / rel), sig)
        for rel in [rel for rel in self.synced if rel not in view]:
            remove(self.root / rel, self.root)
            del self.synced[rel]

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
        if event != "os.rename" or _IN_STANDIN_IO or not targets:
            return
        rule = targets.get(os.path.normpath(os.path.abspath(os.fsdecode(args[1]))))
        if rule is not None and armed(rule) and spend(rule["budget"]):
            for mount in mounts.values():
                if mount.background_commits:
                    mount.commit()
            send(out, ("crashing", rule["id"]))
            os._exit(OOM_EXIT)

    sys.addaudithook(hook)


def main() -> None:
    sys.path.pop(0)  # this script's folder (tests/) is not in the image
    config = json.loads(Path(sys.argv[1]).read_text())
    out = os.fdopen(os.dup(1), "wb")  # replies; the function's own prints go to stderr
    os.dup2(2, 1)
    requests = sys.stdin.buffer
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
    send(out, ("ready",))
    while True:
        try:
            args, kwargs = receive(requests)
        except EOFError:
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
