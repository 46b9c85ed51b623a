"""One progress display for a burst: Modal's own when its output is on, else ours.

With `modal.enable_output()`, the running App draws a rich Live on Modal's console
("Running app...", `modal/_output/rich.py::RichOutputManager.show_status_spinner`) and every
`.map` adds a bar to it (`_functions.py` asks `OutputManager.get().function_progress_callback`).
A second Live of ours on another console would fight it for the terminal, so our rows go
into Modal's display through the same callback. Without Modal's output (`--quiet`, a deployed
app's functions, run_full in a container) ours is the only display.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from scoring.reports.progress import progress_bar


class ProgressView(Protocol):
    """The part of rich's Progress the driver uses."""

    def add_task(self, description: str, *, total: int, completed: int = 0) -> int: ...

    def advance(self, task: int) -> None: ...


@dataclass
class ModalProgressView:
    """Rows in Modal's own display (`OutputManager.function_progress_callback`)."""

    rows: list[tuple[Callable[[int, int], None], int, list[int]]] = field(default_factory=list)

    def add_task(self, description: str, *, total: int, completed: int = 0) -> int:
        from modal.output import OutputManager

        update = OutputManager.get().function_progress_callback(description, total=total)
        update(completed, total)
        self.rows.append((update, total, [completed]))
        return len(self.rows) - 1

    def advance(self, task: int) -> None:
        update, total, done = self.rows[task]
        done[0] += 1
        update(done[0], total)


def modal_output_enabled() -> bool:
    """True inside `modal.enable_output()` (Modal's OutputManager is the rich one)."""
    from modal.output import OutputManager

    return bool(OutputManager.get().is_enabled)


@contextmanager
def burst_progress(show: bool) -> Iterator[ProgressView]:
    if show and modal_output_enabled():
        yield ModalProgressView()
        return
    with progress_bar(show) as bar:
        yield bar
