"""`python -m modal_burst full|resume|merge|status|upload|download|prune|check`: bursts on Modal.

Nothing here imports `modal` at module level: Modal reads ~/.modal.toml when it is first
imported, and `main` checks the credentials (a broken file included) before that.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from claidex.command_line import BLOCKED_EXIT, add_graph_flag, run_command
from modal_burst.burst import (
    BurstOutcome,
    BurstRequest,
    BurstTracker,
    ModalRemote,
    Remote,
    one_line,
    resume_command,
)
from modal_burst.credentials import TOKEN_REJECTED, ModalNotConfiguredError, require_credentials
from modal_burst.driver import merge_only, run_burst, run_overrides
from modal_burst.layout import DEFAULT_KEEP, VOLUME_VERSION, migration_steps, named_volume
from modal_burst.run_secrets import STEPS
from scoring.config import SHARDS_HELP, Settings, load_settings
from scoring.errors import InputError, RunStateError
from scoring.location import is_url
from scoring.runs.alerts import send_alert
from scoring.runs.store import checked_run_id, new_run_id

FUNCTION_NAMES = (*STEPS, "run_status", "record_status")  # the App's, by name


@contextmanager
def remote_app(deployed: bool, *, quiet: bool) -> Iterator[Remote]:
    """The deployed app's functions by name, or the app run ephemerally for this command."""
    import modal

    if deployed:
        name = Settings().modal_app_name
        yield ModalRemote({f: modal.Function.from_name(name, f) for f in FUNCTION_NAMES})
        return
    from modal_burst.app import FUNCTIONS, app

    if quiet:
        with app.run():
            yield ModalRemote(FUNCTIONS)
        return
    with modal.enable_output(), app.run():
        yield ModalRemote(FUNCTIONS)


def report(outcome: BurstOutcome) -> int:
    """One summary line; failed batches by index on stderr."""
    head = f"run {outcome.run_id}: {outcome.status}, {outcome.batches_done}/{outcome.batches_total}"
    if outcome.status == "failed":
        resume = outcome.resume or resume_command(outcome.run_id, planned=True)
        send_alert(outcome.run_id, "failed", outcome.detail, f"resume with: {resume}")
        if not outcome.failed:  # a step gave up: the detail names it (and the resume command)
            print(f"{head} batches; {outcome.detail}", file=sys.stderr)
            return 1
        print(f"{head} batches; {len(outcome.failed)} failed", file=sys.stderr)
        for index, error in sorted(outcome.failed.items()):
            print(f"  batch {index}: {error}", file=sys.stderr)
        print(f"resume with: {resume}", file=sys.stderr)
        return 1
    if outcome.status == "blocked":  # held by its checks before publish, as `claidex run`
        print(f"error: {outcome.detail}", file=sys.stderr)
        # the containers have no webhook (never frozen into a run): this side alerts
        send_alert(outcome.run_id, "blocked", outcome.detail)
        return BLOCKED_EXIT
    extra = f" ({outcome.detail})" if outcome.detail else ""
    print(f"{head} batches{extra}")
    if outcome.status == "partial":
        print(f"resume with: python -m modal_burst resume {outcome.run_id}")
    return 0


INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)


def interrupted(run_id: str, where: str, resume: str, *, deployed: bool = False) -> int:
    """Ctrl-C: one line with the run's state and the command that carries it on. An
    ephemeral App stops its containers; a deployed app's calls go on (the client sends no
    cancel on an interrupt: `FunctionCall.cancel` is the only FunctionCallCancel), so a
    resume must wait for them."""
    after = (
        "; the deployed app's calls in flight go on: resume once `python -m modal_burst "
        f"status {run_id} --deployed` shows none running"
        if deployed
        else ""
    )
    print(f"run {run_id}: interrupted {where}{after}; resume with: {resume}", file=sys.stderr)
    return INTERRUPTED


def command_after_interrupt(args: argparse.Namespace, tracker: BurstTracker) -> str:
    """`resume RUN` once the run has a plan (keeping --max-batches: a smoke run stays one);
    before that, this same `full` command with --run-id."""
    argv = list(args.argv or [])
    if tracker.planned or args.command == "resume":
        words = ["--deployed"] if args.deployed else []
        if args.max_batches is not None:
            words += ["--max-batches", str(args.max_batches)]
        publish = publish_choice(args)
        if publish is not None and args.command == "resume":
            words.append("--publish" if publish else "--no-publish")
        resume = resume_command(tracker.run_id, planned=True)
        return " ".join([resume, *(shlex.quote(w) for w in words)])
    rest = argv[1:] if argv[:1] == ["full"] else argv
    if "--run-id" not in rest and not any(a.startswith("--run-id=") for a in rest):
        rest = [*rest, "--run-id", tracker.run_id]
    return f"python -m modal_burst full {shlex.join(rest)}"


def _burst(args: argparse.Namespace, request: BurstRequest) -> int:
    """Modal's `app.run()` swallows Ctrl-C (`modal/runner.py::_run_app` catches
    KeyboardInterrupt, disconnects and returns), so the block below can end without a
    result; a deployed app's functions let the interrupt through instead."""
    tracker = BurstTracker(request.run_id)
    try:
        with remote_app(args.deployed, quiet=args.quiet) as remote:
            outcome = run_burst(remote, request, show_progress=not args.quiet, tracker=tracker)
            return report(outcome)
    except KeyboardInterrupt:
        pass
    resume = command_after_interrupt(args, tracker)
    return interrupted(request.run_id, tracker.where(), resume, deployed=args.deployed)


def publish_choice(args: argparse.Namespace) -> bool | None:
    """--publish / --no-publish, else None: what the run chose when it started."""
    return True if args.publish else False if args.no_publish else None


def _full(args: argparse.Namespace) -> int:
    """A new run; an existing --run-id keeps its own settings (graph mode, publish choice)."""
    cfg = load_settings()
    request = BurstRequest(
        run_id=args.run_id or new_run_id("-burst"),
        source=args.source,
        data_name=args.data_name or cfg.modal_data_name,
        overrides=run_overrides(
            cfg, batch_size=args.batch_size, shards=args.shards, graph_mode=args.graph
        ),
        max_batches=args.max_batches,
        publish=publish_choice(args),  # None: a new run publishes, an existing one keeps its
    )
    print(f"run {request.run_id}: bursting on Modal app {cfg.modal_app_name}")
    return _burst(args, request)


def resume_request(args: argparse.Namespace) -> BurstRequest:
    """An existing run only; publishes as the run chose at start unless told otherwise."""
    publish = publish_choice(args)
    return BurstRequest(run_id=args.run, max_batches=args.max_batches, publish=publish, resume=True)


def _resume(args: argparse.Namespace) -> int:
    return _burst(args, resume_request(args))


def _merge(args: argparse.Namespace) -> int:
    try:
        with remote_app(args.deployed, quiet=args.quiet) as remote:
            merged = merge_only(remote, args.run, publish=publish_choice(args), accept=args.accept)
            if merged["status"] == "blocked":
                print(f"error: {merged.get('blocked')}", file=sys.stderr)
                return BLOCKED_EXIT
            note = f" ({merged['note']})" if "note" in merged else ""
            print(f"run {args.run}: {merged['status']}{note}")
            return 0
    except KeyboardInterrupt:
        pass
    deployed = " --deployed" if args.deployed else ""
    resume = f"python -m modal_burst merge {args.run}{deployed}"
    return interrupted(args.run, "while merging", resume, deployed=args.deployed)


def _status(args: argparse.Namespace) -> int:
    if args.volume is not None:  # another volume (an old v1 one): its ledger, client side
        state = ledger_on(_volume(args), args.run)
    else:
        try:
            with remote_app(args.deployed, quiet=True) as remote:
                state = remote.functions["run_status"].remote(args.run)
                return show_state(state)
        except KeyboardInterrupt:
            pass
        print(f"run {args.run}: status interrupted; nothing changed", file=sys.stderr)
        return INTERRUPTED
    return show_state(state)


def show_state(state: dict[str, Any]) -> int:
    print(json.dumps(state, indent=2, default=str))
    if state.get("status") == "blocked":
        return BLOCKED_EXIT
    return 1 if state.get("status") == "failed" or not state["exists"] else 0


def ledger_on(volume: Any, run_id: str) -> dict[str, Any]:
    """A run's ledger.json read through the client-side Volume API (no container)."""
    from modal_burst.layout import run_key
    from modal_burst.transfer import volume_json

    try:
        ledger = volume_json(volume, f"{run_key(run_id)}/ledger.json")
    except RunStateError as exc:
        msg = f"run {run_id}: {exc}"
        raise RunStateError(msg) from None
    return {"run_id": run_id, "exists": ledger is not None, **(ledger or {})}


def _volume(args: argparse.Namespace | None = None) -> Any:
    """The burst volume, or with --volume NAME [--volume-version N] another existing one
    (e.g. `claidex-data-v1` after a migration), never created."""
    name = getattr(args, "volume", None)
    if name is None:
        return named_volume(Settings().modal_volume)
    return named_volume(name, version=args.volume_version, create=False)


def _upload(args: argparse.Namespace) -> int:
    from modal_burst.transfer import upload_dataset

    name = args.data_name or Settings().modal_data_name
    files = upload_dataset(_volume(), Path(args.directory), name)
    print(f"uploaded {len(files)} table(s) to dataset {name!r}: {', '.join(files)}")
    return 0


def _runs_on_s3(command: str) -> None:
    """download and prune work on the volume; with CLAIDEX_MODAL_RUN_ROOT on S3 there is
    nothing of a run there: one line saying where the runs are instead."""
    root = Settings().modal_run_root
    if is_url(root):
        msg = (
            f"the burst's runs are on S3 ({root}), not on the volume: {command} does not apply "
            "(read a run there: `claidex report|compare|explain s3://.../RUN`; expire old "
            "runs with the bucket's lifecycle rules)"
        )
        raise InputError(msg)


def _download(args: argparse.Namespace) -> int:
    from modal_burst.transfer import download_run

    _runs_on_s3("download")
    files = download_run(_volume(args), args.run, Path(args.directory))
    print(f"downloaded {', '.join(files)} to {args.directory}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from modal_burst.prune import prune_runs

    _runs_on_s3("prune")
    actions = prune_runs(_volume(), keep=args.keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for act in actions:
        if act.action == "pruned":
            print(f"run {act.run_id}: {verb} {act.files} batch file(s)")
        elif act.action == "unreadable":
            print(f"run {act.run_id}: skipped, its ledger cannot be read ({act.detail})")
    kept = [a for a in actions if a.action != "pruned"]
    by_reason = {r: sum(1 for a in kept if a.action == r) for r in sorted({a.action for a in kept})}
    shown = ", ".join(f"{n} {reason}" for reason, n in by_reason.items()) or "none"
    print(f"{len(actions) - len(kept)} run(s) pruned; left alone: {shown}")
    return 0


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        msg = "must be 0 or more"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        msg = "must be 1 or more"
        raise argparse.ArgumentTypeError(msg)
    return value


def run_id_arg(text: str) -> str:
    try:
        return checked_run_id(text)
    except RunStateError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modal_burst", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--deployed", action="store_true", help="use the deployed app's functions")
        p.add_argument("--quiet", action="store_true", help="no progress bar or build output")

    def publish_flags(p: argparse.ArgumentParser, never: str, always: str) -> None:
        choice = p.add_mutually_exclusive_group()
        choice.add_argument("--no-publish", action="store_true", help=never)
        choice.add_argument("--publish", action="store_true", help=always)

    def other_volume(p: argparse.ArgumentParser) -> None:
        p.add_argument("--volume", default=None, help="read another existing volume by name")
        p.add_argument(
            "--volume-version",
            type=int,
            choices=[1, 2],
            default=VOLUME_VERSION,
            help="that volume's version (1: a volume from before the v2 migration)",
        )

    full = sub.add_parser("full", help="full recompute in Modal containers")
    full.add_argument(
        "--data-name",
        help="dataset on the volume, or an s3:// URL (default CLAIDEX_MODAL_DATA_NAME)",
    )
    full.add_argument("--source", choices=["volume", "postgres"], default="volume")
    full.add_argument("--batch-size", type=int, default=None)
    full.add_argument("--shards", type=int, default=None, help=SHARDS_HELP)
    full.add_argument(
        "--max-batches", type=positive, default=None, help="smoke run: first K batches"
    )
    full.add_argument("--run-id", type=run_id_arg, default=None, help="an existing run resumes")
    publish_flags(full, "never publish", "publish (an existing --run-id: whatever it chose)")
    add_graph_flag(full)
    remote(full)
    full.set_defaults(func=_full)

    resume = sub.add_parser("resume", help="score only the missing batches, then merge")
    resume.add_argument("run", type=run_id_arg)
    resume.add_argument("--max-batches", type=positive, default=None)
    publish_flags(resume, "never publish", "publish, whatever the run chose")
    remote(resume)
    resume.set_defaults(func=_resume)

    merge = sub.add_parser(
        "merge", help="merge only (batches finished, merge did not); publishes as the run chose"
    )
    merge.add_argument("run", type=run_id_arg)
    publish_flags(merge, "never publish", "publish a --no-publish run")
    merge.add_argument(
        "--accept",
        metavar="REASON",
        default=None,
        help="publish a run its checks blocked; the reason and who accepted it are recorded",
    )
    remote(merge)
    merge.set_defaults(func=_merge)

    status = sub.add_parser("status", help="a run's ledger on the volume")
    status.add_argument("run", type=run_id_arg)
    remote(status)
    other_volume(status)
    status.set_defaults(func=_status)

    upload = sub.add_parser("upload", help="a dataset directory to the volume")
    upload.add_argument("directory")
    upload.add_argument("--data-name", default=None)
    upload.set_defaults(func=_upload)

    download = sub.add_parser("download", help="a run's results from the volume")
    download.add_argument("run", type=run_id_arg)
    download.add_argument("directory")
    other_volume(download)
    download.set_defaults(func=_download)

    prune = sub.add_parser(
        "prune", help="remove old published runs' chunks and batch slices from the volume"
    )
    prune.add_argument(
        "--keep", type=non_negative, default=DEFAULT_KEEP, help="newest runs left whole"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    prune.set_defaults(func=_prune)

    check = sub.add_parser(
        "check",
        help="what a burst would use (image, names, secrets' keys, source, limits) and, with "
        "credentials, whether the account has it; works without credentials",
    )
    check.set_defaults(func=_check)
    return parser


def _check(_: argparse.Namespace) -> int:
    """Modal reads ~/.modal.toml when first imported: a broken one is one line, not a trace."""
    from modal_burst.credentials import modal_config

    modal_config()
    from modal_burst.check import check_command

    return check_command()


def main(argv: list[str] | None = None) -> int:
    """Credentials first: without them every command stops here, before any network call
    (and before `modal` is imported anywhere else, so a broken ~/.modal.toml is one line)."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "check":  # with or without credentials: it says which
        return run_command(args)
    try:
        require_credentials()
    except ModalNotConfiguredError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from modal.exception import AuthError
    from modal.exception import Error as ModalError

    try:
        return run_command(args)
    except ModalNotConfiguredError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except AuthError:
        print(f"error: {TOKEN_REJECTED}", file=sys.stderr)
    except (ModalError, ConnectionError) as exc:
        print(f"error: Modal: {one_line(exc)}{volume_hint(exc)}", file=sys.stderr)
    return 2


def volume_hint(exc: BaseException) -> str:
    """For Modal's 'exists but has version v1' (an older claidex-data): how to move to v2,
    and that the deployed app must follow (its functions mount the volume by id)."""
    if "has version v1" not in str(exc):
        return ""
    return f"; {migration_steps(Settings().modal_volume)}"
