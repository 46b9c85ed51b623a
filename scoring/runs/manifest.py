"""RunManifest: what prepare decided for a run (window, batches, frozen settings)."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from scoring.config import Settings, frozen_settings
from scoring.errors import RunStateError
from scoring.runs.store import MANIFEST, RunPaths, run_store


@dataclass(frozen=True)
class RunManifest:
    """Written once by prepare; read by every batch and by merge."""

    run_id: str
    kind: str
    source: str
    window_end_year: int
    batches_total: int
    batch_size: int
    providers_scored: int
    input_fingerprint: str
    settings: dict[str, Any] = field(default_factory=dict)
    # Every peer_stats shard kept its members' m1 rank counts (combine checks): batches
    # read those instead of the rank tables; else (older runs, incremental) the lookup.
    member_counts: bool = False
    # Stamped into every chunk: merge rejects chunks left over from an earlier prepare.
    prepare_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def cfg(self) -> Settings:
        """The run's frozen settings (the worker's own environment does not leak in)."""
        return frozen_settings(self.settings)

    def save(self, paths: RunPaths) -> None:
        run_store(paths).write_json(MANIFEST, asdict(self))

    @classmethod
    def load(cls, paths: RunPaths) -> RunManifest:
        store = run_store(paths)
        if not store.exists(MANIFEST):
            msg = f"{paths.where()}: no run.json; prepare has not finished for this run"
            raise RunStateError(msg)
        return cls(**store.read_json(MANIFEST))

    @staticmethod
    def exists(paths: RunPaths) -> bool:
        """Prepare has finished: run.json is written last."""
        return run_store(paths).exists(MANIFEST)
