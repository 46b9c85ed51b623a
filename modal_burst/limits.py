"""Modal's limits a burst must stay within, and what a run of a given size asks of them.

From Modal's scaling guide ("Limits"): a function holds at most 25,000 inputs in total and
2,000 pending (1,000,000 pending for `.spawn`), and one `.map` runs at most 1,000 inputs at
once. Workspace plans cap concurrent containers as well (a Starter workspace is reported at
100; unverified), which `max_containers` cannot exceed in practice. The driver keeps every
map within `modal_map_window` inputs (<= 1,000, so <= 2,000 pending always holds): Modal's
client throttles a map at the server's `max_inputs_outstanding` as well
(`parallel_map.py`), so the window is a cap that holds whatever the server answers, at the
price of one wait for a window's slowest input before the next (twice at 5x seed).
`check` prints these figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from scoring.config import Settings
from scoring.runs.plan import auto_shards

FUNCTION_TOTAL_INPUTS = 25_000
FUNCTION_PENDING_INPUTS = 2_000
SPAWN_PENDING_INPUTS = 1_000_000
MAP_CONCURRENT_INPUTS = 1_000
STARTER_WORKSPACE_CONTAINERS = 100  # reported, not verified on an account

SEED_PROVIDERS = 1_788_105
SEED_PAYMENT_ROWS = 45_600_000


@dataclass(frozen=True)
class BurstSize:
    """The inputs a run of this size sends to each mapped function, and per `.map` call."""

    providers: int
    payment_rows: int
    shards: int
    batches: int  # an upper bound: each of the shards' buckets may end in a short batch
    map_window: int
    max_containers: int

    @property
    def largest_map(self) -> int:
        return min(self.map_window, max(self.shards, self.batches))

    def problems(self) -> list[str]:
        """Each limit this size breaks, in words; empty when it fits."""
        found = []
        if self.largest_map > MAP_CONCURRENT_INPUTS:
            found.append(f"a .map of {self.largest_map} inputs > {MAP_CONCURRENT_INPUTS}")
        for name, inputs in (("stage_shard", self.shards), ("score_batch", self.batches)):
            if inputs > FUNCTION_TOTAL_INPUTS:
                found.append(f"{name}: {inputs} inputs > {FUNCTION_TOTAL_INPUTS} per function")
        return found


def burst_size(cfg: Settings, providers: int, payment_rows: int) -> BurstSize:
    """What a burst of this many providers and payment rows asks for, under `cfg` (the burst
    settings: modal_shard_rows and modal_batch_size, as run_overrides freezes them)."""
    shard_cfg = cfg.model_copy(update={"shard_rows": cfg.modal_shard_rows})
    shards = cfg.shards or auto_shards(payment_rows, shard_cfg)
    batches = -(-providers // cfg.modal_batch_size) + shards
    return BurstSize(
        providers,
        payment_rows,
        shards,
        batches,
        cfg.modal_map_window,
        cfg.modal_max_containers,
    )
