"""A run root: the directory or `s3://bucket/prefix` that holds runs, one per run id.

Everything that finds runs (a run id on a command line, the watchdog's sweep, the latest
full run, the metrics exporter) goes through here, so a root may be either kind."""

from __future__ import annotations

from pathlib import Path

from scoring.runs.object_store import ObjectRunStore, is_url, join_url
from scoring.runs.store import LEDGER, RunPaths, checked_run_id

RunRoot = Path | str  # a directory, or an s3:// URL


def run_at(root: RunRoot, run_id: str) -> RunPaths:
    """The run `run_id` under `root` (a plain name: never a path out of the root)."""
    checked_run_id(run_id)
    if is_url(root):
        return RunPaths(join_url(str(root), run_id))
    return RunPaths(Path(root) / run_id)


def run_ids_under(root: RunRoot, *, holding: str | None = LEDGER) -> list[str]:
    """The run ids under `root` whose run holds `holding` (default: a ledger; None: every
    plain name, for a caller that reads each run's ledger anyway), sorted."""
    if is_url(root):
        store = ObjectRunStore(str(root))  # one listing of the root (+ one HEAD per run)
        names = [name for name in store.list_names("") if _plain(name)]
        if holding is None:
            return names
        return [name for name in names if store.exists(f"{name}/{holding}")]
    folder = Path(root)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if _plain(p.name) and ((p / holding).is_file() if holding is not None else p.is_dir())
    )


def runs_under(root: RunRoot, *, holding: str | None = LEDGER) -> list[RunPaths]:
    return [run_at(root, run_id) for run_id in run_ids_under(root, holding=holding)]


def runs_beside(paths: RunPaths) -> list[RunPaths]:
    """Every run (with a ledger) under the run root that holds `paths`, itself included."""
    if paths.url is not None:
        return runs_under(paths.url.rsplit("/", 1)[0])
    return runs_under(paths.root.parent)  # a local run


def _plain(name: str) -> bool:
    try:
        checked_run_id(name)
    except Exception:
        return False
    return True


def root_text(root: RunRoot) -> str:
    """For messages."""
    return str(root)
