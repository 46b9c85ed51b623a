"""Which failures are transient: the one place every engine asks before it retries.

A failure gets one `Verdict`:
- FINAL: retrying repeats it (bad input, a refused password, a bug, a file nobody may write);
- EXHAUSTED: a retry budget already ran out (a batch that kept killing its worker): final,
  and an engine that retries whatever is raised (Modal) must be handed it, not see it raised;
- TRANSIENT: the same step may succeed later: retry it with backoff (a Celery task retry);
- OUTAGE: a server is down, restarting or unreachable: an outage rider waits for it for a
  window (`steps.outage.through_outage`), then it is TRANSIENT like any other.

Rules by family, decided by type, SQLSTATE or errno, never by message text but in the one
case where libpq gives nothing else (a refused connection attempt, see `_refused`):
- ours: UnreachableError (DatabaseUnavailableError, GraphUnavailableError) is OUTAGE, any
  other TransientError TRANSIENT, GaveUpError (a batch's, a step's) EXHAUSTED, any other
  ClaidexError FINAL;
- Postgres (psycopg): SQLSTATE class 08 and 57P01/57P02/57P03 are OUTAGE; class 53, 40001,
  40P01 and 55P03 TRANSIENT; an OperationalError without SQLSTATE (libpq lost or could not
  make the connection) OUTAGE, unless the server answered and refused us; the rest FINAL;
- Neo4j: ServiceUnavailable (IncompleteCommit too), SessionExpired, TransientError and the
  server's DatabaseError are OUTAGE (`graph_verdict` adds: any OSError on the way to Neo4j);
- Redis: ConnectionError and TimeoutError TRANSIENT, but a refused password is FINAL;
  kombu: OperationalError (the broker connection) TRANSIENT;
- Modal: ConnectionError, ServiceError, ResourceExhaustedError, InternalFailure TRANSIENT;
- disk and sockets (OSError): ConnectionError and TimeoutError TRANSIENT; every other OSError
  FINAL -- a permission error repeats, and a full disk needs someone to free space (then
  `resume` re-runs only what is missing); errno has no exception type, which Celery needs.

Each library is looked up in `sys.modules`, never imported here: an exception of a library
this process never imported cannot exist, and importing `scoring` stays light.
"""

from __future__ import annotations

import shutil
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any

from scoring.errors import ClaidexError, GaveUpError, TransientError, UnreachableError

if TYPE_CHECKING:
    from scoring.runs.store import RunPaths


class Verdict(Enum):
    FINAL = "final"
    EXHAUSTED = "exhausted"
    TRANSIENT = "transient"
    OUTAGE = "outage"


# PostgreSQL SQLSTATEs (Appendix A). Class 08 (connection exception) and a server shutting
# down, restarting or starting up: the server is gone for now.
PG_GONE_CLASSES = ("08",)
PG_GONE = frozenset(
    {"08000", "08001", "08003", "08004", "08006", "08007", "08P01", "57P01", "57P02", "57P03"}
)
# Class 53 (insufficient resources: disk full, out of memory, too many connections), a
# serialization failure, a deadlock, a lock timeout: the server is there, this try lost.
PG_BUSY_CLASSES = ("53",)
PG_BUSY = frozenset({"53000", "53100", "53200", "53300", "53400", "40001", "40P01", "55P03"})
# libpq reports a failed connection attempt without a SQLSTATE (psycopg/generators.py
# `_connect` raises OperationalError from PQerrorMessage, no result to read one from), even
# when the server answered and refused: its message is all there is. Waiting would not
# change a refusal (credentials, pg_hba, a missing database or role).
PG_REFUSALS = ("password authentication failed", "no pg_hba.conf entry", "does not exist")

# DatabaseError: the server failed, not our query (ArcadeDB answers a query that reaches a
# database shutting down with one); IncompleteCommit is a ServiceUnavailable.
NEO4J_GONE = ("ServiceUnavailable", "SessionExpired", "TransientError", "DatabaseError")
REDIS_TRANSIENT = ("ConnectionError", "TimeoutError")
REDIS_FINAL = ("AuthenticationError", "AuthorizationError")  # subclasses of ConnectionError
MODAL_TRANSIENT = ("ConnectionError", "ServiceError", "ResourceExhaustedError", "InternalFailure")


def _loaded(module: str) -> Any:
    """The module if this process imported it, else None (then none of its errors exist)."""
    return sys.modules.get(module)


def _classes(module: Any, names: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    return tuple(getattr(module, name) for name in names)


def _refused(exc: BaseException) -> bool:
    return any(text in str(exc) for text in PG_REFUSALS)


def postgres_verdict(exc: BaseException) -> Verdict | None:
    """A psycopg error's verdict, by class and SQLSTATE; None for any other exception."""
    pg = _loaded("psycopg.errors")
    if pg is None or not isinstance(exc, pg.Error):
        return None
    state = exc.sqlstate
    if state is None:
        if not isinstance(exc, pg.OperationalError) or _refused(exc):
            return Verdict.FINAL
        return Verdict.OUTAGE
    if state in PG_GONE or state.startswith(PG_GONE_CLASSES):
        return Verdict.OUTAGE
    if state in PG_BUSY or state.startswith(PG_BUSY_CLASSES):
        return Verdict.TRANSIENT
    return Verdict.FINAL


def _neo4j_verdict(exc: BaseException) -> Verdict | None:
    neo = _loaded("neo4j.exceptions")
    if neo is None or not isinstance(exc, neo.Neo4jError | neo.DriverError):
        return None
    return Verdict.OUTAGE if isinstance(exc, _classes(neo, NEO4J_GONE)) else Verdict.FINAL


def graph_verdict(exc: BaseException) -> Verdict:
    """For a failure raised while talking to Neo4j: there, an OSError is the link's."""
    if isinstance(exc, OSError):
        return Verdict.OUTAGE
    return verdict(exc)


def _redis_verdict(exc: BaseException) -> Verdict | None:
    redis = _loaded("redis.exceptions")
    if redis is None or not isinstance(exc, redis.RedisError):
        return None
    if isinstance(exc, _classes(redis, REDIS_FINAL)):
        return Verdict.FINAL
    transient = isinstance(exc, _classes(redis, REDIS_TRANSIENT))
    return Verdict.TRANSIENT if transient else Verdict.FINAL


def _kombu_verdict(exc: BaseException) -> Verdict | None:
    kombu = _loaded("kombu.exceptions")
    if kombu is None or not isinstance(exc, kombu.KombuError):
        return None
    return Verdict.TRANSIENT if isinstance(exc, kombu.OperationalError) else Verdict.FINAL


def _modal_verdict(exc: BaseException) -> Verdict | None:
    modal = _loaded("modal.exception")
    if modal is None or not isinstance(exc, modal.Error):
        return None
    transient = isinstance(exc, _classes(modal, MODAL_TRANSIENT))
    return Verdict.TRANSIENT if transient else Verdict.FINAL


def _ours(exc: BaseException) -> Verdict | None:
    if isinstance(exc, GaveUpError):
        return Verdict.EXHAUSTED
    if isinstance(exc, UnreachableError):
        return Verdict.OUTAGE
    if isinstance(exc, TransientError):
        return Verdict.TRANSIENT
    return Verdict.FINAL if isinstance(exc, ClaidexError) else None


FAMILIES = (_ours, postgres_verdict, _neo4j_verdict, _redis_verdict, _kombu_verdict, _modal_verdict)


def verdict(exc: BaseException) -> Verdict:
    """What to do about `exc`: the first family that knows it decides; else the OSError rule."""
    for family in FAMILIES:
        found = family(exc)
        if found is not None:
            return found
    return Verdict.TRANSIENT if isinstance(exc, ConnectionError | TimeoutError) else Verdict.FINAL


def is_transient(exc: BaseException) -> bool:
    """Worth retrying the step later, with backoff (an outage included)."""
    return verdict(exc) in (Verdict.TRANSIENT, Verdict.OUTAGE)


def is_outage(exc: BaseException) -> bool:
    """A server gone for now: the judge of `through_outage`, which rides it out for a window."""
    return verdict(exc) is Verdict.OUTAGE


def exhausted(exc: BaseException) -> bool:
    """A retry budget ran out: hand it back as a result where the engine retries any raise."""
    return verdict(exc) is Verdict.EXHAUSTED


def out_of_attempts(attempt: int, limit: int) -> bool:
    """A batch or a step is delivered again when its worker dies (a Celery redelivery, a Modal
    retry of a lost input, a resume); past `limit` deliveries it is poison (say, out of
    memory) and fails as a GaveUpError instead of killing workers forever."""
    return attempt > limit


def transient_types() -> tuple[type[BaseException], ...]:
    """Celery's `autoretry_for`, which matches types only: every type whose instances are all
    transient. What only a SQLSTATE-less OperationalError's attributes would tell (a lost
    connection) reaches a task wrapped by the adapters, as DatabaseUnavailableError. Modal's
    errors never reach a Celery task raw (the hand-off wraps them), so they are not here."""
    import kombu.exceptions
    import neo4j.exceptions
    import psycopg.errors
    import redis.exceptions

    codes = sorted(PG_GONE | PG_BUSY)
    return (
        TransientError,
        ConnectionError,
        TimeoutError,
        *(psycopg.errors.lookup(code) for code in codes),
        *_classes(neo4j.exceptions, NEO4J_GONE),
        *_classes(redis.exceptions, REDIS_TRANSIENT),
        kombu.exceptions.OperationalError,
    )


def final_types() -> tuple[type[BaseException], ...]:
    """Celery's `dont_autoretry_for`: the subtypes of `transient_types()` that are final."""
    import redis.exceptions

    return _classes(redis.exceptions, REDIS_FINAL)


def retried_by_type(exc: BaseException) -> bool:
    """What a Celery task does with `exc` (autoretry matches types only): retry it exactly
    when this holds. The ledger says 'retrying' by this rule, so it never waits for a retry
    that Celery will not make (a SQLSTATE-less OperationalError is transient by `verdict`
    but no type can say so)."""
    return isinstance(exc, transient_types()) and not isinstance(exc, final_types())


LOW_DISK_BYTES = 64 * 2**20  # less free space than this under a run: steps cannot write


def storage_full(paths: RunPaths) -> bool:
    """The run directory's filesystem has (almost) no space left. Judged by the disk itself:
    polars reports a full disk as a ComputeError whose only trace of ENOSPC is its text.
    An object-store run has no disk of its own to fill."""
    if paths.url is not None:
        return False
    try:
        return shutil.disk_usage(paths.root).free < LOW_DISK_BYTES
    except OSError:
        return False
