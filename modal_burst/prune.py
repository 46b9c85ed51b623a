"""`python -m modal_burst prune`: drop the batch files of old published runs (client side).

Each run leaves one chunk, two input slices and one batch record per batch (~1,200 files
for 300 batches); volumes have per-volume file limits. What stays is everything a reader
or a later run uses: scores, report, ledger, run.json, quarantine, statistics (the
reference of incremental runs) and the Postgres snapshot (`source/`). Rules:

- the newest `keep` runs (by ledger creation time) are never touched;
- only published runs are pruned: a run that is preparing, scoring, merging or
  publishing may be running right now, and a failed, partial or merged-but-unpublished
  run is one somebody may resume or merge (publish) later, which needs its batch files;
- a run whose ledger.json cannot be read (torn, foreign) is skipped and reported;
- `pruned.json` is written last, once the batch files are gone: a prune interrupted
  midway leaves no marker, and the next prune removes what is left.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from modal.volume import FileEntryType

from modal_burst.layout import PRUNED, RUNS, run_key
from modal_burst.transfer import VolumeLike, entries, volume_json
from scoring.errors import RunFileError
from scoring.runs.ledger import utc_now

# the prepare stages' intermediates (a copy of the input), chunks, input slices, batch records
BATCH_FILES = ("stages", "chunks", "batches", "ledger")


@dataclass(frozen=True)
class PruneAction:
    run_id: str
    action: str  # pruned, newest, unfinished, pruned already, unreadable
    status: str
    files: int = 0
    detail: str = ""


def _files_under(volume: VolumeLike, key: str) -> int:
    return sum(1 for e in entries(volume, key, recursive=True) if e.type == FileEntryType.FILE)


def plan(volume: VolumeLike) -> list[tuple[str, dict[str, Any] | RunFileError]]:
    """Every run on the volume with its ledger (or why it cannot be read), newest first;
    an unreadable ledger sorts as oldest."""
    runs = [
        PurePosixPath(entry.path).name
        for entry in entries(volume, RUNS)
        if entry.type == FileEntryType.DIRECTORY
    ]
    ledgers: dict[str, dict[str, Any] | RunFileError] = {}
    for run in runs:
        try:
            ledgers[run] = volume_json(volume, f"{run_key(run)}/ledger.json") or {}
        except RunFileError as exc:
            ledgers[run] = exc

    def created(run: str) -> tuple[str, str]:
        ledger = ledgers[run]
        return (str(ledger.get("created_at", "")) if isinstance(ledger, dict) else "", run)

    return [(run, ledgers[run]) for run in sorted(runs, key=created, reverse=True)]


def prune_runs(volume: VolumeLike, *, keep: int, dry_run: bool = False) -> list[PruneAction]:
    """Remove the batch files of published runs older than the newest `keep` runs."""
    actions = []
    for position, (run_id, ledger) in enumerate(plan(volume)):
        if isinstance(ledger, RunFileError):
            actions.append(PruneAction(run_id, "unreadable", "unknown", detail=str(ledger)))
            continue
        status = str(ledger.get("status", "unknown"))
        if position < keep:
            actions.append(PruneAction(run_id, "newest", status))
            continue
        if status != "published":
            actions.append(PruneAction(run_id, "unfinished", status))
            continue
        base = run_key(run_id)
        present = [f"{base}/{name}" for name in BATCH_FILES if entries(volume, f"{base}/{name}")]
        if not present and entries(volume, f"{base}/{PRUNED}"):
            actions.append(PruneAction(run_id, "pruned already", status))
            continue
        files = sum(_files_under(volume, key) for key in present)
        if not dry_run:
            for key in present:
                volume.remove_file(key, recursive=True)
            marker = {"pruned_at": utc_now(), "removed": list(BATCH_FILES), "files": files}
            with volume.batch_upload(force=True) as batch:  # last: the files are gone
                batch.put_file(io.BytesIO(json.dumps(marker).encode()), f"{base}/{PRUNED}")
        actions.append(PruneAction(run_id, "pruned", status, files))
    return actions
