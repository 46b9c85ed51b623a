"""Celery fleet (SPEC §1): chord of score_batch tasks gathered by merge_and_calibrate.

Not built yet — tracked by the Celery fleet issue. The run steps it will wrap
live in scoring.steps and already run on the local engine (claidex.local_engine).
"""
