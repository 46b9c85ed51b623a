"""The `claidex` command: generate sample data, run the local engine, inspect and resume runs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import polars as pl
import psycopg

from claidex.command_line import BLOCKED_EXIT, add_graph_flag, run_command
from scoring.config import SHARDS_HELP, load_settings
from scoring.db.connection import required_database_url
from scoring.errors import ClaidexError, InputError
from scoring.inputs.dataset import data_source
from scoring.runs.ledger import RunLedger
from scoring.runs.store import REPORT, REPORT_HTML, SCORES, RunPaths, run_store


def _generate(args: argparse.Namespace) -> int:
    from claidex.dev.sample import PART_NPIS, generate

    summary = generate(
        Path(args.dir),
        providers=args.providers,
        seed=args.seed,
        layout=args.layout,
        part_npis=PART_NPIS if args.part_npis is None else args.part_npis,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _publish_target(args: argparse.Namespace) -> str | None:
    """Publish when a database is configured, unless --no-publish."""
    from scoring.db.connection import database_url

    return None if getattr(args, "no_publish", False) else database_url()


def _run(args: argparse.Namespace) -> int:
    from claidex.local_engine import run_local, run_local_from_postgres
    from claidex.summary import print_report

    cfg = load_settings(
        batch_size=args.batch_size,
        shards=args.shards,
        workers=args.workers,
        as_of_year=args.as_of_year,
        graph_mode=getattr(args, "graph", None),
    )
    run_dir = args.run_dir or None  # a directory or an s3:// URL
    if args.source == "postgres":
        paths = run_local_from_postgres(
            required_database_url(),
            cfg,
            run_dir=run_dir,
            show_progress=not args.quiet,
            publish_to=_publish_target(args),
        )
    else:
        if not args.data:
            msg = "give --data DIR or --source postgres"
            raise InputError(msg)
        paths = run_local(
            data_source(args.data),
            cfg,
            run_dir=run_dir,
            show_progress=not args.quiet,
            database_url=_publish_target(args),
        )
    store = run_store(paths)
    print_report(store.read_json(REPORT))
    print(f"scores: {paths.where(SCORES)}")
    if store.exists(REPORT_HTML):
        print(f"report: {paths.where(REPORT_HTML)} (claidex explain NPI --run {paths.where()})")
    status = RunLedger(paths).read().get("status")
    print(f"status: {status}")
    return _held(paths)


def _held(paths: RunPaths) -> int:
    """Exit 3 with the one line naming the failing checks, for a run they blocked; else 0."""
    state = RunLedger(paths).read()
    if state.get("status") != "blocked":
        return 0
    print(f"error: {state.get('blocked')}", file=sys.stderr)
    return BLOCKED_EXIT


def _db(args: argparse.Namespace) -> int:
    from scoring.db.connection import connect, describe
    from scoring.db.load import load_dataset
    from scoring.db.schema import init_schema

    url = required_database_url()
    with connect(url) as conn:
        created = init_schema(conn, lock_timeout_s=load_settings().db_lock_timeout)
        if args.db_command == "init":
            done = ", ".join(created) or "nothing to create"
            print(f"schema ready at {describe(url)}: {done}")
            return 0
        counts = load_dataset(conn, Path(args.dir), replace=args.replace)
    print(json.dumps(counts, indent=2))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from claidex.graph_load import graph_command

    return graph_command(args)


def _export(args: argparse.Namespace) -> int:
    from scoring.db.connection import connect
    from scoring.db.export import export_dataset

    with connect(required_database_url()) as conn:
        counts = export_dataset(conn, Path(args.to), with_graph=True)
    print(json.dumps(counts, indent=2))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from claidex.local_engine import resolve_run
    from scoring.stages.finish import publish_checked

    paths = resolve_run(args.run, load_settings())
    outcome = publish_checked(
        paths, required_database_url(), accept=args.accept, force=args.force, outage_window=0
    )
    if outcome["status"] == "blocked":
        return _held(paths)
    accepted = f" (accepted: {args.accept.strip()})" if args.accept else ""
    print(f"published run {paths.run_id}: {outcome['rows']:,} rows written{accepted}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from claidex.local_engine import resolve_run
    from claidex.summary import print_status
    from scoring.runs.ledger import RunLedger

    summary = RunLedger(resolve_run(args.run, load_settings())).summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_status(summary)
    return {"failed": 1, "blocked": BLOCKED_EXIT}.get(summary.get("status"), 0)


def _resume(args: argparse.Namespace) -> int:
    from claidex.local_engine import resolve_run, resume_local
    from claidex.summary import print_report

    cfg = load_settings(workers=args.workers)
    paths = resume_local(
        resolve_run(args.run, cfg),
        cfg.workers,
        show_progress=not args.quiet,
        database_url=_publish_target(args),
    )
    print_report(run_store(paths).read_json(REPORT))
    return _held(paths)


def _report(args: argparse.Namespace) -> int:
    import webbrowser

    from claidex.local_engine import resolve_run
    from scoring.stages.merge import write_run_report

    paths = resolve_run(args.run, load_settings())
    store = run_store(paths)
    if not store.exists(SCORES):
        msg = f"{paths.where()}: no scores.parquet yet (the run has not merged); `claidex status`"
        raise InputError(msg)
    earlier = store.read_json(REPORT) if store.exists(REPORT) else None
    write_run_report(paths, store.read_frame(SCORES), earlier)
    RunLedger(paths).update(report_error=None)
    print(f"report: {paths.where(REPORT_HTML)}")
    if args.open and paths.url is None:
        webbrowser.open(paths.report_html.resolve().as_uri())
    return 0


def _json_safe(value: object) -> object:
    """NaN and infinities as text: `--json` is read by other programs (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _compare(args: argparse.Namespace) -> int:
    """Exit 1 means "different" to CI: every failure, expected or not, is exit 2 instead."""
    try:
        return _compare_sides(args)
    except (ClaidexError, OSError, pl.exceptions.PolarsError, psycopg.Error):
        raise
    except Exception as exc:
        msg = f"compare failed: {type(exc).__name__}: {exc}"
        raise InputError(msg) from exc


def _compare_sides(args: argparse.Namespace) -> int:
    from rich.console import Console

    from claidex.compare_view import (
        PUBLISHED,
        load_pair,
        print_comparison,
        write_comparison_html,
    )
    from scoring.reports.compare import compare_scores

    sides = [*args.sides, *([PUBLISHED] if args.published else [])]
    if len(sides) != 2:
        msg = "compare takes two sides: A B, or A --published"
        raise InputError(msg)
    if not math.isfinite(args.tol) or args.tol < 0 or args.top < 0:  # before a long COPY
        msg = f"--tol {args.tol} / --top {args.top}: a finite tolerance >= 0, a count >= 0"
        raise InputError(msg)
    a, b = load_pair(sides[0], sides[1], load_settings())
    result = compare_scores(a, b, tol=args.tol, top=args.top)
    names = (sides[0], sides[1])
    if args.json:
        print(json.dumps(_json_safe(result), indent=2, default=str))
    else:
        print_comparison(result, names, Console())
    if args.html:
        write_comparison_html(result, names, Path(args.html))
    return 0 if result["within_tolerance"] else 1


def _explain(args: argparse.Namespace) -> int:
    from rich.console import Console

    from claidex.explain_view import explain, print_explanation
    from claidex.local_engine import latest_run, resolve_run

    cfg = load_settings()
    paths = resolve_run(args.run, cfg) if args.run else latest_run(cfg)
    result = explain(paths, args.npi)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_explanation(result, Console())
    return 0 if all(check["equal"] for check in result["checks"].values()) else 1


def _demo(args: argparse.Namespace) -> int:
    from claidex.dev.sample import generate

    data = Path(args.dir)
    if not (data / "payments_combined.parquet").exists():
        print(f"generating {args.providers:,} sample providers into {data} ...")
        generate(data, providers=args.providers, seed=args.seed)
    args.data, args.run_dir, args.as_of_year = str(data), None, None
    args.source, args.no_publish = "dataset", True  # the demo needs no server
    return _run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claidex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a CMS-like sample dataset directory")
    gen.add_argument("dir")
    gen.add_argument("--providers", type=int, default=20_000)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument(
        "--layout",
        choices=["lines", "production"],
        default="lines",
        help="'production': only what the production tables can hold (for `claidex db load`)",
    )
    gen.add_argument(
        "--part-npis",
        type=int,
        default=None,
        help="NPIs per payments part (default 500,000): more NPIs than this write "
        "payments_combined/ as parts, "
        "drawn and written one at a time, so memory follows the part, not the dataset",
    )
    gen.set_defaults(func=_generate)

    def engine_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=int, default=None, help="NPIs per batch")
        p.add_argument("--shards", type=int, default=None, help=SHARDS_HELP)
        p.add_argument("--workers", type=int, default=None, help="worker processes")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="full recompute on the local engine")
    run.add_argument("--data", help="dataset directory (SPEC §3)")
    run.add_argument(
        "--source",
        choices=["dataset", "postgres"],
        default="dataset",
        help="read the inputs from --data (default) or from Postgres",
    )
    run.add_argument(
        "--no-publish",
        action="store_true",
        help="keep the scores in the run directory even if a database is set",
    )
    run.add_argument("--run-dir", default=None, help="run directory (default runs/<run id>)")
    run.add_argument("--as-of-year", type=int, default=None, help="window end year T")
    add_graph_flag(run)
    engine_flags(run)
    run.set_defaults(func=_run)

    demo = sub.add_parser("demo", help="generate sample data (once) and run the local engine")
    demo.add_argument("--dir", default="sample", help="where the sample dataset lives")
    demo.add_argument("--providers", type=int, default=50_000)
    demo.add_argument("--seed", type=int, default=7)
    engine_flags(demo)
    demo.set_defaults(func=_demo)

    status = sub.add_parser("status", help="show a run's ledger")
    status.add_argument("run", help="run id or run directory")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    report = sub.add_parser("report", help="(re)write a run's report.json and report.html")
    report.add_argument("run", help="run id or run directory")
    report.add_argument("--open", action="store_true", help="open report.html in a browser")
    report.set_defaults(func=_report)

    compare = sub.add_parser(
        "compare", help="two sets of scores: exit 0 only when every column is within --tol"
    )
    compare.add_argument(
        "sides", nargs="*", metavar="A B", help="run directories, run ids or scores.parquet files"
    )
    compare.add_argument(
        "--published", action="store_true", help="B is the live provider_risk_scores table"
    )
    compare.add_argument("--tol", type=float, default=0.0, help="largest allowed abs difference")
    compare.add_argument("--top", type=int, default=10, help="movers to list")
    compare.add_argument("--json", action="store_true")
    compare.add_argument("--html", default=None, help="also write the comparison as HTML here")
    compare.set_defaults(func=_compare)

    explain_cmd = sub.add_parser("explain", help="why one provider has its score")
    explain_cmd.add_argument("npi")
    explain_cmd.add_argument("--run", default=None, help="run id or directory (default: latest)")
    explain_cmd.add_argument("--json", action="store_true")
    explain_cmd.set_defaults(func=_explain)

    db = sub.add_parser("db", help="Postgres schema and data (DATABASE_URL or PG* variables)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("init", help="create or update the schema (idempotent)")
    db_load = db_sub.add_parser("load", help="load a dataset directory into the source tables")
    db_load.add_argument("dir")
    db_load.add_argument(
        "--replace", action="store_true", help="replace source tables that hold rows already"
    )
    db.set_defaults(func=_db)

    export = sub.add_parser("export", help="write a dataset directory from Postgres")
    export.add_argument("--to", required=True, help="target dataset directory")
    export.set_defaults(func=_export)

    graph = sub.add_parser("graph", help="the ownership graph in Neo4j (NEO4J_URI, ...)")
    graph_sub = graph.add_subparsers(dest="graph_command", required=True)
    graph_load = graph_sub.add_parser("load", help="write the graph into Neo4j (idempotent)")
    graph_load.add_argument("--data", help="dataset directory (or --source postgres)")
    graph_load.add_argument("--source", choices=["dataset", "postgres"], default="dataset")
    graph_load.add_argument("--quiet", action="store_true", help="no progress bar")
    graph_sub.add_parser("counts", help="node and relationship counts")
    graph.set_defaults(func=_graph)

    publish = sub.add_parser("publish", help="(re-)publish a finished run to Postgres")
    publish.add_argument("run", help="run id or run directory")
    publish.add_argument(
        "--force", action="store_true", help="publish even over a newer published full run"
    )
    publish.add_argument(
        "--accept",
        metavar="REASON",
        default=None,
        help="publish a run its checks blocked; the reason and who accepted it are recorded",
    )
    publish.set_defaults(func=_publish)

    resume = sub.add_parser("resume", help="score missing batches of a run, then merge")
    resume.add_argument("run", help="run id or run directory")
    resume.add_argument("--workers", type=int, default=None)
    resume.add_argument("--quiet", action="store_true")
    resume.add_argument("--no-publish", action="store_true")
    resume.set_defaults(func=_resume)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
