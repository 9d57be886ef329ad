"""Every connection eventix opens, built from the settings object; nothing
connects at import time.

SQLAlchemy engines (:func:`make_engine`, :func:`make_async_engine`, the REST
API's autocommit engine through :func:`engine_options`) and raw psycopg
connections (:func:`connect`, :func:`connect_async`: the LISTEN connection,
drivers used without SQLAlchemy) all come from here, so that two rules hold for
each of them:

- **No server-side prepared statements where a pooler may sit.** psycopg
  prepares a statement on its sixth run on a connection; through a transaction
  pooler (PgBouncer, CloudNativePG's ``Pooler``, most managed poolers) the next
  transaction may run on another server connection, where the statement does not
  exist, or where another client's of the same name does. With
  ``EVENTIX_DB_PREPARED_STATEMENTS=auto`` (the default) each new connection is
  asked once: a pooler hands its clients a backend key of its own, so the
  ``pg_backend_pid()`` the server reports differs from the pid the connection was
  given at start-up; such a connection never prepares. ``false`` never prepares,
  ``true`` always does.
- **A cap on each process's pool** (``EVENTIX_DB_MAX_CONNECTIONS``).
- **A pooled connection is tested before use only after it sat idle**
  (``EVENTIX_DB_POOL_PRE_PING``, :data:`PING_AFTER_IDLE`): what breaks it (a
  failover, a pooler's or a load balancer's idle timeout, a server restart) comes
  while it waits in the pool, not in the milliseconds between two uses. SQLAlchemy's
  own ``pool_pre_ping`` tests at every checkout, a round trip that was an eighth of
  the time a worker held back by a queue's concurrency limit spends between two
  tasks (bench/README.md). HikariCP skips its test the same way (``aliveBypassWindowMs``).

Nothing here sets session state (``SET``, ``options=-c …``) on a connection
that goes through a pooler: through a transaction pooler it would stay on a server
connection other clients are given, and CloudNativePG's pooler drops libpq's
``options`` silently. A worker's direct connections are its own: they run prepared
statements on their generic plans (``make_async_engine(generic_plans=True)``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from eventix_operator.db.payload import load_json
from eventix_operator.settings import Settings, normalise_database_url

if TYPE_CHECKING:  # the asyncio extension loads the ORM: only processes that need it pay
    from sqlalchemy.ext.asyncio import AsyncEngine

#: Set in a pooled connection's ``info`` when it goes through a connection pooler.
POOLED = "eventix_pooled"
#: The statement whose answer tells a pooler apart from a server.
BACKEND_PID = "SELECT pg_backend_pid()"
#: Prepared statements on their generic plans, for the session. The claim's custom
#: plan is no better (its parameters, the queue names, only feed the lateral scan at
#: run time), yet PostgreSQL keeps planning it at each run: about 0.9 ms of a claim's
#: 1.8 here, and more of the write-back that claims (COMPLETE_AND_CLAIM). Set only
#: where statements are prepared, which is never through a pooler.
GENERIC_PLANS = "SET plan_cache_mode = force_generic_plan"
#: Seconds a pooled connection may sit idle and still be used without a test first.
PING_AFTER_IDLE = 0.5
#: Set in a pooled connection's ``info``: when it was last returned to the pool.
RETURNED = "eventix_returned"


def pool_limits(settings: Settings) -> tuple[int, int]:
    """(pool size, max overflow) of one engine, within ``EVENTIX_DB_MAX_CONNECTIONS``."""
    size, overflow = settings.db_pool_size, settings.db_max_overflow
    cap = settings.db_max_connections
    if cap is not None:
        size = min(size, cap)
        overflow = min(overflow, cap - size)
    return size, overflow


def _connect_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {"connect_timeout": max(1, int(settings.db_connect_timeout))}
    if settings.db_prepared_statements is False:
        args["prepare_threshold"] = None
    return args


def engine_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``create_engine`` / ``create_async_engine`` for ``settings``
    (pool limits, connect arguments); pass the engine to :func:`watch` afterwards."""
    size, overflow = pool_limits(settings)
    return {
        "pool_size": size,
        "max_overflow": overflow,
        "pool_pre_ping": False,  # tested after idling instead: see watch()
        "pool_timeout": settings.db_connect_timeout,  # a full pool waits as long as a connect
        "connect_args": _connect_args(settings),
        "json_deserializer": load_json,
    }


def make_engine(settings: Settings, url: str | None = None) -> Engine:
    engine = create_engine(
        normalise_database_url(url or settings.require_database_url()), **engine_options(settings)
    )
    return watch(engine, settings)


def make_async_engine(
    settings: Settings, url: str | None = None, *, generic_plans: bool = False, **options: Any
) -> AsyncEngine:
    """An asyncio engine; ``options`` add to (or override) :func:`engine_options`.
    ``generic_plans``: each connection that prepares statements runs them on their
    generic plans (:data:`GENERIC_PLANS`; a worker's, which runs only its own)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(
        normalise_database_url(url or settings.require_database_url()),
        **{**engine_options(settings), **options},
    )
    watch(engine.sync_engine, settings)
    if generic_plans and settings.db_prepared_statements is not False:
        event.listen(engine.sync_engine, "connect", _generic_plans)  # after _detect_pooler
    return engine


def make_read_engine(settings: Settings, primary: Engine) -> Engine:
    """The engine for lag-tolerant reads: on ``EVENTIX_READ_DATABASE_URL`` when it is
    set, otherwise ``primary`` itself."""
    url = settings.read_url()
    return primary if url is None else make_engine(settings, url)


def watch(engine: Engine, settings: Settings) -> Engine:
    """In ``auto`` mode, turn prepared statements off on each new connection of
    ``engine`` that goes through a pooler; test a connection that sat idle in the
    pool before it is used again (see the module's docstring)."""
    if settings.db_prepared_statements == "auto":
        event.listen(engine, "connect", _detect_pooler)
    if settings.db_pool_pre_ping:
        event.listen(engine, "checkin", _returned)
        event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _generic_plans(dbapi_connection: Any, record: Any) -> None:
    # Only on a connection known to be direct (asked here when the auto mode did not):
    # through a pooler the setting would outlive our session, also where statements
    # are prepared (``EVENTIX_DB_PREPARED_STATEMENTS=true`` through PgBouncer 1.21+).
    pooled = record.info.get(POOLED)
    if pooled is None:
        pooled = record.info[POOLED] = _through_pooler(dbapi_connection)
    if pooled:
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(GENERIC_PLANS)
    finally:
        cursor.close()
    dbapi_connection.commit()  # a SET in a transaction is undone by its rollback


def _returned(dbapi_connection: Any, record: Any) -> None:
    record.info[RETURNED] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A connection that fails its test is dropped with every other one the pool
    held at the time (a failover broke them all), and the checkout is tried again
    on a new one, as ``pool_pre_ping`` does. A new connection is not tested."""
    returned = record.info.get(RETURNED)
    if returned is None or time.monotonic() - returned < PING_AFTER_IDLE:
        return
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()  # the test's transaction: off the busy path, it may cost
    except (psycopg.Error, OSError) as exc:
        raise sa_exc.InvalidatePoolError(f"a pooled connection failed its test: {exc}") from exc


def _detect_pooler(dbapi_connection: Any, record: Any) -> None:
    pooled = record.info[POOLED] = _through_pooler(dbapi_connection)
    if pooled:
        getattr(dbapi_connection, "driver_connection", dbapi_connection).prepare_threshold = None


def _through_pooler(dbapi_connection: Any) -> bool:
    # The raw psycopg connection (sync), or SQLAlchemy's adapter of an async one,
    # whose cursor runs the statement on the event loop the engine runs on.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(BACKEND_PID)
        row = cursor.fetchone()
    finally:
        cursor.close()
    dbapi_connection.rollback()  # the probe's transaction, when not in autocommit
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    return row is not None and row[0] != driver.info.backend_pid


# -- raw psycopg connections ----------------------------------------------------------


def connect_kwargs(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """What ``psycopg.connect`` takes for ``url`` (default DATABASE_URL): SQLAlchemy's
    own reading of the URL (so a multi-host URL means the same to both), the
    connect timeout and, with prepared statements off, ``prepare_threshold=None``."""
    from sqlalchemy.dialects.postgresql.psycopg import dialect

    parsed = make_url(normalise_database_url(url or settings.require_database_url()))
    _, kwargs = dialect().create_connect_args(parsed)  # type: ignore[no-untyped-call]
    return {**kwargs, **_connect_args(settings)}


def connect(settings: Settings, url: str | None = None, **options: Any) -> psycopg.Connection[Any]:
    """A psycopg connection to ``url`` (default DATABASE_URL) under the rules above;
    ``options`` go to ``psycopg.connect`` (``autocommit=True``, ``row_factory``…)."""
    conn = psycopg.connect(**{**connect_kwargs(settings, url), **options})
    if settings.db_prepared_statements == "auto":
        row = conn.execute(BACKEND_PID).fetchone()
        if not conn.autocommit:
            conn.rollback()
        if row is not None and row[0] != conn.info.backend_pid:
            conn.prepare_threshold = None
    return conn


async def connect_async(
    settings: Settings, url: str | None = None, **options: Any
) -> psycopg.AsyncConnection[Any]:
    """The asyncio form of :func:`connect`."""
    conn = await psycopg.AsyncConnection.connect(**{**connect_kwargs(settings, url), **options})
    if settings.db_prepared_statements == "auto" and await behind_pooler(conn):
        conn.prepare_threshold = None
    return conn


async def behind_pooler(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` reaches its server through a connection pooler."""
    row = await (await conn.execute(BACKEND_PID)).fetchone()
    if not conn.autocommit:
        await conn.rollback()
    return row is not None and row[0] != conn.info.backend_pid
