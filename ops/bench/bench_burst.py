"""Modal burst cost/speed model from measured step times: the function bodies at seed scale.

    .venv/bin/python ops/bench/bench_burst.py [--data /tmp/claidex-seed] [--containers 300]

Modal is not reachable from here, so this measures what each container would do: the
`prepare` body (2 cores), every `score_batch` body at the burst batch size on one core
(POLARS_MAX_THREADS=1, as a 1-CPU container), a few cold single-batch processes (imports
included, peak RSS for the memory setting) and the `merge_and_calibrate` body. The local
engine is run on the same data for comparison. Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_local import PY, append_section, machine, measured  # noqa: E402

BODY = (
    "import sys, json; from pathlib import Path; from modal_burst import bodies; "
    "from modal_burst.layout import VolumeLayout; layout = VolumeLayout(Path(sys.argv[1])); "
    "run = sys.argv[2]; "
)
STEP = {
    "prepare": BODY + "bodies.prepare_run(layout, run, source='volume', data_name='claidex', "
    "overrides={'batch_size': int(sys.argv[3])}, publish=False)",
    "score_all": BODY + "from scoring.runs.manifest import RunManifest; "
    "[bodies.score_one_batch(layout, run, i, 'bench') for i in "
    "range(RunManifest.load(layout.run(run)).batches_total)]",
    "score_one": BODY + "bodies.score_one_batch(layout, run, int(sys.argv[3]), 'cold')",
    "merge": BODY + "bodies.merge_run(layout, run, publish=False)",
}


def step(name: str, root: Path, run_id: str, *extra: str, threads: int) -> tuple[float, float]:
    """One body in its own process with `threads` polars threads: (wall s, peak RSS GB)."""
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    return measured([PY, "-c", STEP[name], str(root), run_id, *extra])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/tmp/claidex-seed")
    parser.add_argument("--providers", type=int, default=1_788_105)
    parser.add_argument("--volume", default="/tmp/claidex-burst-volume")
    parser.add_argument("--batch-size", type=int, default=6_000)
    parser.add_argument("--containers", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    data, root = Path(args.data), Path(args.volume)
    if not (data / "payments_combined.parquet").exists():
        generate = [PY, "-m", "claidex.cli", "generate", str(data)]
        measured([*generate, "--providers", str(args.providers)])
    shutil.rmtree(root, ignore_errors=True)
    (root / "datasets").mkdir(parents=True)
    (root / "datasets" / "claidex").symlink_to(data.resolve())  # the "uploaded" dataset
    run_id = "bench-burst"

    prep_s, prep_gb = step("prepare", root, run_id, str(args.batch_size), threads=2)
    score_s, score_gb = step("score_all", root, run_id, threads=1)
    from scoring.runs.ledger import RunLedger
    from scoring.runs.store import RunPaths

    paths = RunPaths(root / "runs" / run_id)
    batch_s = sorted(b["seconds"] for b in RunLedger(paths).batch_states().values())
    batches = len(batch_s)
    cold = [step("score_one", root, run_id, str(i), threads=1) for i in (0, batches // 2)]
    merge_s, merge_gb = step("merge", root, run_id, threads=2)
    os.environ.pop("POLARS_MAX_THREADS")
    local = ["--run-dir", "/tmp/claidex-burst-local", "--quiet", "--no-publish"]
    local_s, local_gb = measured([PY, "-m", "claidex.cli", "run", "--data", str(data), *local])
    p95 = batch_s[int(0.95 * (batches - 1))]
    waves = math.ceil(batches / args.containers)
    burst_wall = prep_s + waves * max(c[0] for c in cold) + merge_s
    core_s = 2 * prep_s + sum(batch_s) + 2 * merge_s
    rows = json.loads(paths.report.read_text()).get("rows_scored")
    lines = [
        "",
        f"## Modal burst model ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"- Machine: {machine()}",
        f"- Command: `.venv/bin/python ops/bench/bench_burst.py --batch-size {args.batch_size} "
        f"--containers {args.containers}`",
        f"- Data: {data} ({rows or '?'} providers scored), {batches} batches of {args.batch_size}",
        "- Function bodies run here in-process over a directory laid out like the volume "
        "(Modal itself is not reachable from this machine).",
        "",
        "| step | wall s | peak RSS GB | as on Modal |",
        "|---|---|---|---|",
        f"| prepare body (2 threads) | {prep_s:.1f} | {prep_gb:.1f} | one 2-CPU container |",
        f"| all {batches} score_batch bodies, 1 thread, one after another | {score_s:.1f} | "
        f"{score_gb:.1f} | {batches} containers |",
        f"| one score_batch body: mean / p95 / max | {statistics.mean(batch_s):.2f} / "
        f"{p95:.2f} / {batch_s[-1]:.2f} | | per container |",
        f"| one cold score_batch process (imports included) | "
        f"{' / '.join(f'{c[0]:.1f}' for c in cold)} | {max(c[1] for c in cold):.2f} | "
        f"a container's first call |",
        f"| merge body (2 threads) | {merge_s:.1f} | {merge_gb:.1f} | one 2-CPU container |",
        f"| local engine `claidex run` end to end (2 cores) | {local_s:.1f} | {local_gb:.1f} | |",
        "",
        f"Model: burst wall ~ prepare + {waves} wave(s) x cold batch + merge = "
        f"**{burst_wall:.0f} s** plus Modal's container start-up and volume commit/reload "
        f"latency (not measurable here), against {local_s:.0f} s for the local engine. "
        f"Compute: {core_s / 3600:.3f} core-hours per full run "
        f"(2 x prepare + sum of batches + 2 x merge), against ~200 core-hours for the legacy port.",
        "",
    ]
    append_section(args.out, lines)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree("/tmp/claidex-burst-local", ignore_errors=True)


if __name__ == "__main__":
    main()
