"""Issue 23's benchmark: a seed-scale `claidex run` against a baseline tree and the floor.

    .venv/bin/python ops/bench/bench_speed.py --data /tmp/claidex-seed [--baseline d26296c]
        [--rounds 3] [--out docs/BENCHMARKS.md]

In one session, alternating round by round: this tree's `claidex run`, the baseline's (a git
worktree of `--baseline`, run with this venv), and the floor: one polars pass reading the
payments and summing them to provider-years, the work no engine can skip. Reports best and
median wall time, the peak RSS of the largest process, our run as a multiple of the floor,
and the speed-up over the baseline; appends the figures with machine and date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local import append_section, machine, measured

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FLOOR = (
    "import sys, polars as pl; from pathlib import Path; "
    "from scoring.inputs.contract import table_files; "
    "files = table_files(Path(sys.argv[1]), 'payments_combined'); "
    "pl.scan_parquet(files).group_by('npi', 'year').agg(pl.col('payments').sum(), "
    "pl.col('claims').sum(), pl.col('beneficiaries').sum()).collect()"
)


def baseline_tree(rev: str) -> Path:
    """A worktree of `rev` beside the checkout's temp space (kept between runs)."""
    tree = Path(tempfile.gettempdir()) / f"claidex-baseline-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True)
    return tree


def run_command(data: Path, run_dir: Path) -> list[str]:
    code = "import sys; from claidex.cli import main; sys.exit(main())"
    return [PY, "-c", code, "run", "--data", str(data), "--run-dir", str(run_dir), "--quiet"]


def measured_in(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """`measured` in the tree `cwd`, its packages first on the path."""
    return measured(cmd, cwd=cwd, env={**os.environ, "PYTHONPATH": str(cwd)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/tmp/claidex-seed"))
    parser.add_argument("--baseline", default="d26296c")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    base = baseline_tree(args.baseline)
    scratch = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "baseline": [], "floor": []}
    try:
        for round_ in range(args.rounds):
            for name, tree in (("ours", ROOT), ("baseline", base)):
                run_dir = scratch / f"{name}-{round_}"
                results[name].append(measured_in(run_command(args.data, run_dir), tree))
                shutil.rmtree(run_dir, ignore_errors=True)
            results["floor"].append(measured_in([PY, "-c", FLOOR, str(args.data)], ROOT))
            print(round_, {k: v[-1] for k, v in results.items()}, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    walls = {k: [w for w, _ in v] for k, v in results.items()}
    best = {k: min(v) for k, v in walls.items()}
    median = {k: statistics.median(v) for k, v in walls.items()}
    rss = {k: max(r for _, r in v) for k, v in results.items()}
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## Issue 23 speed: seed run against {args.baseline} and the floor — {when}",
        "",
        f"`ops/bench/bench_speed.py --data {args.data} --baseline {args.baseline} --rounds "
        f"{args.rounds}` on {machine()}; alternating rounds, `claidex run` (default settings).",
        "",
        "| | best s | median s | peak RSS GB (largest process) |",
        "|---|---|---|---|",
        *(
            f"| {k} | {best[k]:.1f} | {median[k]:.1f} | {rss[k]:.2f} |"
            for k in ("ours", "baseline", "floor")
        ),
        "",
        f"- ours / floor: {median['ours'] / median['floor']:.1f}x (median), "
        f"{best['ours'] / best['floor']:.1f}x (best)",
        f"- speed-up over {args.baseline}: {median['baseline'] / median['ours']:.2f}x (median)",
        f"- every round: {walls}",
        "",
    ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
