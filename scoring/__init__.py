"""Claidex provider risk scoring: methodology v1 (SPEC §4) and the engine-agnostic run steps."""

import logging

# A library logs, the application decides where to: silent unless a handler is configured
# (Celery workers configure one; the CLI keeps its one-line errors).
logging.getLogger(__name__).addHandler(logging.NullHandler())
# The neo4j driver logs each dropped connection at ERROR before raising; with no handler,
# Python's last-resort handler printed it to stderr beside our one-line error (we retry and
# report every failure ourselves). Workers' configured root handler still records it.
logging.getLogger("neo4j").addHandler(logging.NullHandler())
