"""Issue 13: payments_combined/ as a directory of Parquet parts, written by a streaming
`claidex generate`, scores exactly as the same rows in one file, whatever the shard count."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from claidex.dev.sample import generate
from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.errors import InputError
from scoring.inputs.contract import table_files
from scoring.runs.store import read_json

PARTS = "payments_combined"


@pytest.fixture(scope="module")
def parted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("parted") / "data"
    summary = generate(data, providers=1500, seed=21, part_npis=400)
    parts = sorted((data / PARTS).glob("*.parquet"))
    assert len(parts) >= 4 and not (data / f"{PARTS}.parquet").exists()
    assert summary["payment_rows"] == sum(pl.scan_parquet(p).select(pl.len()).collect().item()
                                          for p in parts)  # fmt: skip
    return data


def _single_file_copy(parted: Path, target: Path) -> Path:
    shutil.copytree(parted, target, ignore=shutil.ignore_patterns(PARTS))
    rows = pl.concat([pl.read_parquet(p) for p in table_files(parted, PARTS)])
    rows.write_parquet(target / f"{PARTS}.parquet")
    return target


def test_parts_score_as_the_same_rows_in_one_file(parted: Path, tmp_path: Path) -> None:
    single = _single_file_copy(parted, tmp_path / "single")
    reference = run_local(single, Settings(batch_size=400), run_dir=tmp_path / "one",
                          show_progress=False)  # fmt: skip
    for shards in (1, 5):
        run = run_local(parted, Settings(batch_size=400, shards=shards),
                        run_dir=tmp_path / f"parts-{shards}", show_progress=False)  # fmt: skip
        assert run.scores.read_bytes() == reference.scores.read_bytes()
        assert run.quarantine.read_bytes() == reference.quarantine.read_bytes()
        assert read_json(run.input_counts) == read_json(reference.input_counts)


def test_streaming_generate_is_deterministic_and_a_small_dataset_stays_one_file(
    tmp_path: Path,
) -> None:
    first = generate(tmp_path / "a", providers=800, seed=3, part_npis=300)
    again = generate(tmp_path / "b", providers=800, seed=3, part_npis=300)
    assert first["payment_rows"] == again["payment_rows"]
    for a, b in zip(table_files(tmp_path / "a", PARTS), table_files(tmp_path / "b", PARTS),
                    strict=True):  # fmt: skip
        assert a.read_bytes() == b.read_bytes()
    generate(tmp_path / "a", providers=800, seed=3)  # regenerated in place as one file
    assert table_files(tmp_path / "a", PARTS) == [tmp_path / "a" / f"{PARTS}.parquet"]


def test_bad_part_layouts_are_named(parted: Path, tmp_path: Path) -> None:
    both = tmp_path / "both"
    shutil.copytree(parted, both)
    shutil.copy(table_files(parted, PARTS)[0], both / f"{PARTS}.parquet")
    with pytest.raises(InputError, match=r"both exist: keep one form"):
        run_local(both, Settings(), run_dir=tmp_path / "r1", show_progress=False)

    empty = tmp_path / "empty"
    shutil.copytree(parted, empty)
    for part in (empty / PARTS).iterdir():
        part.unlink()
    with pytest.raises(InputError, match=r"payments_combined/: holds no \.parquet parts"):
        run_local(empty, Settings(), run_dir=tmp_path / "r2", show_progress=False)

    stray = tmp_path / "stray"
    shutil.copytree(parted, stray)
    victim = table_files(stray, PARTS)[2]
    pl.read_parquet(victim).drop("claims").write_parquet(victim)
    with pytest.raises(InputError, match=rf"{victim.name}.*claims"):
        run_local(stray, Settings(shards=3), run_dir=tmp_path / "r3", show_progress=False)

    torn = tmp_path / "torn"
    shutil.copytree(parted, torn)
    victim = table_files(torn, PARTS)[1]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(InputError, match=rf"{victim.name}: not a readable Parquet file"):
        run_local(torn, Settings(shards=3), run_dir=tmp_path / "r4", show_progress=False)


def test_a_parted_dataset_uploads_and_bursts_on_the_modal_standin(
    parted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modal_burst import app as burst_app
    from modal_burst.burst import BurstRequest
    from modal_burst.driver import run_burst
    from modal_burst.layout import VolumeLayout
    from modal_burst.transfer import upload_dataset
    from tests.modal_standin import DirectoryVolume, StandIn

    monkeypatch.delenv("DATABASE_URL", raising=False)
    reference = run_local(parted, Settings(batch_size=400), run_dir=tmp_path / "local",
                          show_progress=False)  # fmt: skip
    volume = DirectoryVolume(tmp_path / "volume")
    uploaded = upload_dataset(volume, parted, "claidex")
    assert sum(name.startswith(f"{PARTS}/part-") for name in uploaded) >= 4
    request = BurstRequest("parts", overrides={"shards": 3, "batch_size": 400}, publish=False)
    with StandIn(burst_app, volume.root).run() as remote:
        assert run_burst(remote, request, show_progress=False).status == "merged"
    assert (
        VolumeLayout(volume.root).run("parts").scores.read_bytes() == reference.scores.read_bytes()
    )


@pytest.mark.parametrize("intruder", ["nested/", "part-9.PARQUET", "notes.txt"])
def test_a_part_directory_holds_only_parts(parted: Path, tmp_path: Path, intruder: str) -> None:
    """Anything but a part (a nested folder, another suffix) is refused, never skipped;
    what writers leave beside parts (dotfiles, _SUCCESS, .crc) is ignored."""
    data = tmp_path / "data"
    shutil.copytree(parted, data)
    folder = data / PARTS
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00009.parquet.tmp").write_text("being written")
    names = [p.name for p in table_files(data, PARTS)]
    assert names == [p.name for p in table_files(parted, PARTS)]  # ignored
    if intruder.endswith("/"):
        (folder / intruder).mkdir()
    else:
        (folder / intruder).write_text("x")
    with pytest.raises(InputError, match=rf"{intruder.rstrip('/')}/?, which is not a \.parquet"):
        run_local(data, Settings(), run_dir=tmp_path / "r", show_progress=False)
