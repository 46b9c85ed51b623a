"""`enqueue --wait` latency when the current rows come from Postgres (the production path).

    .venv/bin/python ops/bench/bench_enqueue_pg.py [--data /tmp/claidex-seed-prod]

The dataset must fit the production layout (`claidex generate DIR --layout production`).

Private durable PostgreSQL and Redis; `claidex db load` of the dataset; a full run on
the fleet that publishes (the reference); then enqueues of 1 and 100 NPIs with a warm
incremental worker reading those NPIs' rows through the indexed source tables.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import polars as pl  # noqa: E402
from bench_local import append_section, command_seconds, machine  # noqa: E402

from tests.devservices import PrivatePostgres, PrivateRedis  # noqa: E402
from tests.fleet import fleet_env, worker  # noqa: E402

WARM_CLIENT = (
    "import sys, time; from workers.app import app\n"
    "for _ in range(3):\n"
    "    t = time.perf_counter()\n"
    "    app.send_task('claidex.score_incremental', args=[sys.argv[1:], None, True])"
    ".get(timeout=600)\n"
    "    print(round(time.perf_counter() - t, 3))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/tmp/claidex-seed-prod")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="claidex-enqueue-bench-"))
    results: list[tuple[int, float]] = []
    with PrivatePostgres(durable=True) as pg, PrivateRedis() as redis:
        env = fleet_env(  # the test fleet's time limits (15 s) are far below a seed publish
            redis.url,
            scratch / "runs",
            database_url=pg.url,
            CLAIDEX_VISIBILITY_TIMEOUT="3600",
            CLAIDEX_TASK_TIME_LIMIT="3000",
            CLAIDEX_TASK_SOFT_TIME_LIMIT="2700",
        )
        cli = [sys.executable, "-m", "claidex.cli"]
        load = command_seconds([*cli, "db", "init"], env) + command_seconds(
            [*cli, "db", "load", args.data], env
        )
        procs = [
            worker(env, scratch / "w0.log", "w0"),
            worker(env, scratch / "inc.log", "inc", queues="incremental"),
        ]
        try:
            full = command_seconds(
                [
                    sys.executable,
                    "-m",
                    "workers",
                    "full",
                    "--data",
                    args.data,
                    "--run-id",
                    "reference",
                    "--quiet",
                ],
                env,
            )
            scores = scratch / "runs" / "reference" / "scores.parquet"
            npis = pl.read_parquet(scores, columns=["npi"]).sample(n=100, seed=9)["npi"]
            command_seconds(
                [sys.executable, "-m", "workers", "enqueue", npis[0], "--wait"], env
            )  # warm
            for count in (1, 100):
                seconds = command_seconds(
                    [
                        sys.executable,
                        "-m",
                        "workers",
                        "enqueue",
                        *npis.head(count).to_list(),
                        "--wait",
                    ],
                    env,
                )
                results.append((count, seconds))
                print(f"enqueue {count}: {seconds:.2f}s", flush=True)
            # the task's own latency, from a client whose imports are done (the command
            # above also pays a Python start with celery and polars: ~0.85 s on this box)
            warm = subprocess.run(
                [sys.executable, "-c", WARM_CLIENT, *npis.head(100).to_list()],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            task_seconds = [float(x) for x in warm.stdout.split()]
            print(f"task latency (warm client, 100 NPIs, 3 calls): {task_seconds}", flush=True)
        finally:
            for proc in procs:
                proc.stop()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Enqueue from Postgres at seed scale — {stamp}\n",
        f"- Machine: {machine()}; private durable PostgreSQL 15 and Redis 7",
        f"- Data: `{args.data}` loaded with `claidex db load` ({load:.0f} s); reference: a "
        f"published full run on the fleet ({full:.0f} s including the 1.79 M-row publish)",
        "- Command: `.venv/bin/python ops/bench/bench_enqueue_pg.py`",
        "",
        "| NPIs | `python -m workers enqueue ... --wait` seconds |",
        "|---:|---:|",
        *[f"| {count} | {seconds:.2f} |" for count, seconds in results],
        "",
        f"- The task alone, 100 NPIs, from a warm client (send, score, publish, result), "
        f"3 calls: {', '.join(f'{s:.2f}' for s in task_seconds)} s",
        "",
        "The incremental worker reads only those NPIs' rows (`WHERE npi = ANY(...)` on the "
        "indexed source tables), scores them against the reference run and upserts them.",
        "",
    ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
