"""Exception types, and the one place that decides which failures are worth a retry."""

from __future__ import annotations


class ClaidexError(Exception):
    """Base class: an error whose message is fit to show a user as one line."""


class InputError(ClaidexError):
    """Input that cannot be scored: a missing file, a missing or ill-typed column."""


class RunStateError(ClaidexError):
    """A run step asked for something the run directory does not hold (yet)."""


class RunFileError(RunStateError):
    """A run-directory file is missing or unreadable (storage trouble or a damaged run)."""


class BatchGaveUpError(RunStateError):
    """A batch killed its worker too often (e.g. out of memory): it fails instead of looping."""


class TransientError(ClaidexError):
    """A failure that may succeed when retried (database, graph, storage hiccups)."""


RETRYABLE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
)


def is_retryable(exc: BaseException) -> bool:
    """True for failures a task runner should retry with backoff."""
    return isinstance(exc, RETRYABLE_EXCEPTIONS)
