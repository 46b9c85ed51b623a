"""Celery fleet (SPEC §1): `celery -A workers worker|beat|flower`.

A full run is a prepare task, then a chord of one score_batch task per batch
gathered by merge_and_calibrate (which publishes). Tasks are thin wrappers over
scoring.stages: this package decides where a step runs, never what it computes.
"""

from workers.app import app

__all__ = ["app"]
