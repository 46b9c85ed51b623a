"""Seed-scale timings of what people look at: report.html, `compare`, `explain`.

    .venv/bin/python ops/bench/bench_views.py [--providers 1788105] [--data /tmp/claidex-seed]

Generates the dataset once (reused when present), runs it twice with `claidex run` (A, then
B), publishes A to a private Postgres (so B's report has a previous published run to
compare, and `compare --published` has a table), then times `claidex report B`,
`claidex compare A B`, `claidex compare B --published` and `claidex explain` of a few NPIs,
each as its own process. Appends the figures, with machine and date, to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_local import append_section, machine, measured  # noqa: E402

from tests.devservices import PrivatePostgres  # noqa: E402

CLAIDEX = [sys.executable, "-m", "claidex.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=1_788_105)
    parser.add_argument("--data", default="/tmp/claidex-seed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "providers.parquet").exists():
        measured([*CLAIDEX, "generate", str(data), "--providers", str(args.providers)])
    runs = Path(tempfile.mkdtemp(prefix="claidex-views-"))
    server = PrivatePostgres().start()
    os.environ["DATABASE_URL"] = server.url
    os.environ["CLAIDEX_RUN_ROOT"] = str(runs)
    lines = []
    try:
        measured([*CLAIDEX, "db", "init"])
        run = [*CLAIDEX, "run", "--data", str(data), "--workers", str(args.workers), "--quiet"]
        seconds_a, gb_a = measured([*run, "--run-dir", str(runs / "a"), "--no-publish"])
        publish_s, _ = measured([*CLAIDEX, "publish", str(runs / "a")])
        seconds_b, gb_b = measured([*run, "--run-dir", str(runs / "b"), "--no-publish"])
        report_s, report_gb = measured([*CLAIDEX, "report", str(runs / "b")])
        compare_s, compare_gb = measured([*CLAIDEX, "compare", str(runs / "a"), str(runs / "b")])
        published_s, published_gb = measured([*CLAIDEX, "compare", str(runs / "b"), "--published"])
        scores = pl.read_parquet(runs / "b" / "scores.parquet", columns=["npi", "snf_entity_id"])
        picks = [scores["npi"][0], scores["npi"][scores.height // 2]]
        picks.append(scores.filter(pl.col("snf_entity_id").is_not_null())["npi"][0])
        explain = [
            measured([*CLAIDEX, "explain", n, "--run", str(runs / "b"), "--json"]) for n in picks
        ]
        html_kb = (runs / "b" / "report.html").stat().st_size / 1e3
        json_kb = (runs / "b" / "report.json").stat().st_size / 1e3
        rows = [
            ("`claidex run` A (writes report.json + report.html at merge)", seconds_a, gb_a),
            ("`claidex publish` A", publish_s, None),
            ("`claidex run` B (its report compares with published A)", seconds_b, gb_b),
            ("`claidex report` B (both files again, previous run joined)", report_s, report_gb),
            ("`claidex compare` A B", compare_s, compare_gb),
            (f"`claidex compare` B `--published` ({scores.height:,} rows)", published_s,
             published_gb),
            *[(f"`claidex explain {n}`", s, gb) for n, (s, gb) in zip(picks, explain, strict=True)],
        ]  # fmt: skip
        lines = [
            f"Machine: {machine()}",
            f"Dataset: {args.data} ({scores.height:,} providers scored), --workers {args.workers}",
            "",
            "| step | wall s | peak RSS GB |",
            "|---|---|---|",
            *[
                f"| {name} | {s:.1f} | {'' if gb is None else f'{gb:.2f}'} |"
                for name, s, gb in rows
            ],
            "",
            f"report.html {html_kb:.0f} kB, report.json {json_kb:.0f} kB.",
            "",
        ]
    finally:
        server.stop()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"\n## Report, compare, explain at seed scale ({when}, `ops/bench/bench_views.py`)"
    append_section(args.out, [title, "", *lines])


if __name__ == "__main__":
    main()
