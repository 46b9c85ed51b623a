"""Seed-scale benchmark of the local engine: wall time and peak RSS per step.

    .venv/bin/python ops/bench/bench_local.py [--providers 1788105] [--data /tmp/claidex-seed]

Generates the dataset once (reused when present), then times each run step in
its own process (so each step's peak RSS is its own), and the whole run as one
`claidex run` process for several batch-size / worker settings. Appends the
figures, with machine and date, to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

_IMPORTS = (
    "import sys; from pathlib import Path; from scoring.config import Settings; "
    "from scoring.runs.store import RunPaths; from scoring.runs.manifest import RunManifest; "
    "from scoring.stages.drive import drive, prepare; "
    "from scoring.stages.merge import merge_and_calibrate; "
    "from claidex.local_engine import LocalPool; "
    "run, data, batch, workers = RunPaths(Path(sys.argv[1])), Path(sys.argv[2]), "
    "int(sys.argv[3]), int(sys.argv[4]); "
)
STEP_CODE = {
    "prepare": _IMPORTS + "prepare(run, data, Settings(batch_size=batch))",
    "score": _IMPORTS + "p = LocalPool(workers); drive(run, 'score', p.fan_out); p.close()",
    "merge": _IMPORTS + "merge_and_calibrate(run)",
}


def measured(
    cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[float, float]:
    """(wall seconds, peak RSS GB of the process and its children) of one command, run in
    `cwd` (another tree's checkout, with `env` putting its packages first)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1e6


def command_seconds(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of one command run from the project root; stops the benchmark on failure."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def append_section(out: str | Path, lines: list[str]) -> None:
    """Append a dated section to docs/BENCHMARKS.md and echo it."""
    with Path(out).open("a") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return f"{cpu}, {os.cpu_count()} cores, {mem_kb / 1e6:.0f} GB RAM, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--providers", type=int, default=1_788_105)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", default="/tmp/claidex-seed")
    parser.add_argument("--runs", default="/tmp/claidex-bench-runs")
    parser.add_argument(
        "--settings",
        default="250000:1,250000:2,100000:1",
        help="batch_size:workers pairs for the end-to-end runs",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    data, runs = Path(args.data), Path(args.runs)
    claidex = [PY, "-m", "claidex.cli"]

    if not (data / "payments_combined.parquet").exists():
        gen_s, gen_gb = measured(
            [
                *claidex,
                "generate",
                str(data),
                "--providers",
                str(args.providers),
                "--seed",
                str(args.seed),
            ]
        )
        print(f"generate: {gen_s:.1f}s, {gen_gb:.1f} GB")
    import polars as pl

    rows = pl.scan_parquet(data / "payments_combined.parquet").select(pl.len()).collect().item()

    subprocess.run(["rm", "-rf", str(runs)], check=True)
    steps: dict[str, tuple[float, float]] = {}
    first_batch, first_workers = args.settings.split(",")[0].split(":")
    for step, code in STEP_CODE.items():
        steps[step] = measured(
            [PY, "-c", code, str(runs / "steps"), str(data), first_batch, first_workers]
        )
        print(f"{step}: {steps[step][0]:.1f}s, {steps[step][1]:.2f} GB")
    report = json.loads((runs / "steps" / "report.json").read_text())

    end_to_end = []
    for pair in args.settings.split(","):
        batch, workers = pair.split(":")
        seconds, gb = measured(
            [
                *claidex,
                "run",
                "--data",
                str(data),
                "--run-dir",
                str(runs / f"e2e-{batch}-{workers}"),
                "--batch-size",
                batch,
                "--workers",
                workers,
                "--quiet",
            ]
        )
        end_to_end.append((int(batch), int(workers), seconds, gb))
        print(f"claidex run batch {batch} workers {workers}: {seconds:.1f}s, {gb:.2f} GB")

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Local engine, full recompute — {stamp}\n",
        f"- Machine: {machine()}",
        f"- Data: `claidex generate --providers {args.providers:,} --seed {args.seed}` — "
        f"{rows:,} payment rows, {report['rows_scored']:,} providers scored "
        f"(window {report['window'][0]}-{report['window'][1]})",
        f"- Command: `.venv/bin/python ops/bench/bench_local.py --providers {args.providers}`",
        "",
        f"Per step (each step its own process; batch size {first_batch}, "
        f"{first_workers} worker(s)):",
        "",
        "| step | wall s | peak RSS GB |",
        "|---|---:|---:|",
        *[f"| {step} | {s:.1f} | {gb:.2f} |" for step, (s, gb) in steps.items()],
        f"| **sum** | **{sum(s for s, _ in steps.values()):.1f}** | "
        f"**{max(gb for _, gb in steps.values()):.2f}** |",
        "",
        "End to end (`claidex run`, one process plus its batch workers; includes interpreter "
        "start-up and the report):",
        "",
        "| batch size | workers | wall s | peak RSS GB (largest process) |",
        "|---:|---:|---:|---:|",
        *[f"| {b:,} | {w} | {s:.1f} | {gb:.2f} |" for b, w, s, gb in end_to_end],
        "",
        "Planted anomalies landing in Elevated/High: "
        + ", ".join(
            f"{k} {v['share_elevated_or_high']:.1%} of {v['scored']:,}"
            for k, v in report["planted_capture"].items()
        ),
        "",
    ]
    out = Path(args.out)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# Benchmarks\n\nFigures written by `ops/bench`; newest last.\n")
    with out.open("a") as handle:
        handle.write("\n".join(lines))
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
