"""Celery fleet benchmark: overhead against the local engine, dispatch cost, enqueue latency.

    .venv/bin/python ops/bench/bench_fleet.py [--seed-data /tmp/claidex-seed]

Private Redis on a free port; two worker processes (`-Q batches,runs`, concurrency 1)
and one incremental worker, all on this machine, sharing a run root.
Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_local import append_section, command_seconds, machine  # noqa: E402

from claidex.dev.sample import generate  # noqa: E402
from scoring.runs.ledger import RunLedger  # noqa: E402
from scoring.runs.store import RunPaths  # noqa: E402
from tests.devservices import PrivateRedis  # noqa: E402
from tests.fleet import fleet_env, worker  # noqa: E402


def dispatch_overhead_ms(paths: RunPaths, workers: int) -> tuple[float, int]:
    """Per-task cost outside the batch body: (scoring wall x workers - sum of body time) / n."""
    states = list(RunLedger(paths).batch_states().values())
    from datetime import datetime as dt

    starts = [dt.fromisoformat(s["finished_at"]).timestamp() - s["seconds"] for s in states]
    ends = [dt.fromisoformat(s["finished_at"]).timestamp() for s in states]
    body = sum(s["seconds"] for s in states)
    span = max(ends) - min(starts)
    return max(0.0, (span * workers - body) / len(states)) * 1000, len(states)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed-data", default="/tmp/claidex-seed")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="claidex-fleet-bench-"))
    data_200k = scratch / "data-200k"
    generate(data_200k, providers=200_000, seed=7)
    sizes = {"200k": data_200k}
    if (Path(args.seed_data) / "payments_combined.parquet").exists():
        sizes["seed (1.79M)"] = Path(args.seed_data)
    rows, enqueue_rows, overhead = [], [], None
    with PrivateRedis() as redis:
        env = fleet_env(redis.url, scratch / "runs", CLAIDEX_VISIBILITY_TIMEOUT="3600")
        procs = [worker(env, scratch / f"w{i}.log", f"w{i}") for i in range(2)]
        procs.append(worker(env, scratch / "inc.log", "inc", queues="incremental"))
        try:
            for label, data in sizes.items():
                local = command_seconds(
                    [
                        sys.executable,
                        "-m",
                        "claidex.cli",
                        "run",
                        "--data",
                        str(data),
                        "--run-dir",
                        str(scratch / f"local-{label[:4]}"),
                        "--quiet",
                    ],
                    env,
                )
                run_id = f"fleet-{label[:4]}"
                fleet = command_seconds(
                    [
                        sys.executable,
                        "-m",
                        "workers",
                        "full",
                        "--data",
                        str(data),
                        "--run-id",
                        run_id,
                        "--quiet",
                    ],
                    env,
                )
                rows.append((label, local, fleet))
                print(f"{label}: local {local:.1f}s, fleet {fleet:.1f}s", flush=True)
                reference = scratch / "runs" / run_id / "scores.parquet"
                import polars as pl

                npis = pl.read_parquet(reference, columns=["npi"]).sample(n=101, seed=5)["npi"]
                for count in (1, 100):
                    chosen = npis.head(count).to_list()
                    command_seconds(
                        [sys.executable, "-m", "workers", "enqueue", *chosen[:1], "--wait"], env
                    )
                    seconds = command_seconds(
                        [sys.executable, "-m", "workers", "enqueue", *chosen, "--wait"], env
                    )
                    enqueue_rows.append((label, count, seconds))
                    print(f"{label}: enqueue {count}: {seconds:.2f}s", flush=True)
            tiny = scratch / "data-tiny"
            generate(tiny, providers=3000, seed=3)
            command_seconds(
                [
                    sys.executable,
                    "-m",
                    "workers",
                    "full",
                    "--data",
                    str(tiny),
                    "--batch-size",
                    "5",
                    "--run-id",
                    "dispatch",
                    "--quiet",
                ],
                env,
            )
            overhead = dispatch_overhead_ms(RunPaths(scratch / "runs" / "dispatch"), 2)
        finally:
            for proc in procs:
                proc.stop()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Celery fleet — {stamp}\n",
        f"- Machine: {machine()}; private Redis 7 on loopback",
        "- Fleet: 2 worker processes (`-Q batches,runs --concurrency 1`) + 1 incremental worker; "
        "default batch size 250,000; local engine with its defaults",
        "- Command: `.venv/bin/python ops/bench/bench_fleet.py`",
        "",
        "| data | local engine s | fleet (`python -m workers full`) s | fleet / local |",
        "|---|---:|---:|---:|",
        *[
            f"| {label} | {local:.1f} | {fleet:.1f} | {fleet / local:.2f}x |"
            for label, local, fleet in rows
        ],
        "",
        "`python -m workers enqueue ... --wait` with a warm incremental worker (wall time of the "
        "whole command: interpreter start, dispatch, scoring, result):",
        "",
        "| data | NPIs | seconds |",
        "|---|---:|---:|",
        *[f"| {label} | {count} | {seconds:.2f} |" for label, count, seconds in enqueue_rows],
        "",
    ]
    if overhead:
        lines += [
            f"Per-task dispatch overhead: {overhead[0]:.1f} ms per score_batch task "
            f"(({overhead[1]} batches of 5 NPIs; span x workers - task bodies) / tasks).",
            "",
        ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
