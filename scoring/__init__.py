"""Claidex provider risk scoring: methodology v1 (SPEC §4) and the engine-agnostic run steps."""

import logging

# A library logs, the application decides where to: silent unless a handler is configured
# (Celery workers configure one; the CLI keeps its one-line errors).
logging.getLogger(__name__).addHandler(logging.NullHandler())
