"""SPEC §7 bad input: clear errors for broken files, quarantine (with reasons) for bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from claidex.cli import main
from scoring.errors import InputError
from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths
from tests.builders import npi, score, write_dataset


def _good_rows() -> dict[str, list[dict]]:
    providers = [{"npi": npi(i)} for i in range(1, 6)]
    payments = [
        {"npi": npi(i), "year": year, "payments": 100.0 * i + year, "claims": 10.0 + i}
        for i in range(1, 6)
        for year in (2022, 2023)
    ]
    return {"providers": providers, "payments": payments}


def _rewrite(path: Path, transform) -> None:
    transform(pl.read_parquet(path)).write_parquet(path)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", **_good_rows())
    _rewrite(data / "providers.parquet", lambda df: df.drop("state"))
    with pytest.raises(InputError, match=r"providers\.parquet: required column 'state' is missing"):
        score(data, tmp_path / "run")
    ledger = RunLedger(RunPaths(tmp_path / "run")).read()
    assert ledger["status"] == "failed"
    assert ledger["failed_step"] == "prepare"
    assert "state" in ledger["error"]


def test_wrong_type_names_file_and_column(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", **_good_rows())
    _rewrite(
        data / "payments_combined.parquet",
        lambda df: df.with_columns(pl.col("payments").cast(pl.String)),
    )
    with pytest.raises(
        InputError,
        match=r"payments_combined\.parquet: column 'payments' has type String, expected number",
    ):
        score(data, tmp_path / "run")


def test_cli_prints_one_clear_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    data = write_dataset(tmp_path / "data", **_good_rows())
    (data / "exclusions.parquet").unlink()
    code = main(["run", "--data", str(data), "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert err.startswith("error: ") and "exclusions.parquet: input file is missing" in err
    assert "Traceback" not in err


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_is_scored(tmp_path: Path) -> None:
    rows = _good_rows()
    bad_payments = [
        {"npi": "12345", "year": 2023},  # too short
        {"npi": "1234567890", "year": 2023},  # wrong check digit
        {"npi": "12345678AB", "year": 2023},  # not digits
        {"npi": None, "year": 2023},
        {"npi": npi(1), "year": 2023, "payments": -5.0},
        {"npi": npi(2), "year": 2023, "claims": float("nan")},
        {"npi": npi(3), "year": 2023, "beneficiaries": float("inf")},
        {"npi": npi(4), "year": None},
        {"npi": npi(4), "year": 2150},
        {"npi": npi(5), "year": 2023, "program": ""},
        {"npi": npi(5), "year": 2023, "payments": 2e12},  # would overflow exact sums
    ]
    clean = write_dataset(tmp_path / "clean", **rows)
    dirty = write_dataset(
        tmp_path / "dirty",
        providers=[*rows["providers"], {"npi": "1234567890"}],
        payments=[*rows["payments"], *bad_payments, rows["payments"][3]],  # + an exact duplicate
    )
    clean_scores = score(clean, tmp_path / "clean-run")
    dirty_scores = score(dirty, tmp_path / "dirty-run")
    assert_frame_equal(dirty_scores, clean_scores)

    quarantine = pl.read_parquet(tmp_path / "dirty-run" / "quarantine.parquet")
    reasons = dict(
        zip(
            quarantine["source"] + ":" + quarantine["source_row"].cast(pl.String),
            quarantine["reason"],
            strict=True,
        )
    )
    first_bad = len(rows["payments"])
    assert reasons == {
        f"payments_combined:{first_bad + 0}": "npi not 10 digits",
        f"payments_combined:{first_bad + 1}": "npi check digit invalid",
        f"payments_combined:{first_bad + 2}": "npi not 10 digits",
        f"payments_combined:{first_bad + 3}": "npi missing",
        f"payments_combined:{first_bad + 4}": "payments negative",
        f"payments_combined:{first_bad + 5}": "claims not finite",
        f"payments_combined:{first_bad + 6}": "beneficiaries not finite",
        f"payments_combined:{first_bad + 7}": "year missing",
        f"payments_combined:{first_bad + 8}": "year outside 1990-2100",
        f"payments_combined:{first_bad + 9}": "program missing",
        f"payments_combined:{first_bad + 10}": "payments above 1e+12",
        f"payments_combined:{first_bad + 11}": "duplicate row",
        "providers:5": "npi check digit invalid",
    }
    # Nothing is lost: the quarantined record holds the whole original row.
    record = json.loads(quarantine.filter(pl.col("reason") == "payments negative")["record"][0])
    assert record["npi"] == npi(1) and record["payments"] == -5.0 and record["year"] == 2023
    duplicate = json.loads(quarantine.filter(pl.col("reason") == "duplicate row")["record"][0])
    assert duplicate["npi"] == rows["payments"][3]["npi"]
    assert duplicate["payments"] == rows["payments"][3]["payments"]

    report = json.loads((tmp_path / "dirty-run" / "report.json").read_text())
    assert report["quarantined"]["total"] == 13
    assert report["quarantined"]["by_reason"]["payments_combined: npi not 10 digits"] == 2
    valid = report["input_counts"]["payment_rows_valid"]
    assert valid + 12 == len(rows["payments"]) + len(bad_payments) + 1


def test_duplicate_provider_npi_keeps_the_first_record(tmp_path: Path) -> None:
    rows = _good_rows()
    data = write_dataset(
        tmp_path / "data",
        providers=[*rows["providers"], {"npi": npi(1), "taxonomy_1": "999999999X"}],
        payments=rows["payments"],
    )
    scores = score(data, tmp_path / "run")
    assert scores.filter(pl.col("npi") == npi(1))["peer_taxonomy"].item() == "207Q00000X"
    quarantine = pl.read_parquet(tmp_path / "run" / "quarantine.parquet")
    assert quarantine.select("source", "source_row", "reason").rows() == [
        ("providers", 5, "duplicate npi")
    ]


def test_no_valid_payment_rows_is_a_clear_error(tmp_path: Path) -> None:
    data = write_dataset(
        tmp_path / "data",
        providers=[{"npi": npi(1)}],
        payments=[{"npi": "1234567890", "year": 2023}],
    )
    with pytest.raises(InputError, match="no valid payment rows"):
        score(data, tmp_path / "run")
    assert pl.read_parquet(tmp_path / "run" / "quarantine.parquet").height == 1


def _corrupt_pages(path: Path) -> None:
    """Garbage in the middle of the data pages; the footer stays intact."""
    frame = pl.read_parquet(path)
    frame.write_parquet(path, compression="zstd", statistics=False)
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    for offset in range(8, len(raw) - footer - 8, 3):
        raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def _unsigned(path: Path, column: str, value: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    values = pa.array([value] * table.num_rows, type=pa.uint64())
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, values), path)


def _duplicate_column(path: Path, column: str) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.append_column(column, table[column]), path)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "part-0.parquet").write_bytes(b"")


BROKEN_INPUTS = {
    "uint64 year beyond Int64": (
        "payments_combined.parquet",
        lambda p: _unsigned(p, "year", 2**63 + 5),
        "column 'year' holds 9223372036854775813, beyond the Int64 range",
    ),
    "uint64 entity_type_code": (
        "providers.parquet",
        lambda p: _unsigned(p, "entity_type_code", 2**64 - 1),
        "column 'entity_type_code' holds 18446744073709551615, beyond the Int64 range",
    ),
    "duplicate column names": (
        "payments_combined.parquet",
        lambda p: _duplicate_column(p, "year"),
        "not a readable Parquet file (column with name 'year' has more than one occurrence)",
    ),
    "corrupt data pages": ("payments_combined.parquet", _corrupt_pages, "cannot be read ("),
    "a directory": ("payments_combined.parquet", _directory, "is a directory, not a Parquet file"),
}


@pytest.mark.parametrize("case", list(BROKEN_INPUTS))
def test_broken_files_end_in_one_line_and_a_failed_ledger(
    tmp_path: Path, capsys, case: str
) -> None:
    """Issue 11: exit 2, one line naming the file and the reason, ledger failed, no results."""
    data = write_dataset(tmp_path / "data", **_good_rows())
    name, damage, reason = BROKEN_INPUTS[case]
    damage(data / name)
    run = tmp_path / "run"
    code = main(["run", "--data", str(data), "--run-dir", str(run), "--quiet", "--no-publish"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"error: {data / name}: ") and reason in err, err
    ledger = RunLedger(RunPaths(run)).read()
    assert (ledger["status"], ledger["failed_step"]) == ("failed", "prepare")
    assert not (run / "scores.parquet").exists() and not (run / "run.json").exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_unwritable_run_directory_is_one_line(tmp_path: Path, capsys, where: str) -> None:
    data = write_dataset(tmp_path / "data", **_good_rows())
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    run = blocker if where == "a file" else blocker / "run"
    code = main(["run", "--data", str(data), "--run-dir", str(run), "--quiet", "--no-publish"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert err.startswith(f"error: {run}: the run directory cannot be created or written (")
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("run_id", ["../x", "/tmp/elsewhere", "a/b", "..", ".hidden", ""])
def test_run_ids_never_name_paths(tmp_path: Path, run_id: str) -> None:
    import subprocess
    import sys

    from scoring.errors import RunStateError
    from scoring.runs.store import checked_run_id
    from workers.tasks import run_paths

    with pytest.raises(RunStateError, match="is not a plain name"):
        run_paths(run_id)  # what every task does with the id in its message
    assert checked_run_id("20261201T000000Z-abc123-incremental") == (
        "20261201T000000Z-abc123-incremental"
    )
    if run_id:
        result = subprocess.run(
            [sys.executable, "-m", "workers", "full", "--data", str(tmp_path), "--run-id", run_id],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"},
        )
        assert result.returncode == 2
        assert result.stderr.strip().endswith("a run id never names a path")


def test_absurdly_long_names_are_matched_in_linear_time(tmp_path: Path) -> None:
    """Issue 11: a 20,000-character SNF name and display name once built a substring table
    cubic in the length (> 5 GB at 2,000 characters); one Aho-Corasick pass matches them."""
    rows = _good_rows()
    long_name = "SUNNY " * 3_400  # 20,400 characters
    rows["providers"][0]["display_name"] = long_name
    rows["providers"][1]["display_name"] = "SUNNY ACRES"
    entities = [
        {"entity_id": "S1", "name": long_name + "CARE"},
        {"entity_id": "S2", "name": "SUNNY ACRES NURSING"},
    ]
    data = write_dataset(tmp_path / "data", entities=entities, **rows)
    scores = score(data, tmp_path / "run")
    assert scores.height == 5
    assert scores.filter(pl.col("npi") == npi(2))["snf_entity_id"].to_list() == ["S2"]
    assert scores.filter(pl.col("npi") == npi(1))["snf_entity_id"].to_list() == ["S1"]
    assert pl.read_parquet(RunPaths(tmp_path / "run").quarantine).is_empty()


def test_which_duplicate_record_wins_never_depends_on_row_order(tmp_path: Path) -> None:
    """Issue 11.1: of the records sharing an NPI (or an entity id) the one whose whole record
    sorts first is kept, whichever comes first in the file."""
    rows = _good_rows()
    first = {"npi": npi(1), "display_name": "ZED CLINIC", "taxonomy_1": "207Q00000X"}
    second = {"npi": npi(1), "display_name": "ACME CLINIC", "taxonomy_1": "999999999X"}
    snf = [{"entity_id": "S1", "name": "ZED CARE HOME"}, {"entity_id": "S1", "name": "ACME CARE"}]
    outputs = []
    for order in (1, -1):
        others = [{**rows["providers"][1], "display_name": "ACME CARE"}, *rows["providers"][2:]]
        providers = [*others, *[first, second][::order]]
        data = write_dataset(
            tmp_path / f"d{order}",
            providers=providers,
            payments=rows["payments"],
            entities=snf[::order],
        )
        scores = score(data, tmp_path / f"r{order}")
        kept = scores.filter(pl.col("npi") == npi(1))
        assert kept["peer_taxonomy"].item() == "999999999X"  # 'ACME CLINIC' sorts first
        matched = scores.filter(pl.col("npi") == npi(2))["snf_entity_id"].item()
        assert matched == "S1"  # the entity record kept is 'ACME CARE', not 'ZED CARE HOME'
        outputs.append((tmp_path / f"r{order}" / "scores.parquet").read_bytes())
    assert outputs[0] == outputs[1]
