"""The `claidex` command: generate sample data, run the local engine, inspect and resume runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scoring.config import load_settings
from scoring.errors import ClaidexError


def _generate(args: argparse.Namespace) -> int:
    from claidex.sample_data import generate

    summary = generate(Path(args.dir), providers=args.providers, seed=args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from claidex.local_engine import run_local
    from claidex.summary import print_report
    from scoring.rundir import read_json

    cfg = load_settings(
        batch_size=args.batch_size, workers=args.workers, as_of_year=args.as_of_year
    )
    paths = run_local(
        Path(args.data),
        cfg,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        show_progress=not args.quiet,
    )
    print_report(read_json(paths.report))
    print(f"scores: {paths.scores}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from claidex.local_engine import resolve_run
    from claidex.summary import print_status
    from scoring.ledger import RunLedger

    summary = RunLedger(resolve_run(args.run, load_settings())).summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_status(summary)
    return 1 if summary.get("status") == "failed" else 0


def _resume(args: argparse.Namespace) -> int:
    from claidex.local_engine import resolve_run, resume_local
    from claidex.summary import print_report
    from scoring.rundir import read_json

    cfg = load_settings(workers=args.workers)
    paths = resume_local(resolve_run(args.run, cfg), cfg.workers, show_progress=not args.quiet)
    print_report(read_json(paths.report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from claidex.sample_data import generate

    data = Path(args.dir)
    if not (data / "payments_combined.parquet").exists():
        print(f"generating {args.providers:,} sample providers into {data} ...")
        generate(data, providers=args.providers, seed=args.seed)
    args.data, args.run_dir, args.as_of_year = str(data), None, None
    return _run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="claidex", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a CMS-like sample dataset directory")
    gen.add_argument("dir")
    gen.add_argument("--providers", type=int, default=20_000)
    gen.add_argument("--seed", type=int, default=7)
    gen.set_defaults(func=_generate)

    def engine_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch-size", type=int, default=None, help="NPIs per batch")
        p.add_argument("--workers", type=int, default=None, help="worker processes")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    run = sub.add_parser("run", help="full recompute on the local engine")
    run.add_argument("--data", required=True, help="dataset directory (SPEC §3)")
    run.add_argument("--run-dir", default=None, help="run directory (default runs/<run id>)")
    run.add_argument("--as-of-year", type=int, default=None, help="window end year T")
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

    resume = sub.add_parser("resume", help="score missing batches of a run, then merge")
    resume.add_argument("run", help="run id or run directory")
    resume.add_argument("--workers", type=int, default=None)
    resume.add_argument("--quiet", action="store_true")
    resume.set_defaults(func=_resume)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ClaidexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
