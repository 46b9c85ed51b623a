"""The fused plan: a one-shard run's stages as one task, the rows kept in memory.

With one shard every NPI bucket and peer bucket is the whole run, so nothing needs a
shuffle: ingest's good rows go straight to count and aggregate, aggregate's provider-years
straight to peer_stats. The task writes every file and done marker the stages would (so
combine, status and a resume read it as the sharded run), minus the bucketed files only a
later stage read. Each stage's body is the sharded stage's own: only the reading differs.
"""

from __future__ import annotations

from typing import Any

from scoring.runs.ledger import RunLedger
from scoring.runs.plan import check_inputs_unchanged, read_plan, read_window
from scoring.runs.store import RunPaths, run_store
from scoring.stages.aggregate import BucketInputs, aggregate_bucket, read_graph, write_aggregate
from scoring.stages.count import count_bucket
from scoring.stages.ingest import TABLES, checked_slice, ingest_summary
from scoring.stages.peer_groups import peer_group_stats, write_peer_stats
from scoring.stages.reduce import reduce
from scoring.stages.stage_files import StageTask

FUSED = "fused"


def fused(paths: RunPaths, index: int) -> dict[str, Any]:
    """Every prepare stage of a one-shard plan, in order, in this process."""
    check_inputs_unchanged(paths)
    data_dir, cfg, shards = read_plan(paths)
    store = run_store(paths)
    ingest = StageTask(store, "ingest", index)
    good, bad, payment_rows = {}, {}, 0
    for table, (name, _npi) in TABLES.items():
        rows, good[name], bad[f"q-{name}"] = checked_slice(data_dir, table, index, shards, cfg)
        payment_rows = rows if name == "payments" else payment_rows
        ingest.write({f"q-{name}": bad[f"q-{name}"]})
    ingest_done = ingest_summary(payment_rows, good, bad)
    del bad
    counted = count_bucket(good["payments"].select("npi", "year"), cfg)
    count = StageTask(store, "count", index)
    count.finish(counted)  # reduce reads the count's done marker (its only task)
    reduce(paths, RunLedger(paths))
    inputs = BucketInputs(
        payments=good.pop("payments"),
        providers=good.pop("providers"),
        exclusions=good.pop("exclusions"),
        graph=read_graph(store, cfg),
    )
    out = aggregate_bucket(inputs, read_window(paths), cfg)
    aggregate = StageTask(store, "aggregate", index)
    aggregate_done = write_aggregate(paths, aggregate, out, peer_files=False, finish=False)
    eligible, growth = out.peer_rows["eligible"].lazy(), out.peer_rows["growth"].lazy()
    del out
    peer_stats = StageTask(store, "peer_stats", index)
    peer_done = write_peer_stats(
        peer_stats, *peer_group_stats(eligible, growth), shards, cfg, finish=False
    )
    # the stages' done markers last, together: a code version without the fused step that
    # resumes a run killed mid-task finds no stage done, so it never reads shuffle files
    # this task did not write
    ingest.finish(ingest_done)
    aggregate.finish(aggregate_done)
    peer_stats.finish(peer_done)
    return StageTask(store, FUSED, index).finish(peer_done)
