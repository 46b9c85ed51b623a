"""Local stand-ins for the two Modal objects the burst code talks to (Modal is unreachable here).

`LocalFunction` plays a modal.Function: `.remote` and `.map` run the App function's own body
in this process (`Function.local`). `DirectoryVolume` plays a modal.Volume over a directory.
Both record how they were called so tests can count dispatches.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modal.exception import NotFoundError


class LocalFunction:
    def __init__(self, function: Any) -> None:
        self.function = function
        self.remote_calls: list[tuple[Any, ...]] = []
        self.mapped: list[Any] = []

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.remote_calls.append(args)
        return self.function.local(*args, **kwargs)

    def map(
        self,
        inputs: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> Iterator[Any]:
        assert order_outputs, "the driver pairs results with batch indexes by position"
        for item in inputs:
            self.mapped.append(item)
            try:
                yield self.function.local(item, **(kwargs or {}))
            except Exception as exc:
                if not return_exceptions:
                    raise
                yield exc


def local_functions(functions: dict[str, Any]) -> dict[str, LocalFunction]:
    return {name: LocalFunction(function) for name, function in functions.items()}


@dataclass
class Entry:
    path: str


class DirectoryVolume:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploaded: list[str] = []

    def _local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @contextmanager
    def batch_upload(self, force: bool = False) -> Iterator[DirectoryVolume]:
        yield self

    def put_file(self, local: Path, remote: str) -> None:
        target = self._local(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
        self.uploaded.append(remote)

    def listdir(self, path: str, *, recursive: bool = False) -> list[Entry]:
        folder = self._local(path)
        if not folder.exists():
            raise NotFoundError(f"no such path: {path}")
        children = folder.rglob("*") if recursive else folder.iterdir()
        return [Entry(str(child.relative_to(self.root))) for child in sorted(children)]

    def read_file(self, path: str) -> Iterator[bytes]:
        with self._local(path).open("rb") as handle:
            while block := handle.read(1 << 16):
                yield block

    def remove_file(self, path: str, recursive: bool = False) -> None:
        shutil.rmtree(self._local(path))
