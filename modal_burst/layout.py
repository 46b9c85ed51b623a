"""Where datasets and runs live on the volume: the same run-directory layout as every engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from scoring.rundir import RunPaths

DATASETS = "datasets"
RUNS = "runs"


@dataclass(frozen=True)
class VolumeLayout:
    """The volume as a function sees it, mounted at `root` (a temporary directory in tests)."""

    root: Path

    def dataset(self, name: str) -> Path:
        return self.root / DATASETS / name

    def run(self, run_id: str) -> RunPaths:
        return RunPaths(self.root / RUNS / run_id)


def dataset_key(name: str) -> str:
    """A dataset's path inside the volume, as the client-side Volume API names it."""
    return str(PurePosixPath(DATASETS) / name)


def run_key(run_id: str) -> str:
    """A run directory's path inside the volume."""
    return str(PurePosixPath(RUNS) / run_id)
