"""What a database error means for the caller: wait and try again, or not.

Every loop (worker, REST API, operator handlers, scheduler, status sync, pool
scaler) asks :func:`database_unavailable`. True means the database could not
serve the request at all: the same statement with the same data may succeed
later, so the caller keeps its work and waits. Anything else is about the data
or the statement (a value PostgreSQL refuses, a constraint, a bug in our SQL):
retrying it unchanged gives the same error forever, so the caller fails the one
row or task it belongs to and goes on.

The decision goes by SQLSTATE, not by exception class: psycopg puts a refused
value (``DataError``), a failover's read-only standby (``InternalError``) and a
lost connection (``OperationalError``) under the same ``DBAPIError`` base, and
under SQLAlchemy each of them arrives wrapped once more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import psycopg
import structlog
from sqlalchemy import exc as sa_exc

T = TypeVar("T")
U = TypeVar("U")

#: SQLSTATE classes that are about the connection or the server's state, never
#: about what was sent: 08 connection exception, 53 insufficient resources
#: (too many connections, disk full, out of memory), 57P0x shutting down or
#: starting up.
UNAVAILABLE_CLASSES = ("08", "53", "57P")
#: Single SQLSTATEs of the same kind.
UNAVAILABLE_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: a standby after failover, until DNS moves
        "57014",  # query_canceled: statement timeout or pg_cancel_backend, not the data
        "40001",  # serialization_failure: run the transaction again
        "40P01",  # deadlock_detected: run the transaction again
    }
)


#: What a call into the database may raise: the classes to catch before asking
#: :func:`database_unavailable` what they mean.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    psycopg.Error,
    OSError,
)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, also when SQLAlchemy wraps it."""
    orig = getattr(exc, "orig", None)
    if isinstance(orig, psycopg.Error):
        return orig.sqlstate
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is unreachable or cannot serve now.

    True for: connections refused, reset, closed, timed out or terminated
    (psycopg raises these without a SQLSTATE), the pool's checkout timeout,
    socket errors, SQLSTATE classes 08, 53 and 57P, a read-only transaction on a
    failed-over standby, a cancelled statement, and a transaction PostgreSQL asks
    to run again (serialization failure, deadlock). False for everything else,
    including every error of a value or a statement.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or (
            exc.orig is not None and database_unavailable(exc.orig)
        )
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # no connection could be had from the pool in time
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # Raised by libpq or psycopg itself, not by the server: the connection
            # failed, broke or was closed (includes the pool's PoolTimeout).
            return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
        return state in UNAVAILABLE_STATES or state.startswith(UNAVAILABLE_CLASSES)
    return isinstance(exc, OSError)


def log_failure(log: structlog.stdlib.BoundLogger, message: str, exc: BaseException) -> bool:
    """Log a failure of a loop that tries again: an outage as a warning with its
    reason (it passes by itself), anything else with its traceback (someone
    should look). Returns whether it was an outage."""
    if database_unavailable(exc):
        log.warning(message, error=first_line(exc), cause="database unavailable")
        return True
    log.error(message, exc_info=exc)
    return False


def first_line(exc: BaseException) -> str:
    """The message of a database error without SQLAlchemy's background link and
    the statement it quotes."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc) or type(exc).__name__
    return text.splitlines()[0]


async def isolate(
    run: Callable[[list[T]], Awaitable[Sequence[U]]], items: list[T]
) -> list[U | Exception]:
    """``run(items)``, one outcome per item; when the batch fails for any reason
    but an outage, it is split in halves until each failure is one item's own,
    and that item's outcome is its exception. So one value the database refuses
    costs its own item and about 2·log2(n) extra statements, never the batch.
    An outage is raised: nothing in the batch is at fault, it is all retried."""
    try:
        return list(await run(items))
    except Exception as exc:
        if database_unavailable(exc):
            raise
        if len(items) <= 1:
            return [exc for _ in items]
    middle = len(items) // 2
    return [*await isolate(run, items[:middle]), *await isolate(run, items[middle:])]
