"""Exception types. Which failures are worth a retry is decided in scoring.runs.retry_policy."""

from __future__ import annotations


class ClaidexError(Exception):
    """Base class: an error whose message is fit to show a user as one line."""


class InputError(ClaidexError):
    """Input that cannot be scored: a missing file, a missing or ill-typed column."""


class RunStateError(ClaidexError):
    """A run step asked for something the run directory does not hold (yet)."""


class RunFileError(RunStateError):
    """A run-directory file is missing or unreadable (storage trouble or a damaged run)."""


class RunFileMissingError(RunFileError, FileNotFoundError):
    """A run file that is not there (a missing object of an object-store run, as a missing
    file is for a directory): what callers that treat absence as 'not yet' catch."""


class GaveUpError(RunStateError):
    """A retry budget ran out: final, and handed back, not raised, where an engine retries any
    raise (retry_policy's EXHAUSTED)."""


class BatchGaveUpError(GaveUpError):
    """A batch killed its worker too often (e.g. out of memory): it fails instead of looping."""


class StepGaveUpError(GaveUpError):
    """A step (prepare, a stage shard, reduce, combine, merge) killed its worker too often."""


class TransientError(ClaidexError):
    """A failure that may succeed when retried (database, graph, storage hiccups)."""


class StorageFullError(TransientError):
    """The run directory's disk is full: the step stalls the run (never fails it) and runs
    again once space is freed (the watchdog resumes a stalled fleet run)."""


class UnreachableError(TransientError):
    """A server is down, restarting or unreachable: an outage to ride out for a while."""


class StoreUnreachableError(UnreachableError):
    """The object store did not answer within its outage window (CLAIDEX_S3_OUTAGE_WINDOW)."""
