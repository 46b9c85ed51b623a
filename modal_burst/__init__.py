"""Modal burst mode (SPEC §1): the same run steps in up to 300 Modal containers.

Not built yet — tracked by the Modal burst issue. It will wrap scoring.steps.
"""
