"""Tiny hand-built datasets for methodology tests, scored through the real run steps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.inputs.contract import SCHEMAS
from scoring.inputs.npi import make_npi

POLARS_TYPES = {
    "text": pl.String,
    "integer": pl.Int64,
    "number": pl.Float64,
    "boolean": pl.Boolean,
    "date": pl.Date,
}
PROVIDER_DEFAULTS = {
    "entity_type_code": 1,
    "display_name": "",
    "taxonomy_1": "207Q00000X",
    "state": "CA",
    "is_excluded": False,
}
PAYMENT_DEFAULTS = {
    "program": "Medicare",
    "payments": 1000.0,
    "claims": 10.0,
    "beneficiaries": 5.0,
    "taxonomy": "207Q00000X",
    "state": "CA",
}


def npi(i: int) -> str:
    """A valid NPI (correct check digit) for a small integer."""
    return str(pl.select(make_npi(pl.lit(100_000_000 + i, dtype=pl.Int64))).item())


def frame(
    table: str, rows: list[dict[str, Any]], defaults: dict[str, Any] | None = None
) -> pl.DataFrame:
    schema = {c: POLARS_TYPES[k] for c, k in SCHEMAS[table].items()}
    full = [{**(defaults or {}), **row} for row in rows]
    return pl.DataFrame(full, schema=schema, orient="row") if full else pl.DataFrame(schema=schema)


def write_dataset(
    directory: Path,
    *,
    providers: list[dict[str, Any]] = (),  # type: ignore[assignment]
    payments: list[dict[str, Any]] = (),  # type: ignore[assignment]
    exclusions: list[dict[str, Any]] = (),  # type: ignore[assignment]
    entities: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ownership: list[dict[str, Any]] = (),  # type: ignore[assignment]
    entity_exclusions: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> Path:
    """Write the six dataset files; unspecified columns take the defaults above."""
    directory.mkdir(parents=True, exist_ok=True)
    tables = {
        "providers": frame("providers", list(providers), PROVIDER_DEFAULTS),
        "payments_combined": frame("payments_combined", list(payments), PAYMENT_DEFAULTS),
        "exclusions": frame(
            "exclusions", list(exclusions), {"excldate": None, "reinstated": False}
        ),
        "entities": frame("entities", list(entities), {"entity_type": "SNF"}),
        "ownership": frame("ownership", list(ownership)),
        "entity_exclusions": frame("entity_exclusions", list(entity_exclusions)),
    }
    for name, df in tables.items():
        df.write_parquet(directory / f"{name}.parquet")
    return directory


def score(data_dir: Path, run_dir: Path, **settings: Any) -> pl.DataFrame:
    """Full local run (prepare, batches, merge) and its scores.parquet."""
    cfg = Settings(**{"batch_size": 1000, "workers": 1, **settings})
    paths = run_local(data_dir, cfg, run_dir=run_dir, show_progress=False)
    return pl.read_parquet(paths.scores)


def by_npi(scores: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["npi"]: row for row in scores.iter_rows(named=True)}


def claidex_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`claidex ARGS` in a fresh process (wide terminal for tables), extra environment on top."""
    return subprocess.run(
        [sys.executable, "-m", "claidex.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def table_bytes(url: str) -> bytes:
    """provider_risk_scores as COPY text, in npi order: equal bytes, an untouched table."""
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        out = bytearray()
        with cur.copy("COPY (SELECT * FROM provider_risk_scores ORDER BY npi) TO STDOUT") as copy:
            for block in copy:
                out += block
        return bytes(out)


def without_medicaid(source: Path, target: Path) -> Path:
    """The dataset at `source` whose payments lost every Medicaid row (a truncated feed)."""
    import shutil

    import polars as pl

    shutil.copytree(source, target)
    payments = pl.read_parquet(source / "payments_combined.parquet")
    payments.filter(pl.col("program") != "Medicaid").write_parquet(
        target / "payments_combined.parquet"
    )
    return target


def payments_as_parts(data: Path, parts: int) -> Path:
    """A dataset's payments_combined.parquet as a directory of `parts` parts of equal rows,
    in row order; the directory."""
    frame = pl.read_parquet(data / "payments_combined.parquet")
    (data / "payments_combined.parquet").unlink()
    folder = data / "payments_combined"
    folder.mkdir()
    n = frame.height
    for i in range(parts):
        lo, hi = i * n // parts, (i + 1) * n // parts
        frame.slice(lo, hi - lo).write_parquet(folder / f"part-{i:05d}.parquet")
    return folder
