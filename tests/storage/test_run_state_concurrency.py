"""Many writers change one run's state at once and no update is lost: a lock on a
filesystem, a compare-and-swap (If-Match) on S3 (issue 25)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from scoring.runs.ledger import RunLedger
from scoring.runs.store import RunPaths

WRITERS = 12
UPDATES = 15


def _write(location: str, writer: int) -> None:
    """One writer: its own fields, one at a time, plus timings (a read-modify-write of a
    shared dict) and a batch's event log."""
    ledger = RunLedger(RunPaths(location))
    for update in range(UPDATES):
        ledger.update(**{f"w{writer}-{update}": update})
        ledger.record_timing(f"step-{writer}-{update}", 0.5)
        ledger.batch_started(writer, worker=f"w{writer}", redelivered=False)


@pytest.mark.parametrize("where", ["filesystem", "s3"])
def test_concurrent_writers_lose_no_update(
    where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        location = f"{request.getfixturevalue('s3_env')['root']}/state"
    else:
        location = str(tmp_path / "state")
    with ProcessPoolExecutor(WRITERS, mp_context=get_context("spawn")) as pool:
        list(pool.map(_write, [location] * WRITERS, range(WRITERS)))
    ledger = RunLedger(RunPaths(location))
    state = ledger.read()
    wanted = {f"w{w}-{u}" for w in range(WRITERS) for u in range(UPDATES)}
    assert wanted <= set(state), sorted(wanted - set(state))[:10]
    timings = {f"step-{w}-{u}" for w in range(WRITERS) for u in range(UPDATES)}
    assert set(state["timings"]) == timings
    assert ledger.batch_executions() == dict.fromkeys(range(WRITERS), UPDATES)
