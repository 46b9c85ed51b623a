"""Issue 13 benchmark: a dataset larger than one process's share of the box (5x seed).

    .venv/bin/python ops/bench/bench_scale.py --data /tmp/bench5/data [--shards 64] \
        [--workers 2] [--batch-size 50000]

1. `claidex run` (local engine, a process pool per stage) on the dataset.
2. `python -m workers full` on a private Redis with two Celery workers (prefork, one
   child each), no publish.
Each reports wall time, the peak RSS of the largest process (wait4: the maximum over a
process and its reaped children, so a worker's figure covers its pool children) and the
bytes of the run directory; the two score files must be byte-identical. Appends the
figures, with machine and date, to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_local import append_section, machine
from bench_shards import measured

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PY = str(ROOT / ".venv" / "bin" / "python")
FLEET_LIMITS = {  # a long prepare stage must not hit the test suite's short limits
    "CLAIDEX_VISIBILITY_TIMEOUT": "7200",
    "CLAIDEX_TASK_TIME_LIMIT": "7000",
    "CLAIDEX_TASK_SOFT_TIME_LIMIT": "6900",
    "CLAIDEX_LEASE_SECONDS": "60",
    "CLAIDEX_HEARTBEAT_SECONDS": "5",
    "CLAIDEX_WORKER_SILENCE_SECONDS": "300",
    "CLAIDEX_STALL_SECONDS": "600",
}


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def run_local_engine(args: argparse.Namespace, runs: Path) -> dict[str, float]:
    run_dir = runs / "local"
    cmd = [PY, "-m", "claidex.cli", "run", "--data", args.data, "--shards", str(args.shards),
           "--workers", str(args.workers), "--batch-size", str(args.batch_size),
           "--run-dir", str(run_dir), "--quiet"]  # fmt: skip
    seconds, peak, _ = measured(cmd, ROOT)
    ledger = json.loads((run_dir / "ledger.json").read_text())
    return {"wall": seconds, "peak": peak, "bytes": tree_bytes(run_dir),
            "stages": tree_bytes(run_dir / "stages"), "providers": ledger["providers_scored"],
            "timings": ledger.get("timings", {})}  # fmt: skip


def start_worker(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [PY, "-m", "celery", "-A", "workers", "worker", "-Q", "batches,runs", "-n",
           f"{name}@%h", "--concurrency", "1", "--pool", "prefork", "-l", "INFO",
           "--without-gossip", "--without-mingle"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while "ready." not in log.read_text(errors="replace"):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> float:
    """Warm shutdown, then the worker's peak RSS (its own or any pool child's), GB."""
    os.killpg(proc.pid, signal.SIGTERM)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1e6


def run_fleet(args: argparse.Namespace, runs: Path) -> dict[str, float]:
    from tests.devservices import PrivateRedis
    from tests.fleet import fleet_env

    redis = PrivateRedis().start()
    env = fleet_env(redis.url, runs / "fleet", **FLEET_LIMITS)
    env.pop("DATABASE_URL", None)
    workers = [start_worker(env, f"w{i}", runs / f"w{i}.log") for i in range(args.workers)]
    try:
        cmd = [PY, "-m", "workers", "full", "--data", args.data, "--shards", str(args.shards),
               "--batch-size", str(args.batch_size), "--run-id", "scale", "--no-publish",
               "--timeout", "7200", "--quiet"]  # fmt: skip
        seconds, cli_peak, _ = measured(cmd, ROOT, env=env)
    finally:
        peaks = [stop_worker(w) for w in workers]
        redis.stop()
    run_dir = runs / "fleet" / "scale"
    return {"wall": seconds, "peak": max([cli_peak, *peaks]), "bytes": tree_bytes(run_dir),
            "stages": tree_bytes(run_dir / "stages"), "workers": peaks}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--runs", default="/tmp/claidex-bench-scale")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    runs = Path(args.runs)
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    data = Path(args.data)
    data_bytes = tree_bytes(data)
    local = run_local_engine(args, runs)
    print(json.dumps({"local": local}, default=str), flush=True)
    shutil.rmtree(runs / "local" / "stages")  # room on disk for the fleet run
    fleet = run_fleet(args, runs)
    print(json.dumps({"fleet": fleet}, default=str), flush=True)
    same = (runs / "local" / "scores.parquet").read_bytes() == (
        runs / "fleet" / "scale" / "scores.parquet"
    ).read_bytes()
    rows = sum(
        __import__("polars").scan_parquet(p).select(__import__("polars").len()).collect().item()
        for p in sorted((data / "payments_combined").glob("*.parquet"))
    )
    lines = [
        f"`ops/bench/bench_scale.py --data {args.data} --shards {args.shards} --workers "
        f"{args.workers} --batch-size {args.batch_size}` on {datetime.now(UTC):%Y-%m-%d} "
        f"({machine()}): {local['providers']:,} providers scored, {rows:,} payment rows in "
        f"{len(list((data / 'payments_combined').glob('*.parquet')))} parts "
        f"({gb(data_bytes)} on disk).",
        "",
        "| engine | wall | largest process | run directory | of it: stages/ |",
        "|---|---:|---:|---:|---:|",
        f"| `claidex run` (local, {args.workers} processes per stage) | {local['wall']:.0f} s | "
        f"{local['peak']:.2f} GB | {gb(local['bytes'])} | {gb(local['stages'])} |",
        f"| `python -m workers full` ({args.workers} workers, no publish) | {fleet['wall']:.0f} s"
        f" | {fleet['peak']:.2f} GB | {gb(fleet['bytes'])} | {gb(fleet['stages'])} |",
        "",
        f"Scores byte-identical between the two engines: {'yes' if same else 'NO'}. "
        "Worker peaks (incl. pool children): "
        f"{', '.join(f'{p:.2f} GB' for p in fleet['workers'])}. "
        f"Local step timings: {json.dumps(local['timings'])}.",
    ]
    heading = f"## 5x seed, sharded (issue 13) — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    append_section(args.out, ["", heading, "", *lines, ""])
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
