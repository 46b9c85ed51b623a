"""The engine-agnostic run steps (SPEC §2): prepare, score_batch, merge_and_calibrate."""

from scoring.stages.drive import prepare
from scoring.stages.merge import merge_and_calibrate
from scoring.stages.score_batch import score_batch

__all__ = ["merge_and_calibrate", "prepare", "score_batch"]
