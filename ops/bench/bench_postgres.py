"""Postgres benchmark: publish of 1,788,105 rows, the legacy row-at-a-time upsert, load/export.

    .venv/bin/claidex generate /tmp/claidex-seed-prod --providers 1788105 --layout production
    .venv/bin/python ops/bench/bench_postgres.py [--data /tmp/claidex-seed-prod] [--run RUN_DIR]

Starts a private, durable PostgreSQL (fsync on, default settings) on a free
port. Publishes a seed-scale run's scores (padded to 1,788,105 rows by cloning
scored rows under unused NPIs, so every US NPI has a row) twice: into the empty
table, then over itself (the weekly case). Times the legacy publish — psycopg2
`execute_batch(page_size=500)` of INSERT ... ON CONFLICT, reproduced with
client-side binding — on the same rows in the same run. Then `db load` of the
seed dataset into the production layout (so a `--layout production` dataset: one row
per npi-year-program) and `export`, as rows per second. Appends to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_local import append_section, machine  # noqa: E402

from claidex.local_engine import run_local  # noqa: E402
from scoring.config import Settings  # noqa: E402
from scoring.db.connection import connect  # noqa: E402
from scoring.db.export import export_dataset  # noqa: E402
from scoring.db.load import load_dataset  # noqa: E402
from scoring.db.publish import publish_scores, published_columns, published_frame  # noqa: E402
from scoring.db.schema import init_schema  # noqa: E402
from scoring.inputs.npi import make_npi, npi_to_str  # noqa: E402
from tests.devservices import PrivatePostgres  # noqa: E402

TARGET_ROWS = 1_788_105
LEGACY_PAGE = 500


def padded_scores(scores: pl.DataFrame, rows: int) -> pl.DataFrame:
    """Clone scored rows under fresh valid NPIs (base 3xxxxxxxx, never generated) up to `rows`."""
    extra = rows - scores.height
    if extra <= 0:
        return scores.head(rows)
    base = pl.int_range(300_000_000, 300_000_000 + extra, dtype=pl.Int64, eager=True)
    clones = scores.sample(n=extra, with_replacement=True, seed=1).with_columns(
        npi_to_str(pl.select(make_npi(base)).to_series()).alias("npi")
    )
    return pl.concat([scores, clones]).sort("npi")


def legacy_publish(url: str, frame: pl.DataFrame) -> None:
    """What the legacy code did: 500 single-row upserts per round trip, bound client-side."""
    columns = ", ".join(published_columns())
    marks = ", ".join(["%s"] * len(published_columns()))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in published_columns()[1:])
    statement = (
        f"INSERT INTO provider_risk_scores ({columns}) VALUES ({marks}) "
        f"ON CONFLICT (npi) DO UPDATE SET {updates}, updated_at = now()"
    )
    with psycopg.connect(url) as conn, psycopg.ClientCursor(conn) as cur:
        for page in frame.iter_slices(LEGACY_PAGE):
            cur.execute(";".join(cur.mogrify(statement, row) for row in page.iter_rows()))
        conn.commit()


def timed(label: str, action) -> float:  # noqa: ANN001
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.1f}s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/tmp/claidex-seed-prod")
    parser.add_argument("--run", default="/tmp/claidex-bench-runs/pg-run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args()
    data, run_dir = Path(args.data), Path(args.run)
    if not (run_dir / "scores.parquet").exists():
        run_local(data, Settings(), run_dir=run_dir, show_progress=False)
    scores = padded_scores(pl.read_parquet(run_dir / "scores.parquet"), TARGET_ROWS)
    results: dict[str, float] = {}
    with PrivatePostgres(durable=True) as server:
        with connect(server.url) as conn:
            init_schema(conn)
            results["publish_empty"] = timed(
                "publish into empty table",
                lambda: publish_scores(
                    conn, scores, run_id="bench-1", kind="full", fingerprint="bench"
                ),
            )
            results["publish_again"] = timed(
                "publish over previous run",
                lambda: publish_scores(
                    conn, scores, run_id="bench-2", kind="full", fingerprint="bench"
                ),
            )
            conn.execute("TRUNCATE provider_risk_scores")
            conn.commit()
        legacy_rows = published_frame(scores, "legacy")
        results["legacy_empty"] = timed(
            "legacy execute_batch(500) into empty table",
            lambda: legacy_publish(server.url, legacy_rows),
        )
        with connect(server.url) as conn:
            counts: dict[str, int] = {}
            results["load"] = timed(
                "db load (COPY)", lambda: counts.update(load_dataset(conn, data))
            )
            exported: dict[str, int] = {}
            results["export"] = timed(
                "export (COPY)",
                lambda: exported.update(
                    export_dataset(conn, run_dir.parent / "pg-export", with_graph=True)
                ),
            )
    loaded = sum(counts.values())
    ratio = results["legacy_empty"] / results["publish_empty"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Postgres publish, load and export — {stamp}\n",
        f"- Machine: {machine()}; private PostgreSQL 15, default durability (fsync on)",
        f"- Rows: {TARGET_ROWS:,} published rows (the seed run's {run_dir.name} scores, padded "
        "by cloning scored rows under unused NPIs); dataset "
        f"`{data}` ({exported.get('payments_combined', 0):,} payment rows)",
        "- Command: `.venv/bin/python ops/bench/bench_postgres.py`",
        "",
        "| operation | wall s | rows/s |",
        "|---|---:|---:|",
        "| publish into empty table (COPY to staging + set-based update and insert, "
        f"one transaction) | "
        f"{results['publish_empty']:.1f} | {TARGET_ROWS / results['publish_empty']:,.0f} |",
        f"| publish over the previous run (all rows updated) | {results['publish_again']:.1f} | "
        f"{TARGET_ROWS / results['publish_again']:,.0f} |",
        f"| legacy: execute_batch(page_size=500) upserts into empty table | "
        f"{results['legacy_empty']:.1f} | {TARGET_ROWS / results['legacy_empty']:,.0f} |",
        f"| db load of the dataset (COPY, all source tables) | {results['load']:.1f} | "
        f"{loaded / results['load']:,.0f} |",
        f"| export to a dataset directory (COPY out, Parquet) | {results['export']:.1f} | "
        f"{sum(exported.values()) / results['export']:,.0f} |",
        "",
        f"Legacy row-at-a-time publish / COPY publish, same rows, same run: **{ratio:.1f}x**.",
        "",
    ]
    append_section(args.out, lines)


if __name__ == "__main__":
    main()
