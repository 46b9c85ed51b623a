"""Where datasets and runs live on the volume: the same run-directory layout as every engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from scoring.location import is_url
from scoring.runs.roots import run_at
from scoring.runs.store import RunPaths, checked_run_id

DATASETS = "datasets"
RUNS = "runs"
PRUNED = "pruned.json"  # in a run directory: `prune` removed its batch files (what, when)
DEFAULT_KEEP = 3  # `prune`: the newest runs left whole
# Modal documents v1 volumes for a handful of concurrent writers and v2 for hundreds;
# a burst has up to 300 containers committing at once.
VOLUME_VERSION = 2


@dataclass(frozen=True)
class VolumeLayout:
    """The volume as a function sees it, mounted at `root` (a temporary directory in tests).
    `run_root` an s3:// URL (CLAIDEX_MODAL_RUN_ROOT): runs live there instead of the
    volume's runs/; a dataset named by an s3:// URL is read from there."""

    root: Path
    run_root: str = ""

    def dataset(self, name: str) -> Path | str:
        return name if is_url(name) else self.root / DATASETS / name

    def upload_record(self, name: str) -> Path:
        return self.root / upload_record_key(name)

    def run(self, run_id: str) -> RunPaths:
        if is_url(self.run_root):
            return run_at(self.run_root, run_id)
        return RunPaths(self.root / RUNS / checked_run_id(run_id))


def dataset_key(name: str) -> str:
    """A dataset's path inside the volume, as the client-side Volume API names it."""
    return str(PurePosixPath(DATASETS) / name)


def upload_record_key(name: str) -> str:
    """When a dataset was uploaded: beside it, never inside the dataset's own tables."""
    return f"{dataset_key(name)}.uploaded.json"


def run_key(run_id: str) -> str:
    """A run directory's path inside the volume."""
    return str(PurePosixPath(RUNS) / checked_run_id(run_id))


def named_volume(name: str, *, version: int = VOLUME_VERSION, create: bool = True) -> Any:
    """The burst volume by name, created as v2 when missing. An existing volume of another
    version makes Modal raise InvalidError ('exists but has version v1') when it is first
    used; `version=1, create=False` reads an old v1 volume (download, status)."""
    import modal

    return modal.Volume.from_name(name, create_if_missing=create, version=version)


def migration_steps(name: str) -> str:
    """How to move from an older v1 volume of this name to a new v2 one, in one line."""
    return (
        f"burst mode needs a v{VOLUME_VERSION} volume: `modal volume rename {name} {name}-v1` "
        f"(old results stay there: `download RUN DIR --volume {name}-v1 --volume-version 1`), "
        "then `python -m modal_burst upload DIR` creates a new one; then redeploy "
        "(`modal deploy -m modal_burst.app`): deployed functions and beat's run_full keep "
        "the volume they were deployed with until then"
    )
