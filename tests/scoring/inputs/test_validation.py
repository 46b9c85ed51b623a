"""scoring/inputs/validation.py: the one validation path of full and incremental runs (SPEC §7)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.inputs.contract import read_dataset
from scoring.inputs.quarantine import QUARANTINE_SCHEMA, ROW, ROW_HASH, row_hash
from scoring.inputs.validation import (
    CHECKED_PAYMENT_SCHEMA,
    PAYMENT_COLUMNS,
    check_rows,
    drop_payment_copies,
    validate,
)
from tests.builders import frame, npi, write_dataset


def _hostile(directory: Path) -> Path:
    """Bad rows of every kind the rules name, spread so that slices and buckets split them."""
    good = [
        {"npi": npi(i), "year": year, "payments": 100.0 * i + year, "claims": 10.0 + i}
        for i in range(1, 9)
        for year in (2021, 2022, 2023)
    ]
    bad = [
        {"npi": "12345", "year": 2023},
        {"npi": "1234567890", "year": 2023},
        {"npi": None, "year": 2023},
        {"npi": npi(1), "year": 2023, "payments": -5.0},
        {"npi": npi(2), "year": 2023, "claims": float("nan")},
        {"npi": npi(4), "year": None},
        {"npi": npi(5), "year": 2023, "program": "Medi\x00care"},
    ]
    payments = [*good[:10], *bad, *good[10:], good[3], good[20], good[3]]  # + exact copies
    providers = [{"npi": npi(i), "display_name": f"P{i}"} for i in range(1, 9)]
    providers += [
        {"npi": npi(2), "display_name": "A later record"},
        {"npi": "999"},
        {"npi": npi(6), "display_name": "A\x00B"},
        {"npi": npi(7), "display_name": "AAA earlier in order"},
    ]
    exclusions = [
        {"exclusion_id": "E1", "npi": npi(3)},
        {"exclusion_id": None, "npi": npi(4)},
        {"exclusion_id": "E3", "npi": "42"},
        {"exclusion_id": "E4", "npi": ""},
    ]
    return write_dataset(
        directory,
        providers=providers,
        payments=payments,
        exclusions=exclusions,
        entities=[{"entity_id": "S1", "name": "P1 Home"}, {"entity_id": None, "name": "X"}],
        ownership=[{"owner_id": "NOBODY", "owned_id": "S1"}],
        entity_exclusions=[{"entity_id": "GHOST"}],
    )


@pytest.mark.parametrize("shards", [1, 3])
def test_a_full_run_quarantines_what_the_whole_table_check_does(
    tmp_path: Path, shards: int
) -> None:
    """The full run checks slices and judges copies per NPI bucket; the incremental path
    checks whole tables: the same rows, reasons, records and order come out."""
    data = _hostile(tmp_path / "data")
    cfg = Settings(shards=shards, validation_chunk_rows=4, workers=1, report_html=False)
    paths = run_local(data, cfg, run_dir=tmp_path / "run", show_progress=False)
    whole = validate(read_dataset(data, with_graph=True), cfg)
    full = pl.read_parquet(paths.quarantine)
    assert_frame_equal(full, whole.quarantine)
    reasons = set(full["reason"])
    assert {"duplicate row", "duplicate npi", "exclusion_id missing", "npi missing"} <= reasons
    assert "owner_id not in entities" in reasons
    assert not any("__" in record for record in full["record"].drop_nulls())


def _checked(rows: list[dict], first_row: int) -> pl.DataFrame:
    """Checked payment rows (as the row rules leave them) from plain payment rows."""
    raw = frame("payments_combined", rows, {"program": "Medicare", "taxonomy": "T", "state": "CA"})
    return (
        raw.with_row_index(ROW, offset=first_row)
        .with_columns(row_hash(PAYMENT_COLUMNS))
        .with_columns(pl.col("npi").cast(pl.Int64), pl.col("year").cast(pl.Int32))
        .select(list(CHECKED_PAYMENT_SCHEMA))
    )


def test_exact_copies_are_found_across_chunks() -> None:
    """Worked by hand: rows 0-1 in one chunk, 2-3 in the next; row 3 repeats row 0 exactly,
    row 1 differs from row 0 in payments only, so it stays."""
    a = {"npi": npi(1), "year": 2022, "payments": 10.0, "claims": 1.0, "beneficiaries": 1.0}
    b = {**a, "payments": 11.0}
    c = {**a, "year": 2023}
    chunks = [_checked([a, b], 0), _checked([c, a], 2)]
    kept, quarantined = drop_payment_copies(chunks)
    assert kept.columns == PAYMENT_COLUMNS and kept.height == 3
    assert kept["payments"].to_list() == [10.0, 11.0, 10.0]
    assert kept["year"].to_list() == [2022, 2022, 2023]
    assert quarantined.schema == QUARANTINE_SCHEMA
    assert quarantined.select(ROW, "npi", "reason").rows() == [(3, npi(1), "duplicate row")]
    record = json.loads(quarantined["record"][0])
    assert record == {**a, "npi": npi(1), "program": "Medicare", "taxonomy": "T", "state": "CA"}
    assert ROW_HASH not in record


def test_leie_rows_come_out_final() -> None:
    """An empty NPI is no NPI (kept, null); a missing id or a bad NPI is quarantined."""
    rows = frame(
        "exclusions",
        [
            {"exclusion_id": "E1", "npi": npi(3)},
            {"exclusion_id": None, "npi": npi(4)},
            {"exclusion_id": "E3", "npi": "42"},
            {"exclusion_id": "E4", "npi": ""},
        ],
    )
    good, bad = check_rows(rows, "exclusions", Settings(), first_row=100)
    assert good.columns == rows.columns
    assert good.select("exclusion_id", "npi").rows() == [("E1", int(npi(3))), ("E4", None)]
    assert bad.select(ROW, "reason").rows() == [
        (101, "exclusion_id missing"),
        (102, "npi not 10 digits"),
    ]
