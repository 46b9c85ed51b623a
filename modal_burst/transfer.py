"""Datasets up to the volume, run results down from it (client side, no container needed)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from modal.exception import NotFoundError

from modal_burst.layout import dataset_key, run_key, upload_record_key
from scoring.errors import InputError, RunStateError
from scoring.inputs.contract import CORE_FILES, GRAPH_FILES, table_files
from scoring.runs.ledger import parse_record
from scoring.runs.store import RunPaths

_RUN = RunPaths(Path("run"))  # only for the file names of the shared run-directory layout
RESULT_FILES = tuple(
    p.name
    for p in (
        _RUN.scores,
        _RUN.report,
        _RUN.report_html,
        _RUN.ledger,
        _RUN.manifest,
        _RUN.quarantine,
        _RUN.input_counts,
    )
)


class VolumeLike(Protocol):
    """The part of modal.Volume used here."""

    def batch_upload(self, force: bool = False) -> Any: ...

    def listdir(self, path: str, *, recursive: bool = False) -> list[Any]: ...

    def read_file(self, path: str) -> Any: ...

    def remove_file(self, path: str, recursive: bool = False) -> None: ...


def dataset_files(directory: Path) -> list[Path]:
    """The dataset's tables (a directory of parts gives its parts); the core ones must all
    be there."""
    missing = [name for name in CORE_FILES if not table_files(directory, name)]
    if missing:
        names = ", ".join(f"{name}.parquet" for name in missing)
        msg = f"{directory}: not a dataset directory (missing {names})"
        raise InputError(msg)
    return [path for name in CORE_FILES + GRAPH_FILES for path in table_files(directory, name)]


def upload_dataset(volume: VolumeLike, directory: Path, name: str) -> list[str]:
    """Replace the volume's dataset `name` with the tables of `directory`."""
    files = dataset_files(directory)
    target = dataset_key(name)
    if entries(volume, upload_record_key(name)):  # never vouching for a half-replaced dataset
        volume.remove_file(upload_record_key(name))
    if entries(volume, target):
        volume.remove_file(target, recursive=True)  # no stale table from an older upload
    uploaded = {"dataset": name, "uploaded_at": datetime.now(UTC).isoformat()}
    with volume.batch_upload(force=True) as batch:
        for path in files:
            batch.put_file(path, str(PurePosixPath(target) / path.relative_to(directory)))
        # last: a run compares it with the scores on the table (bodies.stale_source)
        record = io.BytesIO(json.dumps(uploaded).encode())
        batch.put_file(record, upload_record_key(name))
    return [path.relative_to(directory).as_posix() for path in files]


def entries(volume: VolumeLike, key: str, *, recursive: bool = False) -> list[Any]:
    """What the volume holds under `key`; nothing when the path does not exist."""
    try:
        return volume.listdir(key, recursive=recursive)
    except NotFoundError:
        return []


def volume_json(volume: VolumeLike, key: str) -> dict[str, Any] | None:
    """A JSON object on the volume; None when absent, RunFileError when torn or foreign."""
    try:
        raw = b"".join(volume.read_file(key))
    except FileNotFoundError:
        return None
    return parse_record(raw, key)


def download_run(volume: VolumeLike, run_id: str, directory: Path) -> list[str]:
    """Copy a run's results (scores, report, ledger, manifest, quarantine) into `directory`."""
    present = {PurePosixPath(entry.path).name for entry in entries(volume, run_key(run_id))}
    wanted = [name for name in RESULT_FILES if name in present]
    if not wanted:
        msg = f"run {run_id} is not on the volume (or has no results yet)"
        raise RunStateError(msg)
    directory.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        tmp = directory / f".{name}.part"
        with tmp.open("wb") as handle:
            for block in volume.read_file(str(PurePosixPath(run_key(run_id)) / name)):
                handle.write(block)
        tmp.replace(directory / name)
    return wanted
