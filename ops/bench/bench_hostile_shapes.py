"""Issue 26: the input shapes that were quadratic, measured.

    .venv/bin/python ops/bench/bench_hostile_shapes.py [--providers 20000]

1. One owner of 1k, 5k and 20k SNFs (tests/big_owner.py) on a generated dataset, its SNFs
   matching no provider and matching providers: wall time and peak RSS of `claidex run`
   (one process: --workers 1), against the same data without the owner.
2. The payments table as 3,000 parts against the same rows in one file: wall time of
   `claidex run`, one shard and seven.

Each run is a fresh process; peak RSS is the largest of it and its children
(getrusage). Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_local import append_section, machine  # noqa: E402

from claidex.dev.sample import generate  # noqa: E402
from tests.big_owner import add_big_owner  # noqa: E402
from tests.builders import payments_as_parts  # noqa: E402

RUN = """
import json, resource, sys
from claidex.cli import main
code = main(["run", "--data", sys.argv[1], "--run-dir", sys.argv[2], "--quiet", *sys.argv[3:]])
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"code": code, "peak_mb": peak / 1024}))
"""


def measured(data: Path, run: Path, *flags: str) -> tuple[float, float]:
    """(seconds, peak MB) of one `claidex run` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(data), str(run), *flags],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed: {data}\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--providers", type=int, default=20_000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="claidex-shapes-"))
    base = scratch / "base"
    generate(base, providers=args.providers, seed=13)
    one = ("--workers", "1")
    owner_rows = [("none", "-", *measured(base, scratch / "r-base", *one))]
    shapes = (("no", False, False), ("yes", True, False), ("yes, via a company each", True, True))
    for snfs in (1_000, 5_000, 20_000):
        for label, matching, companies in shapes:
            data = scratch / f"owner-{snfs}-{matching}-{companies}"
            shutil.copytree(base, data)
            add_big_owner(data, snfs, matching=matching, seed=1, companies=companies)
            seconds, peak = measured(data, scratch / f"r-{snfs}-{matching}-{companies}", *one)
            owner_rows.append((f"{snfs:,}", label, seconds, peak))
            print(owner_rows[-1], flush=True)
            shutil.rmtree(data)
    parted = scratch / "parted"
    shutil.copytree(base, parted)
    payments_as_parts(parted, 3_000)
    part_rows = []
    for shards in ("1", "7"):
        flags = ("--shards", shards)
        whole = measured(base, scratch / f"p-one-{shards}", *flags)
        many = measured(parted, scratch / f"p-many-{shards}", *flags)
        part_rows.append((shards, whole[0], many[0]))
        print(part_rows[-1], flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Issue 26: hostile input shapes — {stamp}\n",
        f"- Machine: {machine()}",
        f"- Data: generated, {args.providers:,} providers (seed 13); each run a fresh "
        "`claidex run` process (`--workers 1` for the owner rows); peak RSS of the process "
        "and its children",
        "- Command: `.venv/bin/python ops/bench/bench_hostile_shapes.py`",
        "",
        "One owner of N SNFs (tests/big_owner.py; 'matching': each SNF named as a provider "
        "is, so that provider matches it and is a chain provider of all N). Before the fix "
        "the (SNF, group member) table grew with N²: 5,000 SNFs took 5.9 GB and 28 s, 20,000 "
        "ended in an allocation failure.",
        "",
        "| owner's SNFs | SNFs match providers | s | peak MB |",
        "|---:|---|---:|---:|",
        *[f"| {n} | {m} | {s:.1f} | {p:,.0f} |" for n, m, s, p in owner_rows],
        "",
        "The payments table as 3,000 parts against the same rows in one file (before: 3,000 "
        "parts took 94-161 s at one shard; the read of a row range concatenated one scan per "
        "part):",
        "",
        "| shards | one file s | 3,000 parts s | parts / file |",
        "|---:|---:|---:|---:|",
        *[f"| {sh} | {w:.1f} | {m:.1f} | {m / w:.2f}x |" for sh, w, m in part_rows],
        "",
    ]
    append_section(args.out, lines)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
