"""The burst driver: prepare once, map score_batch over the missing batches, merge when complete.

It talks to anything shaped like Modal Functions (`.remote`, `.map`), so the same code
drives the deployed app, an ephemeral app, or a local stand-in in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scoring.config import Settings
from scoring.errors import RunStateError

LOCATION_SETTINGS = {"run_root", "modal_mount"}  # where things live, not how runs are scored


class FunctionLike(Protocol):
    """The part of modal.Function the driver uses."""

    def remote(self, *args: Any, **kwargs: Any) -> Any: ...

    def map(self, *inputs: Iterable[Any], **options: Any) -> Iterable[Any]: ...


@dataclass(frozen=True)
class BurstRequest:
    run_id: str
    source: str = "volume"  # or "postgres"
    data_name: str = "claidex"
    overrides: dict[str, Any] = field(default_factory=dict)
    max_batches: int | None = None  # smoke run: only the first K missing batches
    publish: bool | None = True  # None: what the run chose when it started (resume)
    resume: bool = False  # only an existing, prepared run; never prepare a new one


@dataclass
class BurstOutcome:
    run_id: str
    status: str  # published, merged, partial, failed
    batches_total: int = 0
    batches_done: int = 0
    dispatched: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_overrides(cfg: Settings, **flags: Any) -> dict[str, Any]:
    """Settings set in this environment (CLAIDEX_*) plus CLI flags, frozen into the run at
    prepare: containers score with the caller's methodology, not their own environment."""
    chosen = cfg.model_dump(mode="json", exclude_unset=True)
    chosen = {k: v for k, v in chosen.items() if k not in LOCATION_SETTINGS}
    chosen.setdefault("batch_size", cfg.modal_batch_size)
    return {**chosen, **{k: v for k, v in flags.items() if v is not None}}


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _progress(enabled: bool) -> Progress:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), disable=not enabled)


def score_missing(
    score: FunctionLike,
    run_id: str,
    todo: list[int],
    on_result: Callable[[int, Any], None],
) -> dict[int, str]:
    """One score_batch call per batch in `todo`; returns the failures by batch index."""
    failed: dict[int, str] = {}
    results = score.map(todo, kwargs={"run_id": run_id}, order_outputs=True, return_exceptions=True)
    for index, result in zip(todo, results, strict=True):
        if isinstance(result, BaseException):
            failed[index] = one_line(result)
        on_result(index, result)
    return failed


def run_burst(
    functions: Mapping[str, FunctionLike], request: BurstRequest, *, show_progress: bool = True
) -> BurstOutcome:
    """Prepare (unless the run already is), score only missing batches, merge only a complete
    run; a run with failed or undispatched batches is never merged."""
    run_id = request.run_id
    state = functions["run_status"].remote(run_id)
    if not state["prepared"]:
        if request.resume:
            detail = "is not on the volume" if not state["exists"] else "never finished prepare"
            msg = f"run {run_id} {detail}: nothing to resume (start one with `full`)"
            raise RunStateError(msg)
        publish = request.publish is not False
        functions["prepare"].remote(
            run_id, request.source, request.data_name, request.overrides, publish
        )
        state = functions["run_status"].remote(run_id)
    total = int(state["batches_total"])
    if state.get("status") == "published":
        return BurstOutcome(run_id, "published", total, total, detail="already published")
    missing: list[int] = list(state["missing"])
    todo = missing if request.max_batches is None else missing[: request.max_batches]
    functions["record_status"].remote(run_id, "scoring", None, None)
    with _progress(show_progress) as bar:
        task = bar.add_task(f"run {run_id}", total=total, completed=total - len(missing))
        failed = score_missing(
            functions["score_batch"], run_id, todo, lambda _i, _r: bar.advance(task)
        )
    done = total - len(missing) + len(todo) - len(failed)
    outcome = BurstOutcome(run_id, "partial", total, done, dispatched=todo, failed=failed)
    if failed:
        shown = "; ".join(f"batch {i}: {err}" for i, err in sorted(failed.items())[:10])
        outcome.status = "failed"
        outcome.detail = f"{len(failed)} batch(es) failed: {shown}"
        functions["record_status"].remote(run_id, "failed", "score", outcome.detail)
        return outcome
    if done < total:
        outcome.detail = f"{total - done} batch(es) not dispatched (--max-batches)"
        return outcome
    publish = request.publish if request.publish is not None else state.get("publish", True)
    merged = functions["merge_and_calibrate"].remote(run_id, bool(publish))
    outcome.status = merged["status"]
    outcome.detail = merged.get("note", "")
    return outcome
