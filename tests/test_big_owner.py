"""Issue 26, defect 1 end to end: one owner of thousands of SNFs. Memory grows with the
graph's edges, not with the square of the owner's SNFs; scores stay exact and identical
for any shard count (the counts themselves: tests/scoring/methodology/components/
test_ownership_scale.py, against a breadth-first search)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

from claidex.dev.sample import generate
from claidex.local_engine import run_local
from scoring.config import Settings
from tests.big_owner import add_big_owner

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MB = 2_500  # issue 26: the largest process of this run

RUN_MEASURED = """
import json, resource, sys
from claidex.cli import main
code = main(["run", "--data", sys.argv[1], "--run-dir", sys.argv[2], "--quiet", "--workers", "1"])
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"code": code, "peak_mb": peak / 1024}))
"""


def _run_measured(data: Path, run: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RUN_MEASURED, str(data), str(run)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_owner_of_5000_snfs_that_match_no_provider_changes_nothing_and_stays_small(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain"
    generate(plain, providers=20_000, seed=13)
    owned = tmp_path / "owned"
    shutil.copytree(plain, owned)
    add_big_owner(owned, 5_000, matching=False)
    without = _run_measured(plain, tmp_path / "run-plain")
    with_owner = _run_measured(owned, tmp_path / "run-owned")
    assert without["code"] == with_owner["code"] == 0
    assert with_owner["peak_mb"] <= PEAK_LIMIT_MB, with_owner
    scores = (tmp_path / "run-owned" / "scores.parquet").read_bytes()
    assert scores == (tmp_path / "run-plain" / "scores.parquet").read_bytes()
    # the same owner holding each SNF through a company, its SNFs matching providers: every
    # matched provider is a chain provider of all 5,000 (no table of 25 M pairs for it)
    through = tmp_path / "through"
    shutil.copytree(plain, through)
    add_big_owner(through, 5_000, matching=True, companies=True, seed=2)
    measured = _run_measured(through, tmp_path / "run-through")
    assert measured["code"] == 0 and measured["peak_mb"] <= PEAK_LIMIT_MB, measured


def test_an_owner_whose_snfs_match_providers_scores_the_same_at_any_shard_count(
    sample_dataset: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    added = add_big_owner(data, 150, matching=True, seed=4)
    runs = {
        shards: run_local(
            data, Settings(shards=shards, batch_size=700), run_dir=tmp_path / f"s{shards}",
            show_progress=False,
        )
        for shards in (1, 3, 16)
    }  # fmt: skip
    first = runs[1].scores.read_bytes()
    for shards, paths in runs.items():
        assert paths.scores.read_bytes() == first, shards
    per_snf = pl.read_parquet(runs[1].stat("ownership_snf"))
    big = per_snf.join(added.select(pl.col("entity_id").alias("snf_entity_id")), on="snf_entity_id")
    assert big.height > 100  # the owner's SNFs matched providers
    # every provider matched to one of the owner's SNFs is in each of their chains
    assert big["chain_provider_count"].min() >= big.height
    assert big["chain_provider_count"].n_unique() == 1  # one owner set, one count
