"""Issue 13 benchmark: the sharded prepare against the code before it, at seed scale.

    .venv/bin/python ops/bench/bench_shards.py --data /tmp/claidex-seed --before 9482c7d \
        [--shards 16] [--workers 2] [--repeat 3] [--no-tasks]

1. `claidex run` of the code before the issue (a git worktree of --before) and of this
   tree with --shards, side by side on the same data: wall time and the peak RSS of the
   largest process (wait4 reports the maximum over the process and its reaped children).
2. Every stage task in its own process, one after the other: per task wall time (measured
   inside the task, without interpreter start-up) and peak RSS. The modelled burst (one
   container per task, all of a stage at once) is the sum over stages of the slowest task,
   plus the single steps (reduce, combine, merge).
Appends the figures, with machine and date, to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local import append_section, machine

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python")


def measured(
    cmd: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """(wall s, peak RSS GB of the largest process, stdout) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 1e6, out


TASK = (
    "import sys, time; from pathlib import Path; from scoring.runs.store import RunPaths; "
    "from scoring.stages.stage_tasks import run_stage_task; p = RunPaths(Path(sys.argv[1])); "
    "t = time.perf_counter(); run_stage_task(p, sys.argv[2], int(sys.argv[3])); "
    "print(time.perf_counter() - t)"
)
SINGLE = {
    "plan": (
        "from scoring.runs.ledger import RunLedger; "
        "from scoring.runs.plan import run_fingerprint, write_plan; "
        "p.clear(); RunLedger(p).start(kind='full', source=str(d), "
        "fingerprint=run_fingerprint(d, cfg)); "
        "write_plan(p, d, cfg, RunLedger(p).read()['input_fingerprint'])"
    ),
    "reduce": "from scoring.runs.ledger import RunLedger; "
    "from scoring.stages.reduce import reduce; "
    "reduce(p, RunLedger(p))",
    "combine": "from scoring.stages.combine import combine; combine(p).save(p); "
    "from scoring.runs.ledger import RunLedger; RunLedger(p).set_status('scoring')",
    # the scores final (report.json written): what the burst's critical path waits for
    "merge": "from scoring.stages.merge import merge_and_calibrate; "
    "merge_and_calibrate(p, draw=False)",
    # report.html, drawn after the scores are out (publish does not wait for it)
    "draw": "from scoring.stages.merge import draw_run_report; draw_run_report(p)",
}
OFF_CRITICAL_PATH = ("draw",)
SINGLE_HEAD = (
    "import sys, time; from pathlib import Path; from scoring.runs.store import RunPaths; "
    "from scoring.config import Settings; p = RunPaths(Path(sys.argv[1])); d = Path(sys.argv[2]); "
    "cfg = Settings(shards=int(sys.argv[3]), batch_size=int(sys.argv[4])); "
    "t = time.perf_counter(); "
)
BATCH = (
    "import sys, time; from pathlib import Path; from scoring.runs.store import RunPaths; "
    "from scoring.stages.score_batch import score_batch; p = RunPaths(Path(sys.argv[1])); "
    "t = time.perf_counter(); score_batch(p, int(sys.argv[2])); print(time.perf_counter() - t)"
)


def single(step: str, run: Path, data: Path, shards: int, batch: int) -> tuple[float, float]:
    code = SINGLE_HEAD + SINGLE[step] + "; print(time.perf_counter() - t)"
    _, rss, out = measured([PY, "-c", code, str(run), str(data), str(shards), str(batch)], ROOT)
    return float(out.strip().splitlines()[-1]), rss


def per_task(run: Path, data: Path, shards: int, batch: int) -> list[str]:
    """Every task in its own process; the stage table and the modelled burst."""
    single("plan", run, data, shards, batch)
    rows, critical = [], 0.0
    env = {**os.environ, "POLARS_MAX_THREADS": "2"}
    for stage in (
        "ingest",
        "count",
        "reduce",
        "aggregate",
        "peer_stats",
        "combine",
        "score",
        "merge",
        "draw",
    ):
        if stage in SINGLE:
            seconds, rss = single(stage, run, data, shards, batch)
            times, peaks = [seconds], [rss]
        else:
            times, peaks = [], []
            total = shards
            if stage == "score":
                import json

                total = json.loads((run / "run.json").read_text())["batches_total"]
            for i in range(total):
                code, args = (BATCH, [str(i)]) if stage == "score" else (TASK, [stage, str(i)])
                _, rss, out = measured([PY, "-c", code, str(run), *args], ROOT, env)
                times.append(float(out.strip().splitlines()[-1]))
                peaks.append(rss)
        critical += 0.0 if stage in OFF_CRITICAL_PATH else max(times)
        name = f"{stage} (off the critical path)" if stage in OFF_CRITICAL_PATH else stage
        rows.append(
            f"| {name} | {len(times)} | {max(times):.2f} | {sum(times) / len(times):.2f} | "
            f"{sum(times):.1f} | {max(peaks):.2f} |"
        )
    return [
        "| stage | tasks | slowest task s | mean task s | sum s | largest task peak RSS GB |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Modelled burst (one container per task, sum over stages of the slowest task): "
        f"**{critical:.1f} s**.",
    ]


def _walls(runs: list[tuple[float, float, str]]) -> str:
    return ", ".join(f"{r[0]:.1f}" for r in runs)


def _median(runs: list[tuple[float, float, str]]) -> float:
    return statistics.median(r[0] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/tmp/claidex-seed")
    parser.add_argument("--before", default="9482c7d", help="commit before the issue")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--runs", default="/tmp/claidex-bench-shards")
    parser.add_argument(
        "--repeat", type=int, default=1, help="side-by-side pairs, alternating (machine noise)"
    )
    parser.add_argument("--no-tasks", action="store_true", help="skip the per-task section")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    data, runs = Path(args.data).resolve(), Path(args.runs)
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    before = runs / "before-tree"
    subprocess.run(
        ["git", "worktree", "add", "-f", str(before), args.before],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        common = ["run", "--data", str(data), "--quiet", "--workers", str(args.workers)]
        common += ["--batch-size", str(args.batch_size)]
        env = {**os.environ, "PYTHONPATH": str(before)}
        olds, news = [], []
        for _ in range(args.repeat):  # alternating, so drift in the machine hits both
            shutil.rmtree(runs / "old", ignore_errors=True)
            shutil.rmtree(runs / "new", ignore_errors=True)
            olds.append(
                measured(
                    [PY, "-m", "claidex.cli", *common, "--run-dir", str(runs / "old")], before, env
                )
            )
            news.append(
                measured(
                    [
                        PY,
                        "-m",
                        "claidex.cli",
                        *common,
                        "--shards",
                        str(args.shards),
                        "--run-dir",
                        str(runs / "new"),
                    ],
                    ROOT,
                )
            )
        same = (runs / "old" / "scores.parquet").read_bytes() == (
            runs / "new" / "scores.parquet"
        ).read_bytes()
        table: list[str] = []
        tasks_same = None
        if not args.no_tasks:
            table = per_task(runs / "tasks", data, args.shards, args.batch_size)
            tasks_same = (runs / "tasks" / "scores.parquet").read_bytes() == (
                runs / "old" / "scores.parquet"
            ).read_bytes()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    single = data / "payments_combined.parquet"
    parts = sorted((data / "payments_combined").glob("*.parquet"))
    payment_bytes = sum(p.stat().st_size for p in ([single] if single.exists() else parts))
    lines = [
        "",
        f"## Sharded prepare (issue 13) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine()}",
        f"- Data: {data} ({payment_bytes / 1e9:.2f} GB of payments Parquet)",
        f"- `claidex run --workers {args.workers} --batch-size {args.batch_size}`, side by side:",
        "",
        "| code | shards | wall s (each run, in order) | median wall s "
        "| peak RSS of the largest process GB |",
        "|---|---|---|---|---|",
        f"| before ({args.before}) | — | {_walls(olds)} | {_median(olds):.1f} "
        f"| {max(r[1] for r in olds):.2f} |",
        f"| this tree | {args.shards} | {_walls(news)} | {_median(news):.1f} "
        f"| {max(r[1] for r in news):.2f} |",
        "",
        f"- median ratio this tree / before: **{_median(news) / _median(olds):.2f}x**",
        f"- scores.parquet byte-identical between the two: **{same}**",
    ]
    if table:
        lines += [
            f"- and with the one-task-per-process run below: **{tasks_same}**",
            "",
            f"Each task of each stage in its own process (shards = {args.shards}, "
            "POLARS_MAX_THREADS=2; task time measured inside the task):",
            "",
            *table,
        ]
    lines.append("")
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
