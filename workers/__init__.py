"""Celery fleet (SPEC §1): `celery -A workers worker|beat|flower`.

A full run is a prepare task, then a chord of one score_batch task per batch
gathered by merge_and_calibrate (which publishes). Tasks are thin wrappers over
scoring.stages: this package decides where a step runs, never what it computes.
"""

import sys

from scoring.config import SettingsError

try:
    from workers.app import app
except SettingsError as exc:  # a bad CLAIDEX_* variable: one line, for the CLI and celery alike
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

__all__ = ["app"]
