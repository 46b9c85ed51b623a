"""What a burst is to its driver and command line: the request, its outcome, where it got
to, the command that carries it on, and Modal as the driver sees it (Functions and secrets).
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from scoring.errors import RunStateError


class FunctionLike(Protocol):
    """The part of modal.Function the driver uses."""

    def remote(self, *args: Any, **kwargs: Any) -> Any: ...

    def map(self, *inputs: Iterable[Any], **options: Any) -> Iterable[Any]: ...

    def with_options(self, *, secrets: Collection[Any]) -> FunctionLike: ...


class Remote(Protocol):
    """Modal as the driver sees it: the App's functions by name, and secrets by name."""

    @property
    def functions(self) -> Mapping[str, FunctionLike]: ...

    def secret(self, name: str, required_keys: tuple[str, ...] = ()) -> Any:
        """The named secret, looked up now; modal.exception.NotFoundError when it is missing,
        a modal.exception.Error when it lacks one of `required_keys`."""
        ...


@dataclass(frozen=True)
class ModalRemote:
    """The real thing: functions of a running or deployed App, secrets from the workspace."""

    functions: Mapping[str, FunctionLike]

    def secret(self, name: str, required_keys: tuple[str, ...] = ()) -> Any:
        """`required_keys`: "the server asserts these keys exist on the Secret"
        (`modal/secret.py::_Secret.from_name`)."""
        import modal

        secret = modal.Secret.from_name(name, required_keys=list(required_keys))
        secret.hydrate()  # the lookup happens here, not in the middle of the run
        return secret


@dataclass(frozen=True)
class BurstRequest:
    run_id: str
    source: str = "volume"  # or "postgres"
    data_name: str = "claidex"
    overrides: dict[str, Any] = field(default_factory=dict)
    max_batches: int | None = None  # smoke run: only the first K missing batches
    # None: a new run publishes, an existing one keeps the choice it started with
    publish: bool | None = None
    resume: bool = False  # only an existing, prepared run; never prepare a new one


@dataclass
class BurstOutcome:
    run_id: str
    status: str  # published, merged, blocked (by its checks: exit 3), partial, failed
    batches_total: int = 0
    batches_done: int = 0
    dispatched: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    detail: str = ""
    resume: str = ""  # a failed run: the command that carries it on

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BurstTracker:
    """Where a burst is: what the one line after Ctrl-C says (Modal's `app.run()` swallows
    the KeyboardInterrupt, so the caller learns of it only from a result never set)."""

    run_id: str
    phase: str = "starting"
    planned: bool = False  # a resume carries on from the plan
    batches_total: int = 0
    batches_done: int = 0

    def where(self) -> str:
        if self.phase == "scoring":
            return f"while scoring ({self.batches_done}/{self.batches_total} batches done)"
        return f"while {self.phase}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


FLAGS = (("--batch-size", "batch_size"), ("--shards", "shards"), ("--graph", "graph_mode"))


def resume_command(run_id: str, *, planned: bool, request: BurstRequest | None = None) -> str:
    """What carries a run on: `resume` once it has a plan, else a new prepare of that id
    with what it was started with (its source, dataset, flags and publish choice): nothing
    of a run without a plan is on the volume to take them from."""
    if planned:
        return f"python -m modal_burst resume {run_id}"
    if request is None:
        return f"python -m modal_burst full --run-id {run_id} (with the options it started with)"
    words = ["--run-id", run_id, "--source", request.source]
    if request.source == "volume":
        words += ["--data-name", request.data_name]
    for flag, key in FLAGS:
        if request.overrides.get(key) is not None:
            words += [flag, str(request.overrides[key])]
    if request.publish is False:
        words.append("--no-publish")
    return f"python -m modal_burst full {shlex.join(words)}"


def not_prepared(state: dict[str, Any], wanted: str) -> RunStateError:
    """`resume`/`merge` of a run that is not on the volume, or never finished prepare."""
    run_id = state["run_id"]
    if not state["exists"]:
        msg = f"run {run_id} is not on the volume: nothing to {wanted} (start one with `full`)"
        return RunStateError(msg)
    why = f" ({state['error']})" if state.get("error") else ""
    msg = (
        f"run {run_id} never finished prepare{why}: nothing to {wanted}; "
        f"`python -m modal_burst full --run-id {run_id}` with the options it started with "
        "(--source, --data-name, --no-publish, ...) prepares it again"
    )
    return RunStateError(msg)
