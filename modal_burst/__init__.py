"""Modal burst mode (SPEC §1): the same run steps in up to 300 Modal containers.

`bodies` holds what each Modal function does (plain functions over a directory laid
out like the volume), `app` decides where they run, `driver` dispatches a run.
"""
