"""Command line of the fleet: start a run and follow it, show status, resume, enqueue NPIs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from claidex.command_line import BLOCKED_EXIT, add_graph_flag, run_command
from scoring.config import SHARDS_HELP, load_settings
from scoring.errors import InputError
from scoring.location import resolved
from scoring.reports.progress import progress_bar
from scoring.runs.ledger import RunLedger

FINISHED = ("published", "merged")


def finished(summary: dict[str, Any]) -> bool:
    """Published, blocked by its checks, or merged by a run that does not publish (no
    database, --no-publish); and its page drawn (merge draws it last)."""
    status = summary.get("status")
    if summary.get("page_pending"):  # the scores are out, report.html comes right after
        return False
    if status in ("published", "blocked"):
        return True
    return status == "merged" and not summary.get("will_publish")


def follow(
    run_id: str, *, timeout: float | None, show_progress: bool, start: str | None = None
) -> dict[str, Any]:
    """Poll the shared ledger until the run finishes or fails; returns its final summary.

    `start` (the start task's result) reports failures that happen before any ledger exists.
    """
    from workers.tasks import run_paths

    ledger = RunLedger(run_paths(run_id))
    timeout = load_settings().follow_timeout if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with progress_bar(show_progress) as bar:
        task = bar.add_task(f"run {run_id}: queued", total=None)
        while True:
            summary = ledger.summary()
            status = summary.get("status", "queued")
            total = summary.get("batches_total") or None
            bar.update(
                task,
                description=f"run {run_id}: {status}{_waiting_note(summary)}",
                total=total,
                completed=summary.get("batches_done", 0),
            )
            if finished(summary) or status == "failed":
                return summary
            if (error := _start_error(start)) is not None:
                return {
                    **summary,
                    "run_id": run_id,
                    "status": "failed",
                    "failed_step": "start",
                    "error": error,
                }
            if time.monotonic() > deadline:
                summary["status"] = "timeout"
                return summary
            time.sleep(0.3)


def _waiting_note(summary: dict[str, Any]) -> str:
    """What a run waits for, when it waits for something other than its workers."""
    if retrying := summary.get("retrying"):
        return f" (retrying {retrying['step']} until {retrying.get('until', '?')})"
    if stalled := summary.get("stalled"):
        return f" (stalled: {stalled})"
    return ""


def _start_error(start: str | None) -> str | None:
    """The start task's failure (`start`: its task id), if Redis can tell us now; an
    unreachable Redis is no failure of the run (the ledger, on the shared run root, is what
    the follower reads). Read from the result backend by id: no result handle is kept, so
    none is left subscribed when the process exits (after a Redis restart, a handle's
    unsubscribe at interpreter shutdown printed a traceback)."""
    if start is None:
        return None
    from workers.app import app

    try:
        meta = app.backend.get_task_meta(start)
    except Exception:  # redis down or restarting: ask again on the next poll
        return None
    return str(meta.get("result")) if meta.get("status") == "FAILURE" else None


def _finish(summary: dict[str, Any]) -> int:
    status = summary.get("status")
    if status == "blocked":  # held by its checks, not failed
        print(f"error: {summary.get('blocked')}", file=sys.stderr)
        return BLOCKED_EXIT
    if status in FINISHED:
        print(
            f"run {summary.get('run_id')}: {status}, {summary.get('batches_done')} batches, "
            f"{summary.get('providers_scored', 0):,} providers"
        )
        return 0
    reason = summary.get("error") or "gave up waiting (--timeout)"
    print(
        f"run {summary.get('run_id')}: {status} at {summary.get('failed_step') or '-'}: {reason}",
        file=sys.stderr,
    )
    return 1


def _full(args: argparse.Namespace) -> int:
    from workers.tasks import forget_locally, start_full_run

    if args.source == "dataset" and not args.data:
        msg = "give --data DIR or --source postgres"
        raise InputError(msg)
    from scoring.runs.store import checked_run_id, new_run_id

    run_id = checked_run_id(args.run_id) if args.run_id else new_run_id()
    _refuse_existing(run_id)
    chosen = {"batch_size": args.batch_size, "shards": args.shards, "graph_mode": args.graph}
    overrides = {k: v for k, v in chosen.items() if v is not None}
    data = resolved(args.data) if args.source == "dataset" else None
    _claim_run_id(run_id, data, overrides, not args.no_publish)
    started = start_full_run.apply_async(args=[run_id, data, overrides, not args.no_publish])
    start_id = str(started.id)
    forget_locally(started)  # followed by id (see _start_error)
    del started
    print(f"run {run_id} queued")
    if args.no_wait:
        return 0
    return _finish(
        follow(run_id, timeout=args.timeout, show_progress=not args.quiet, start=start_id)
    )


def _refuse_existing(run_id: str) -> None:
    """A run id names one run: `full` never reuses it (nor ignores new --data/--batch-size)."""
    from scoring.runs.store import LEDGER, MANIFEST, REQUEST, run_store
    from workers.tasks import run_paths

    paths = run_paths(run_id)
    store = run_store(paths)
    if any(store.exists(key) for key in (LEDGER, REQUEST, MANIFEST)):
        status = RunLedger(paths).read().get("status", "queued")
        msg = (
            f"run {run_id} already exists ({status}, {paths.where()}): choose another --run-id, "
            f"or `python -m workers resume {run_id}` to finish it"
        )
        raise InputError(msg)


def _claim_run_id(
    run_id: str, data: str | None, overrides: dict[str, Any], publish_scores: bool
) -> None:
    """Create request.json exclusively: of two `full --run-id X` at once, one gets X."""
    from workers.tasks import run_paths, save_request

    try:
        save_request(run_paths(run_id), data, overrides, publish_scores, exclusive=True)
    except FileExistsError:
        _refuse_existing(run_id)
        raise


def diagnosis(run_id: str) -> dict[str, Any]:
    """The watchdog's view of one run: what it waits for and what brings it back."""
    from workers.scheduled import check_fleet_run

    try:
        verdict = check_fleet_run(run_id)
    except Exception as exc:  # Redis unreachable: say so, the ledger is still shown
        return {"broker": f"unreachable: {type(exc).__name__}: {exc}"}
    found: dict[str, Any] = {"notes": verdict.notes}
    if verdict.action:
        found["stuck"] = verdict.reason
        found["recovery"] = (
            f"the watchdog (celery beat) resumes it automatically; by hand: "
            f"`python -m workers resume {run_id}`"
        )
    return found


def _status(args: argparse.Namespace) -> int:
    from scoring.runs.roots import runs_under
    from workers.tasks import run_paths

    if args.run:
        from scoring.runs.store import LEDGER, REQUEST, run_store

        paths = run_paths(args.run)
        if not any(run_store(paths).exists(key) for key in (LEDGER, REQUEST)):
            msg = f"no run {args.run} under {load_settings().run_root} (no ledger, no request)"
            raise InputError(msg)
        ledger = RunLedger(paths)
        summary = ledger.summary()
        if summary.get("status") not in ("published", "merged", "blocked", "failed", None):
            summary["diagnosis"] = diagnosis(args.run)
        if summary.get("status") == "failed":
            summary["recovery"] = f"fix the cause, then `python -m workers resume {args.run}`"
        print(json.dumps(summary, indent=2, default=str))
        return {"failed": 1, "blocked": BLOCKED_EXIT}.get(summary.get("status"), 0)
    runs = sorted(runs_under(load_settings().run_root), key=lambda p: p.run_id, reverse=True)
    for paths in runs[:20]:
        state = RunLedger(paths).summary()
        print(
            f"{paths.run_id}  {state.get('kind', '?'):<11} {state.get('status', '?'):<10} "
            f"{state.get('batches_done', 0)}/{state.get('batches_total', '?')} batches"
        )
    return 0


def _metrics(args: argparse.Namespace) -> int:
    """An exporter for the fleet's runs: each scrape reads the ledgers under the run root."""
    import threading

    from prometheus_client import start_http_server

    from scoring.runs.metrics import run_root_registry

    root = load_settings().run_root
    registry = run_root_registry(root, lambda paths: RunLedger(paths).read())
    server, _thread = start_http_server(args.port, args.addr, registry=registry)
    print(f"metrics of {root} on http://{args.addr}:{server.server_port}/metrics", flush=True)
    threading.Event().wait()  # until the process is stopped
    return 0


def _resume(args: argparse.Namespace) -> int:
    from workers.tasks import resume_run, run_paths

    if resume_run(args.run) is None:
        summary = RunLedger(run_paths(args.run)).summary()
        if summary.get("status") == "blocked":  # resume does not re-run a held run
            return _finish(summary)
        print(f"run {args.run} is already published: nothing to resume")
        return 0
    print(f"run {args.run} resumed")
    if args.no_wait:
        return 0
    return _finish(follow(args.run, timeout=args.timeout, show_progress=not args.quiet))


def _enqueue(args: argparse.Namespace) -> int:
    # the app and the NPI rule only: importing the run steps costs ~1 s before the message
    from scoring.inputs.npi import checked_npis
    from workers.app import app

    npis = list(args.npis)
    if args.file:
        npis += Path(args.file).read_text().split()
    wanted = checked_npis(npis)  # malformed NPIs never reach the queue
    data = resolved(args.data) if args.data else None
    result = app.send_task("claidex.score_incremental", args=[wanted, data, not args.no_publish])
    print(f"enqueued {len(wanted)} NPI(s) as task {result.id}")
    if not args.wait:
        return 0
    outcome = result.get(timeout=args.timeout, propagate=False)
    if result.failed():
        print(f"error: {outcome}", file=sys.stderr)
        return 2
    for row in outcome["scores"]:
        flags = "; ".join(row["flags"]) or "-"
        print(f"{row['npi']}  {row['risk_score']:6.2f}  {row['risk_label']:<8}  {flags}")
    for npi in outcome["unknown_npis"]:
        print(f"{npi}  no payment data")
    print(f"run {outcome['run_id']} ({outcome['status']}, reference {outcome['reference_run']})")
    if outcome["status"] == "blocked":  # scored, held by its checks: not on the table
        print(f"error: {outcome.get('blocked')}", file=sys.stderr)
        return BLOCKED_EXIT
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="stop following after S s (default CLAIDEX_FOLLOW_TIMEOUT, 6 h)",
        )
        p.add_argument("--no-wait", action="store_true", help="dispatch and return")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    full = sub.add_parser("full", help="full recompute on the fleet, followed until published")
    full.add_argument("--data", help="dataset directory visible to every worker")
    full.add_argument("--source", choices=["dataset", "postgres"], default="dataset")
    full.add_argument("--batch-size", type=int, default=None)
    full.add_argument("--shards", type=int, default=None, help=SHARDS_HELP)
    full.add_argument("--run-id", default=None, help="(default: a new sortable id)")
    full.add_argument("--no-publish", action="store_true")
    add_graph_flag(full)
    waiting(full)
    full.set_defaults(func=_full)

    status = sub.add_parser("status", help="one run's ledger, or the latest runs")
    status.add_argument("run", nargs="?")
    status.set_defaults(func=_status)

    metrics = sub.add_parser(
        "metrics", help="serve the runs' metrics (Prometheus text format) from the run root"
    )
    metrics.add_argument("--port", type=int, default=9808)
    metrics.add_argument("--addr", default="127.0.0.1", help="bind address (default: loopback)")
    metrics.set_defaults(func=_metrics)

    resume = sub.add_parser("resume", help="re-dispatch only missing or failed batches, merge")
    resume.add_argument("run")
    waiting(resume)
    resume.set_defaults(func=_resume)

    enqueue = sub.add_parser("enqueue", help="score given NPIs against the latest full run")
    enqueue.add_argument("npis", nargs="*", help="10-digit NPIs")
    enqueue.add_argument("--file", help="a file of NPIs (whitespace separated)")
    enqueue.add_argument(
        "--data",
        help="dataset directory (default: Postgres if configured, "
        "else the reference run's dataset)",
    )
    enqueue.add_argument("--wait", action="store_true", help="wait and print the new scores")
    enqueue.add_argument("--timeout", type=float, default=300)
    enqueue.add_argument("--no-publish", action="store_true")
    enqueue.set_defaults(func=_enqueue)
    return parser


def main(argv: list[str] | None = None) -> int:
    import gc

    try:
        return run_command(build_parser().parse_args(argv))
    finally:
        # Result handles left in reference cycles would otherwise be collected at interpreter
        # shutdown, where their __del__ fails ("Exception ignored in AsyncResult.__del__").
        gc.collect()
