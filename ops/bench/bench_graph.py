"""Graph modes at 100k providers against a real Bolt server (ArcadeDB embedded, this machine).

    .venv/bin/python ops/bench/bench_graph.py [--providers 100000] [--batch 1000]

Measures: `claidex graph load`, the neo4j-snapshot read (prepare's whole-graph queries),
the neo4j-live query for one batch of scored NPIs, and a full run's prepare (one shard) in
the embedded and neo4j-snapshot modes: the real ownership path (reduce: steps 2-3 once for
every SNF; aggregate: steps 1 and 4 per NPI bucket; combine: the chain totals), whose
`stats/ownership.parquet` the live batches must equal. Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

import polars as pl  # noqa: E402
from bench_local import append_section, machine  # noqa: E402

from claidex.dev.sample import generate  # noqa: E402
from scoring.config import Settings  # noqa: E402
from scoring.graphdb.connection import neo4j_target  # noqa: E402
from scoring.graphdb.live import live_ownership  # noqa: E402
from scoring.graphdb.loader import load_graph  # noqa: E402
from scoring.graphdb.snapshot import read_snapshot  # noqa: E402
from scoring.inputs.contract import read_dataset  # noqa: E402
from scoring.inputs.validation import validate_reference  # noqa: E402
from scoring.runs.store import RunPaths  # noqa: E402
from scoring.stages.prepare import prepare  # noqa: E402
from tests.bolt_server import BoltServer  # noqa: E402


def timed(call):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def prepared_ownership(data: Path, run_dir: Path, cfg: Settings) -> tuple[float, pl.DataFrame]:
    """A full run's prepare over `data` (the real ownership path) and its per-provider
    ownership results (npi, snf_entity_id and the three chain columns)."""
    paths = RunPaths(run_dir)
    seconds, _ = timed(lambda: prepare(paths, data, cfg))
    return seconds, pl.read_parquet(paths.stat("ownership"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--providers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--live-batches", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="claidex-bench-graph-"))
    try:
        data = scratch / "data"
        generate(data, providers=args.providers, seed=7)
        server = BoltServer(scratch / "bolt").start()
        try:
            import os

            os.environ.update(server.env())
            cfg, target = Settings(), neo4j_target()
            reference = validate_reference(read_dataset(data, with_graph=True), Settings())
            load_s, counts = timed(lambda: load_graph(target, reference, cfg))
            reload_s, _ = timed(lambda: load_graph(target, reference, cfg))
            snap_s, _ = timed(lambda: read_snapshot(target, cfg))
            one_shard = cfg.model_copy(update={"shards": 1})
            embedded_s, embedded = prepared_ownership(data, scratch / "embedded", one_shard)
            snap_own_s, from_snapshot = prepared_ownership(
                data,
                scratch / "snapshot",
                one_shard.model_copy(update={"graph_mode": "neo4j-snapshot"}),
            )
            assert from_snapshot.equals(embedded), "snapshot != embedded"
            npis = reference.providers["npi"].sort()
            live_times, matched = [], 0
            for index in range(args.live_batches):
                batch = npis.slice(index * args.batch, args.batch)
                seconds, rows = timed(lambda b=batch: live_ownership(b, target, cfg))
                live_times.append(seconds)
                matched += rows.filter(pl.col("snf_entity_id").is_not_null()).height
                expected = embedded.filter(pl.col("npi").is_in(batch.implode()))
                got = rows.filter(pl.col("snf_entity_id").is_not_null()).sort("npi")
                assert got.equals(expected.sort("npi").select(got.columns)), "live != embedded"
        finally:
            server.stop()
        per_batch = sum(live_times) / len(live_times)
        batches = -(-reference.providers.height // args.batch)
        lines = [
            "",
            f"## Ownership graph modes ({datetime.now(UTC):%Y-%m-%d})",
            "",
            f"- Machine: {machine()}",
            f"- Command: `.venv/bin/python ops/bench/bench_graph.py --providers {args.providers}"
            f" --batch {args.batch}`",
            "- Server: ArcadeDB embedded (Bolt plugin, 1 GB heap) on this machine; graph: "
            + ", ".join(f"{v:,} {k}" for k, v in counts.items()),
            "",
            "| step | seconds |",
            "|---|---|",
            f"| `claidex graph load` (first / again, idempotent) | {load_s:.1f} / {reload_s:.1f} |",
            f"| neo4j-snapshot: read the graph (4 queries) | {snap_s:.2f} |",
            f"| neo4j-snapshot: prepare (1 shard, graph read included), all "
            f"{reference.providers.height:,} providers | {snap_own_s:.2f} |",
            f"| embedded: prepare (1 shard), all providers | {embedded_s:.2f} |",
            f"| neo4j-live: one {args.batch:,}-NPI batch query (mean of {len(live_times)}) | "
            f"{per_batch:.1f} |",
            f"| neo4j-live: extrapolated to all {batches} batches, one worker | "
            f"{per_batch * batches:,.0f} |",
            "",
            f"The live batches matched {matched} NPIs to an SNF and equal the embedded rows. "
            "Prepare times are whole prepares (the real ownership path inside them): their "
            "difference is the graph mode's. "
            "Snapshot adds its read time once per run; live pays the per-batch query on every "
            "batch (the provider-name containment has no index, so each batch scans the "
            "Provider nodes).",
            "",
        ]
        append_section(args.out, lines)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
