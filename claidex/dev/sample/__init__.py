"""The sample-data generator: a deterministic CMS-like dataset with planted anomalies.

Development only (the `claidex generate` / `claidex demo` commands, the tests, ops/ and the
benchmarks): no engine imports it."""

from claidex.dev.sample.common import PART_NPIS, PLANTED_KINDS, Layout
from claidex.dev.sample.dataset import generate, next_week

__all__ = ["PART_NPIS", "PLANTED_KINDS", "Layout", "generate", "next_week"]
