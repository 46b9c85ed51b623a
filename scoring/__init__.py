"""Claidex provider risk scoring: methodology v1 (SPEC §4) and the engine-agnostic run steps."""
