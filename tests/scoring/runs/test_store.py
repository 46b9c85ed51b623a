"""The run store on a local filesystem (scoring.runs.local_store): whole-or-absent writes,
the bytes of the path functions it replaced, listings without glob, create-once claims,
prefix deletes, and errors that name the torn or foreign file."""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from scoring.errors import RunFileError, RunStateError
from scoring.runs.local_store import LocalRunStore, write_bucketed_atomic, write_parquet_atomic
from scoring.runs.store import RunPaths, run_store

FRAME = pl.DataFrame({"npi": [1, 2, 3, 4], "v": ["a", "b", "c", "d"]})


def test_the_run_store_of_a_run_is_its_directory(tmp_path: Path) -> None:
    store = run_store(RunPaths(tmp_path / "run"))
    store.write_json("stages/plan.json", {"shards": 3})
    assert (tmp_path / "run" / "stages" / "plan.json").is_file()
    assert store.location("stages/plan.json") == str(tmp_path / "run" / "stages" / "plan.json")


def test_a_frame_is_written_with_the_bytes_of_the_path_functions(tmp_path: Path) -> None:
    """A resume across versions reads stage files: the store writes what they wrote."""
    store = LocalRunStore(tmp_path / "run")
    store.write_frame("stats/x.parquet", FRAME)
    write_parquet_atomic(FRAME, tmp_path / "x.parquet")
    assert (tmp_path / "run/stats/x.parquet").read_bytes() == (tmp_path / "x.parquet").read_bytes()
    assert_frame_equal(store.read_frame("stats/x.parquet"), FRAME)

    bucketed = FRAME.with_columns(b=pl.col("npi") % 2)
    store.write_bucketed("stages/s/00000/rows.parquet", bucketed, "b", "zstd")
    write_bucketed_atomic(bucketed, tmp_path / "rows.parquet", "b", "zstd")
    written = (tmp_path / "run/stages/s/00000/rows.parquet").read_bytes()
    assert written == (tmp_path / "rows.parquet").read_bytes()


def test_a_write_is_whole_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that dies before its rename leaves the old file and a hidden temporary,
    which no listing returns."""
    store = LocalRunStore(tmp_path)
    store.write_frame("stages/s/00000/rows.parquet", FRAME)
    store.write_json("stages/s/00000/done.json", {"rows": 4})
    before = (tmp_path / "stages/s/00000/rows.parquet").read_bytes()

    def died(_src: object, _dst: object) -> None:
        raise OSError("killed before the rename")

    monkeypatch.setattr("scoring.runs.local_store.os.replace", died)
    with pytest.raises(OSError, match="killed"):
        store.write_frame("stages/s/00000/rows.parquet", FRAME.head(1))
    with pytest.raises(OSError, match="killed"):
        store.write_json("stages/s/00000/done.json", {"rows": 1})
    monkeypatch.undo()
    assert (tmp_path / "stages/s/00000/rows.parquet").read_bytes() == before
    assert store.read_json("stages/s/00000/done.json") == {"rows": 4}
    left = sorted(p.name for p in (tmp_path / "stages/s/00000").iterdir())
    assert len(left) == 4 and all(n.endswith(".tmp") for n in left if n.startswith("."))
    assert store.list_keys("stages", "rows.parquet") == ["stages/s/00000/rows.parquet"]
    assert store.list_keys("stages", "done.json") == ["stages/s/00000/done.json"]


def test_listings_are_sorted_and_take_no_pattern_syntax(tmp_path: Path) -> None:
    """A root holding '*' or '[' lists only its own keys; a decoy beside it that the root
    read as a pattern would match is not listed."""
    store = LocalRunStore(tmp_path / "runs[1]*")
    decoy = LocalRunStore(tmp_path / "runs[1]-other")
    for task in (2, 0, 11, 1):
        store.write_json(f"stages/count/{task:05d}/done.json", {"task": task})
    store.write_json("stages/count/00003/task.json", {})  # another name: not listed
    store.write_json("stages/ingest/00000/done.json", {})  # another stage: not listed
    decoy.write_json("stages/count/00007/done.json", {})
    assert store.list_keys("stages/count", "done.json") == [
        f"stages/count/{t:05d}/done.json" for t in (0, 1, 2, 11)
    ]
    assert store.list_keys("stages", "done.json")[-1] == "stages/ingest/00000/done.json"
    assert store.list_keys("stages/peer_stats", "done.json") == []  # nothing there: empty
    assert store.list_keys("stages/count", "*.json") == []  # a name, not a pattern
    assert store.exists("stages/count/00011/done.json")
    assert not store.exists("stages/count/00011")  # a prefix is not a key
    assert not store.exists("stages/count/00012/done.json")


def test_a_claim_is_made_once_whole(tmp_path: Path) -> None:
    """Of many racing claimants exactly one creates the key, and its content stays."""
    store = LocalRunStore(tmp_path)
    with ThreadPoolExecutor(max_workers=16) as pool:
        won = list(pool.map(lambda i: store.claim("claims/run-id.json", {"by": i}), range(32)))
    assert won.count(True) == 1
    assert store.read_json("claims/run-id.json") == {"by": won.index(True)}
    assert not store.claim("claims/run-id.json", {"by": "late"})
    assert store.read_json("claims/run-id.json") == {"by": won.index(True)}
    assert os.listdir(tmp_path / "claims") == ["run-id.json"]  # no temporary left


def test_delete_removes_a_prefix_or_a_key_and_nothing_else(tmp_path: Path) -> None:
    store = LocalRunStore(tmp_path)
    for key in ("stages/a/00000/x.json", "stages/a/00001/x.json", "stages/b/00000/x.json"):
        store.write_json(key, {})
    store.write_json("run.json", {})
    store.delete("stages/a")
    store.delete("run.json")
    store.delete("chunks")  # missing: no error
    assert store.list_keys("", "x.json") == ["stages/b/00000/x.json"]
    assert not store.exists("run.json")
    with pytest.raises(RunStateError, match="whole run store"):
        store.delete("")
    assert store.exists("stages/b/00000/x.json")


@pytest.mark.parametrize("key", ["../x.json", "/etc/x.json", "stages/../../x.json", "a//b"])
def test_a_key_never_leaves_the_run(tmp_path: Path, key: str) -> None:
    with pytest.raises(RunStateError, match="not a run-store key"):
        LocalRunStore(tmp_path / "run").write_json(key, {})
    assert not (tmp_path / "x.json").exists()


def test_a_torn_or_foreign_file_is_named_by_its_key(tmp_path: Path) -> None:
    """Reading one bucket of many tasks' files: a torn file, or one of other columns, is
    named (its location); so is a torn single frame."""
    store = LocalRunStore(tmp_path / "run[*]")
    keys = [f"stages/ingest/{t:05d}/rows.parquet" for t in range(3)]
    for key in keys:
        store.write_bucketed(key, FRAME.with_columns(b=pl.col("npi") % 2), "b")
    odd = store.read_bucket(keys, "b", 1)
    assert odd.to_dict(as_series=False) == {"npi": [1, 3] * 3, "v": ["a", "c"] * 3}
    assert store.read_bucket(keys, "b", 0, ["npi"])["npi"].to_list() == [2, 4] * 3

    (tmp_path / "run[*]" / keys[1]).write_bytes(b"PAR1 torn")
    with pytest.raises(RunFileError, match=re.escape(f"{store.location(keys[1])}: cannot read")):
        store.read_bucket(keys, "b", 1)
    with pytest.raises(RunFileError, match=re.escape(f"{store.location(keys[1])}: cannot read")):
        store.read_frame(keys[1])
    foreign = FRAME.with_columns(b=pl.col("npi") % 2, v=pl.lit(1.5))
    store.write_bucketed(keys[1], foreign, "b")
    with pytest.raises(RunFileError, match=re.escape(f"{store.location(keys[1])}: its columns")):
        store.read_bucket(keys, "b", 1)
    with pytest.raises(RunFileError, match=re.escape(f"{store.location('x.parquet')}: cannot")):
        store.read_frame("x.parquet")  # missing


def test_a_bucket_spanning_row_groups_and_files_of_the_old_layout_read_whole_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buckets cut across row groups (3 rows each here), beside a file in the layout before
    (a pyarrow row group per bucket, as a resumed run's earlier tasks wrote it): a bucket
    reads whole, file by file, source order kept; a row without a bucket is refused."""
    import pyarrow.parquet as pq

    from scoring.errors import RunStateError
    from scoring.runs import local_store
    from scoring.runs.local_store import read_buckets

    monkeypatch.setattr(local_store, "BUCKET_ROW_GROUP", 3)
    rows = pl.DataFrame({"n": list(range(20)), "b": [i % 3 for i in range(20)]})
    write_bucketed_atomic(rows, tmp_path / "new.parquet", "b")
    assert pq.ParquetFile(tmp_path / "new.parquet").num_row_groups == 7
    with pq.ParquetWriter(tmp_path / "old.parquet", rows.to_arrow().schema) as writer:
        for value in (0, 1, 2):
            part = rows.filter(pl.col("b") == value).to_arrow()
            writer.write_table(part, row_group_size=part.num_rows)
    files = [tmp_path / "new.parquet", tmp_path / "old.parquet"]
    for value in (0, 1, 2):
        mine = [n for n in range(20) if n % 3 == value]
        assert read_buckets(files, "b", value)["n"].to_list() == mine + mine
    with pytest.raises(RunStateError, match="1 row\\(s\\) without a b"):
        holed = rows.with_columns(b=pl.when(pl.col("n") == 0).then(None).otherwise("b"))
        write_bucketed_atomic(holed, tmp_path / "x.parquet", "b")
