"""Graph modes at 100k providers against a real Bolt server (ArcadeDB embedded, this machine).

    .venv/bin/python ops/bench/bench_graph.py [--providers 100000] [--batch 1000]

Measures: `claidex graph load`, the neo4j-snapshot read (prepare's whole-graph queries),
the neo4j-live query for one batch of scored NPIs, and the embedded ownership computation
on the same data. Appends to docs/BENCHMARKS.md.
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
from scoring.exclusion import active_exclusions  # noqa: E402
from scoring.graphdb.connection import neo4j_target  # noqa: E402
from scoring.graphdb.live import live_ownership  # noqa: E402
from scoring.graphdb.loader import load_graph  # noqa: E402
from scoring.graphdb.snapshot import read_snapshot  # noqa: E402
from scoring.inputs import read_dataset  # noqa: E402
from scoring.ownership import ownership_counts  # noqa: E402
from scoring.validation import validate_reference  # noqa: E402
from tests.bolt_server import BoltServer  # noqa: E402


def timed(call):  # noqa: ANN001, ANN201
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


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
            snap_s, snapshot = timed(lambda: read_snapshot(target, cfg))
            excluded = active_exclusions(reference.exclusions.lazy()).collect()
            assert reference.graph is not None
            embedded_s, embedded = timed(
                lambda: ownership_counts(
                    reference.providers.lazy(), excluded.lazy(), reference.graph, cfg
                ).collect()
            )
            snap_own_s, from_snapshot = timed(
                lambda: ownership_counts(
                    reference.providers.lazy(),
                    snapshot.excluded_npis.lazy(),
                    snapshot.graph,
                    cfg,
                ).collect()
            )
            assert from_snapshot.sort("npi").equals(embedded.sort("npi"))
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
            f"| ownership from the snapshot, all {reference.providers.height:,} providers | "
            f"{snap_own_s:.2f} |",
            f"| embedded: ownership, all providers | {embedded_s:.2f} |",
            f"| neo4j-live: one {args.batch:,}-NPI batch query (mean of {len(live_times)}) | "
            f"{per_batch:.1f} |",
            f"| neo4j-live: extrapolated to all {batches} batches, one worker | "
            f"{per_batch * batches:,.0f} |",
            "",
            f"The live batches matched {matched} NPIs to an SNF and equal the embedded rows. "
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
