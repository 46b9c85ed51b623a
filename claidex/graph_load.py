"""`claidex graph load|counts`: the ownership graph into Neo4j, with a progress bar."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scoring.config import load_settings
from scoring.errors import InputError
from scoring.graphdb.connection import neo4j_target
from scoring.graphdb.loader import graph_counts, load_graph
from scoring.inputs.contract import CORE_FILES, GRAPH_FILES, dataset_file, read_dataset
from scoring.inputs.validation import validate_reference

# From Postgres the loader needs every table but the payments (the largest by far).
GRAPH_EXPORT = tuple(name for name in CORE_FILES + GRAPH_FILES if name != "payments_combined")


def _load(data: Path, quiet: bool) -> dict[str, int]:
    cfg = load_settings()
    target = neo4j_target()
    reference = validate_reference(
        read_dataset(
            data, with_graph=True, with_payments=dataset_file(data, "payments_combined").exists()
        ),
        cfg,
    )
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), disable=quiet) as bar:
        tasks: dict[str, int] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done)

        return load_graph(target, reference, cfg, on_progress=advance)


def graph_command(args: argparse.Namespace) -> int:
    if args.graph_command == "counts":
        print(json.dumps(graph_counts(neo4j_target(), load_settings()), indent=2))
        return 0
    if args.source == "postgres":
        from scoring.db.connection import connect, required_database_url
        from scoring.db.export import export_dataset

        with tempfile.TemporaryDirectory(prefix="claidex-graph-") as scratch:
            with connect(required_database_url()) as conn:
                export_dataset(conn, Path(scratch), with_graph=True, tables=GRAPH_EXPORT)
            counts = _load(Path(scratch), args.quiet)
    else:
        if not args.data:
            msg = "give --data DIR or --source postgres"
            raise InputError(msg)
        counts = _load(Path(args.data), args.quiet)
    print(json.dumps(counts, indent=2))
    return 0
