"""The run's steps: the step table (pipeline.py), one module per prepare stage, and the
SPEC's run steps (score_batch, merge, publish). Import what you need from its module."""
