"""`python -m modal_burst full|resume|merge|status|upload|download`: burst runs on Modal."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from claidex.cli import add_graph_flag
from modal_burst.credentials import TOKEN_REJECTED, ModalNotConfiguredError, require_credentials
from modal_burst.driver import (
    BurstOutcome,
    BurstRequest,
    FunctionLike,
    one_line,
    run_burst,
    run_overrides,
)
from scoring.config import Settings, load_settings
from scoring.rundir import new_run_id

FUNCTION_NAMES = ("prepare", "score_batch", "merge_and_calibrate", "run_status", "record_status")


@contextmanager
def remote_functions(deployed: bool, *, quiet: bool) -> Iterator[Mapping[str, FunctionLike]]:
    """The deployed app's functions by name, or the app run ephemerally for this command."""
    import modal

    if deployed:
        name = Settings().modal_app_name
        yield {f: modal.Function.from_name(name, f) for f in FUNCTION_NAMES}
        return
    from modal_burst.app import FUNCTIONS, app

    if quiet:
        with app.run():
            yield FUNCTIONS
        return
    with modal.enable_output(), app.run():
        yield FUNCTIONS


def report(outcome: BurstOutcome) -> int:
    """One summary line; failed batches by index on stderr."""
    head = f"run {outcome.run_id}: {outcome.status}, {outcome.batches_done}/{outcome.batches_total}"
    if outcome.status == "failed":
        print(f"{head} batches; {len(outcome.failed)} failed", file=sys.stderr)
        for index, error in sorted(outcome.failed.items()):
            print(f"  batch {index}: {error}", file=sys.stderr)
        print(f"resume with: python -m modal_burst resume {outcome.run_id}", file=sys.stderr)
        return 1
    extra = f" ({outcome.detail})" if outcome.detail else ""
    print(f"{head} batches{extra}")
    if outcome.status == "partial":
        print(f"resume with: python -m modal_burst resume {outcome.run_id}")
    return 0


def _burst(args: argparse.Namespace, request: BurstRequest) -> int:
    with remote_functions(args.deployed, quiet=args.quiet) as functions:
        outcome = run_burst(functions, request, show_progress=not args.quiet)
    return report(outcome)


def _full(args: argparse.Namespace) -> int:
    if args.graph:  # the App attaches the Neo4j secret by graph mode when it is imported
        os.environ["CLAIDEX_GRAPH_MODE"] = args.graph
    cfg = load_settings()
    request = BurstRequest(
        run_id=args.run_id or new_run_id("-burst"),
        source=args.source,
        data_name=args.data_name or cfg.modal_data_name,
        overrides=run_overrides(cfg, batch_size=args.batch_size, graph_mode=args.graph),
        max_batches=args.max_batches,
        publish=not args.no_publish,
    )
    print(f"run {request.run_id}: bursting on Modal app {cfg.modal_app_name}")
    return _burst(args, request)


def resume_request(args: argparse.Namespace) -> BurstRequest:
    """An existing run only; publishes as the run chose at start unless --no-publish."""
    publish = False if args.no_publish else None
    return BurstRequest(run_id=args.run, max_batches=args.max_batches, publish=publish, resume=True)


def _resume(args: argparse.Namespace) -> int:
    return _burst(args, resume_request(args))


def _merge(args: argparse.Namespace) -> int:
    with remote_functions(args.deployed, quiet=args.quiet) as functions:
        state = functions["run_status"].remote(args.run)
        if state["missing"] or not state["prepared"]:
            shown = ", ".join(map(str, state["missing"][:20])) or "not prepared"
            print(f"run {args.run}: cannot merge, batches missing: {shown}", file=sys.stderr)
            return 1
        merged = functions["merge_and_calibrate"].remote(args.run, not args.no_publish)
    print(
        f"run {args.run}: {merged['status']}" + (f" ({merged['note']})" if "note" in merged else "")
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    with remote_functions(args.deployed, quiet=True) as functions:
        state: dict[str, Any] = functions["run_status"].remote(args.run)
    print(json.dumps(state, indent=2, default=str))
    return 1 if state.get("status") == "failed" or not state["exists"] else 0


def _volume() -> Any:
    import modal

    return modal.Volume.from_name(Settings().modal_volume, create_if_missing=True)


def _upload(args: argparse.Namespace) -> int:
    from modal_burst.transfer import upload_dataset

    name = args.data_name or Settings().modal_data_name
    files = upload_dataset(_volume(), Path(args.directory), name)
    print(f"uploaded {len(files)} table(s) to dataset {name!r}: {', '.join(files)}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from modal_burst.transfer import download_run

    files = download_run(_volume(), args.run, Path(args.directory))
    print(f"downloaded {', '.join(files)} to {args.directory}")
    return 0


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = "must be 1 or more"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modal_burst", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--deployed", action="store_true", help="use the deployed app's functions")
        p.add_argument("--quiet", action="store_true", help="no progress bar or build output")

    full = sub.add_parser("full", help="full recompute in Modal containers")
    full.add_argument("--data-name", help="dataset on the volume (default CLAIDEX_MODAL_DATA_NAME)")
    full.add_argument("--source", choices=["volume", "postgres"], default="volume")
    full.add_argument("--batch-size", type=int, default=None)
    full.add_argument(
        "--max-batches", type=positive, default=None, help="smoke run: first K batches"
    )
    full.add_argument("--run-id", default=None, help="an existing run resumes")
    full.add_argument("--no-publish", action="store_true")
    add_graph_flag(full)
    remote(full)
    full.set_defaults(func=_full)

    resume = sub.add_parser("resume", help="score only the missing batches, then merge")
    resume.add_argument("run")
    resume.add_argument("--max-batches", type=positive, default=None)
    resume.add_argument("--no-publish", action="store_true")
    remote(resume)
    resume.set_defaults(func=_resume)

    merge = sub.add_parser("merge", help="merge only (batches finished, merge did not)")
    merge.add_argument("run")
    merge.add_argument("--no-publish", action="store_true")
    remote(merge)
    merge.set_defaults(func=_merge)

    status = sub.add_parser("status", help="a run's ledger on the volume")
    status.add_argument("run")
    remote(status)
    status.set_defaults(func=_status)

    upload = sub.add_parser("upload", help="a dataset directory to the volume")
    upload.add_argument("directory")
    upload.add_argument("--data-name", default=None)
    upload.set_defaults(func=_upload)

    download = sub.add_parser("download", help="a run's results from the volume")
    download.add_argument("run")
    download.add_argument("directory")
    download.set_defaults(func=_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Credentials first: without them every command stops here, before any network call."""
    from claidex.cli import run_command

    args = build_parser().parse_args(argv)
    from modal.exception import AuthError
    from modal.exception import Error as ModalError

    try:
        require_credentials()
        return run_command(args)
    except ModalNotConfiguredError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except AuthError:
        print(f"error: {TOKEN_REJECTED}", file=sys.stderr)
    except (ModalError, ConnectionError) as exc:
        print(f"error: Modal: {one_line(exc)}", file=sys.stderr)
    return 2
