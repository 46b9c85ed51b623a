"""The burst driver: prepare once, map score_batch over the missing batches, merge when complete.

It talks to anything shaped like Modal (a `Remote`: Functions with `.remote`, `.map` and
`.with_options`, plus named secrets), so the same code drives the deployed app, an
ephemeral app, or the stand-in in tests. Each step's secrets come from the run's own
settings (`run_secrets`), attached per call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from modal_burst.burst import (
    BurstOutcome,
    BurstRequest,
    BurstTracker,
    FunctionLike,
    Remote,
    not_prepared,
    one_line,
    resume_command,
)
from modal_burst.progress import ProgressView, burst_progress
from modal_burst.run_secrets import (
    PREPARE_STEPS,
    STEPS,
    MissingSecretError,
    RunNeeds,
    secret_names,
    secret_uses,
)
from scoring.config import Settings
from scoring.errors import ClaidexError, RunStateError
from scoring.runs.attempts import MERGE, PREPARE, attempt_key, describe

# where things live, not how runs are scored
LOCATION_SETTINGS = {"run_root", "modal_mount", "modal_run_root"}
AFTER_PREPARE = ("score_batch", "merge_and_calibrate")


def run_overrides(cfg: Settings, **flags: Any) -> dict[str, Any]:
    """Settings set in this environment (CLAIDEX_*) plus CLI flags, frozen into the run at
    prepare: containers score with the caller's methodology, not their own environment, and
    the run's secrets are the ones this caller names (looked up here, recorded in run.json)."""
    chosen = cfg.model_dump(mode="json", exclude_unset=True)
    chosen = {k: v for k, v in chosen.items() if k not in LOCATION_SETTINGS}
    chosen.setdefault("batch_size", cfg.modal_batch_size)
    chosen.setdefault("shard_rows", cfg.modal_shard_rows)
    # no fused plan in a burst: its shard containers are sized for one shard
    # (modal_stage_memory) and retry shard failures, where reduce's input errors are final
    chosen.setdefault("fuse", False)
    chosen = {**secret_names(cfg), **chosen}
    return {**chosen, **{k: v for k, v in flags.items() if v is not None}}


def find_secrets(remote: Remote, needs: RunNeeds, steps: Collection[str]) -> dict[str, list[Any]]:
    """Each step's secrets, every one looked up before any step runs: a missing secret is
    one MissingSecretError naming it and the `modal secret create` command."""
    from modal.exception import ConflictError, InvalidError, NotFoundError

    uses = secret_uses(needs)
    found: dict[str, Any] = {}
    for use in (use for step in steps for use in uses[step]):
        if use.name not in found:
            # the gRPC status the server sends for a secret without a required key is not in
            # the client's source: NOT_FOUND, INVALID_ARGUMENT or FAILED_PRECONDITION
            # (`_grpc_client.py` maps them to these three) are the same one line here
            try:
                found[use.name] = remote.secret(use.name, use.required)
            except (NotFoundError, InvalidError, ConflictError):
                raise MissingSecretError(use.missing()) from None
    return {step: [found[use.name] for use in uses[step]] for step in steps}


def with_secrets(
    remote: Remote, needs: RunNeeds, steps: Collection[str]
) -> dict[str, FunctionLike]:
    """The steps' functions, each carrying only the secrets the run needs there."""
    secrets = find_secrets(remote, needs, steps)
    functions = remote.functions
    return {
        step: functions[step].with_options(secrets=found) if found else functions[step]
        for step, found in secrets.items()
    }


def mapped(
    function: FunctionLike, todo: list[int], kwargs: dict[str, Any], window: int
) -> Iterator[tuple[int, Any]]:
    """(index, result or exception) for each of `todo`, in order, one `.map` per `window`
    inputs: Modal runs at most 1,000 inputs of one map at once and holds at most 2,000
    pending inputs per function (`modal_burst.limits`), so no call queues more than that."""
    for start in range(0, len(todo), window):
        part = todo[start : start + window]
        results = function.map(part, kwargs=kwargs, order_outputs=True, return_exceptions=True)
        yield from zip(part, results, strict=True)


def score_missing(
    score: FunctionLike,
    run_id: str,
    todo: list[int],
    on_result: Callable[[int, Any], None],
    window: int,
) -> dict[int, str]:
    """One score_batch call per batch in `todo`; returns the failures by batch index (a batch
    that gave up after killing its container too often returns that instead of raising)."""
    failed: dict[int, str] = {}
    for index, result in mapped(score, todo, {"run_id": run_id}, window):
        if isinstance(result, BaseException):
            failed[index] = one_line(result)
        elif "gave_up" in result:
            failed[index] = f"BatchGaveUpError: {result['gave_up']}"
        on_result(index, result)
    return failed


def call_step(function: FunctionLike, *args: Any) -> Any:
    """`.remote` of a step; a failure of the step itself is returned, not raised, so the
    driver can fail the run saying which step: Modal giving up on its crash loop (an
    ephemeral app's server fails the input: InternalFailure), its timeout, an error Modal
    could not hand back (RemoteError), or a container that cannot start (its ImportError,
    `_utils/function_utils.py::_process_result`). Our own errors (bad input, a missing
    secret) and Modal refusing this client (AuthError, no connection) stay one-line errors."""
    from modal.exception import AuthError
    from modal.exception import ConnectionError as ModalConnectionError
    from modal.exception import Error as ModalError

    try:
        return function.remote(*args)
    except (ClaidexError, AuthError, ModalConnectionError, ConnectionError):
        raise
    except (ModalError, Exception) as exc:
        return exc


def step_failure(result: Any) -> str | None:
    """Why a step's call failed, or None: an exception Modal handed back, or a body that gave
    up after its containers died step_max_attempts times (returned: a raise is retried)."""
    if isinstance(result, BaseException):
        return one_line(result)
    if isinstance(result, dict) and "gave_up" in result:
        return f"StepGaveUpError: {result['gave_up']}"
    return None


def fail_steps(
    functions: Mapping[str, FunctionLike],
    run_id: str,
    phase: str,
    failed: dict[str, str],
    request: BurstRequest | None = None,
) -> BurstOutcome:
    """Fail the run at `phase` for its failed steps (attempt key -> why), naming each (a
    worker that died without ending its attempt record says how often) and the command
    that carries the run on; recorded, so each step starts the resume with a fresh budget."""
    state = functions["run_status"].remote(run_id)
    attempts: dict[str, dict[str, Any]] = state.get("attempts") or {}
    shown = []
    for key, why in sorted(failed.items())[:10]:
        record = attempts.get(key, {})
        died = record.get("attempt", 0) if record.get("status") == "running" else 0
        deaths = f" (its worker died {died} time(s))" if died else ""
        named = f"{describe(key)}: " in why  # a body's own message names its step
        shown.append(why if named and not deaths else f"{describe(key)}{deaths}: {why}")
    if len(failed) > len(shown):
        shown.append(f"{len(failed)} failed in all")
    planned = bool(state.get("planned") or state.get("prepared"))
    resume = resume_command(run_id, planned=planned, request=request)
    detail = f"{phase} failed: {'; '.join(shown)}; resume with: {resume}"
    functions["record_status"].remote(run_id, "failed", phase, detail)
    return BurstOutcome(
        run_id,
        "failed",
        int(state.get("batches_total", 0)),
        int(state.get("batches_done", 0)),
        detail=detail,
        resume=resume,
    )


def prepare_stages(
    steps: Mapping[str, FunctionLike],
    state: dict[str, Any],
    bar: ProgressView,
    status: Callable[[str], dict[str, Any]],
    window: int,
    tracker: BurstTracker,
) -> dict[str, str]:
    """The step table's prepare steps, as the run's state names them one after the other:
    a single step once, a fan-out as one `.map` over its missing shards. Returns the failures
    (attempt key -> why) of the first step with any (the steps after it are not started)."""
    run_id = state["run_id"]
    ran: set[str] = set()
    while (work := state.get("next")) is not None and work["phase"] == "prepare":
        step = work["step"]
        if step in ran:  # ran and still missing: a stale app or volume, never a loop
            msg = f"run {run_id}: prepare step {step} ran but is still not done"
            raise RunStateError(msg)
        ran.add(step)
        tracker.phase = f"preparing (step {step})"
        if work["kind"] == "single":
            why = step_failure(call_step(steps["stage_single"], run_id, step))
            if why is not None:
                return {attempt_key(step): why}
            state = status(run_id)
            continue
        todo: list[int] = list(work["indices"])
        task = bar.add_task(step, total=len(todo))
        kwargs = {"run_id": run_id, "stage": step}
        failed: dict[str, str] = {}
        for index, result in mapped(steps["stage_shard"], todo, kwargs, window):
            if (why := step_failure(result)) is not None:
                failed[attempt_key(step, index)] = why
            bar.advance(task)
        if failed:
            return failed
        state = status(run_id)
    return {}


def _prepare(
    remote: Remote,
    request: BurstRequest,
    state: dict[str, Any],
    cfg: Settings,
    show: bool,
    tracker: BurstTracker,
) -> tuple[dict[str, Any], RunNeeds, dict[str, FunctionLike]] | BurstOutcome:
    """Plan a new run (or carry on with a planned one's missing shards) and run its stages;
    the run's state afterwards, or the failed outcome."""
    run_id = request.run_id
    functions = remote.functions
    if state.get("planned") and state.get("status") in ("preparing", "failed"):
        needs = RunNeeds.of_run(state, publish=request.publish)  # its own plan and choice
        steps = with_secrets(remote, needs, (*PREPARE_STEPS[1:], *AFTER_PREPARE))
        functions["record_status"].remote(run_id, "preparing", None, None)
    else:
        if request.resume:
            raise not_prepared({"run_id": run_id, **state}, "resume")
        # a run that never finished prepare keeps the choice it recorded, if any
        publish = request.publish if request.publish is not None else state.get("publish", True)
        overrides = {**secret_names(cfg), **request.overrides}  # frozen into the plan
        needs = RunNeeds.of_request(overrides, request.source, bool(publish), request.data_name)
        steps = with_secrets(remote, needs, STEPS)
        # a start of an earlier prepare still 'running' (an interrupted driver) is no death,
        # also when that prepare died before the ledger existed
        functions["record_status"].remote(run_id, "preparing", None, None)
        tracker.phase = "planning"
        args = (run_id, request.source, request.data_name, overrides, publish)
        why = step_failure(call_step(steps["prepare"], *args))
        if why is not None:
            return fail_steps(functions, run_id, "prepare", {PREPARE: why}, request)
        state = functions["run_status"].remote(run_id)
    tracker.planned = True
    with burst_progress(show) as bar:
        status = functions["run_status"].remote
        failed = prepare_stages(steps, state, bar, status, cfg.modal_map_window, tracker)
    if failed:
        return fail_steps(functions, run_id, "prepare", failed, request)
    return functions["run_status"].remote(run_id), needs, steps


def run_burst(
    remote: Remote,
    request: BurstRequest,
    *,
    cfg: Settings | None = None,
    show_progress: bool = True,
    tracker: BurstTracker | None = None,
) -> BurstOutcome:
    """Prepare (unless the run already is: a planned run carries on with its missing
    shards), score only missing batches, merge only a complete run; a run with failed or
    undispatched batches is never merged. A planned run's secrets follow its plan and
    ledger, whatever this caller's environment says."""
    cfg = cfg or Settings()
    run_id = request.run_id
    tracker = tracker or BurstTracker(run_id)
    functions = remote.functions
    state = functions["run_status"].remote(run_id)
    tracker.planned = bool(state.get("planned"))
    if not state["prepared"]:
        prepared = _prepare(remote, request, state, cfg, show_progress, tracker)
        if isinstance(prepared, BurstOutcome):
            return prepared
        state, needs, steps = prepared
    else:
        if state.get("status") == "published":
            total = int(state["batches_total"])
            return BurstOutcome(run_id, "published", total, total, detail="already published")
        if state.get("status") == "blocked":  # held by its checks: only --accept moves it
            total = int(state["batches_total"])
            return BurstOutcome(run_id, "blocked", total, total, detail=str(state.get("blocked")))
        needs = RunNeeds.of_run(state, publish=request.publish)
        steps = with_secrets(remote, needs, AFTER_PREPARE)
    total = int(state["batches_total"])
    missing: list[int] = list(state["missing"])
    todo = missing if request.max_batches is None else missing[: request.max_batches]
    # a record still 'running' from an earlier dispatch is no container death of this one
    functions["record_status"].remote(run_id, "scoring", None, None)
    tracker.phase, tracker.batches_total = "scoring", total
    tracker.batches_done = total - len(missing)

    with burst_progress(show_progress) as bar:
        task = bar.add_task(f"run {run_id}", total=total, completed=total - len(missing))

        def scored(_index: int, result: Any) -> None:
            bar.advance(task)
            if not isinstance(result, BaseException) and "gave_up" not in result:
                tracker.batches_done += 1

        failed = score_missing(steps["score_batch"], run_id, todo, scored, cfg.modal_map_window)
    done = total - len(missing) + len(todo) - len(failed)
    outcome = BurstOutcome(run_id, "partial", total, done, dispatched=todo, failed=failed)
    if failed:
        shown = "; ".join(f"batch {i}: {err}" for i, err in sorted(failed.items())[:10])
        outcome.status = "failed"
        outcome.resume = resume_command(run_id, planned=True)
        outcome.detail = f"{len(failed)} batch(es) failed: {shown}; resume with: {outcome.resume}"
        # each failed batch is recorded as failed, never left 'running' (a timeout, a lost
        # input Modal gave up on): a resume scores it afresh
        functions["record_status"].remote(run_id, "failed", "score", outcome.detail, failed)
        return outcome
    if done < total:
        outcome.detail = f"{total - done} batch(es) not dispatched (--max-batches)"
        return outcome
    tracker.phase = "merging"
    merged = call_step(steps["merge_and_calibrate"], run_id, needs.publishes)
    if (why := step_failure(merged)) is not None:
        return fail_steps(functions, run_id, MERGE, {MERGE: why})
    outcome.status = merged["status"]
    outcome.detail = merged.get("blocked") or merged.get("note", "")  # blocked: the checks' line
    return outcome


def merge_only(
    remote: Remote, run_id: str, *, publish: bool | None, accept: str | None = None
) -> dict[str, Any]:
    """`merge RUN`: all batches done, merge (and publish as the run chose at start, unless
    `publish` says otherwise); a run published already is left alone, a blocked one too
    unless `accept` (a reason): then it is published, on record."""
    state = remote.functions["run_status"].remote(run_id)
    if state.get("status") == "published":
        return {"run_id": run_id, "status": "published", "note": "already published"}
    if state.get("status") == "blocked" and accept is None:  # held: merging again changes nothing
        return {"run_id": run_id, "status": "blocked", "blocked": state.get("blocked")}
    if not state["prepared"]:
        raise not_prepared({"run_id": run_id, **state}, "merge")
    if state["missing"]:
        shown = ", ".join(map(str, state["missing"][:20]))
        msg = f"run {run_id}: cannot merge, batches missing: {shown}"
        raise RunStateError(msg)
    needs = RunNeeds.of_run(state, publish=publish)
    steps = with_secrets(remote, needs, ("merge_and_calibrate",))
    functions = remote.functions
    # a start of an earlier merge still 'running' is no death of this one
    functions["record_status"].remote(run_id, "scoring", None, None)
    if accept is not None:  # the accept goes with the merge call (the body publishes)
        merged = call_step(steps["merge_and_calibrate"], run_id, True, accept)
    else:
        merged = call_step(steps["merge_and_calibrate"], run_id, needs.publishes)
    if (why := step_failure(merged)) is not None:
        failed = fail_steps(functions, run_id, MERGE, {MERGE: why})
        msg = f"run {run_id}: {failed.detail}"
        raise RunStateError(msg)
    return dict(merged)
