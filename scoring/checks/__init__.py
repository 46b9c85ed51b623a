"""Checks before publish: a run's measures against the run on the table, and the verdicts."""
