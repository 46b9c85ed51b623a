"""Methodology v1 (SPEC §4): pure polars, no I/O; each rule by its name."""
