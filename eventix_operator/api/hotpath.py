"""How the REST API runs its hot paths: one autocommit statement per batch of
concurrent requests, on the pooled psycopg connection.

The five things an Eventix client and its workers do thousands of times a
second (insert, get, claim, write-back, the triggers of an event) are one
statement each. Through SQLAlchemy's execute path each would also cost a
transaction's BEGIN and COMMIT round trips and the rebuilding of 36 columns'
result metadata, several times the statement itself. So they run in autocommit
(one statement is one transaction) straight on the driver, with the statement
compiled once; and a request that arrives while statements are on their way
joins the next one (:class:`Batcher`). What the statements are and how rows
become values is the data layer's: this module hands it a :data:`Fetch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import psycopg
from sqlalchemy import Connection, TextClause
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from eventix_operator.db import admin, enqueue, leases, triggers, writeback
from eventix_operator.db.enqueue import NewTask
from eventix_operator.db.errors import isolate
from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.triggers import TriggerMatch
from eventix_operator.db.writeback import PreparedWrite
from eventix_operator.settings import Settings, normalise_database_url

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")


@functools.cache
def compiled(statement: TextClause) -> str:
    """A named statement as SQLAlchemy compiles it for psycopg, once."""
    sql: str = statement.compile(dialect=psycopg_dialect()).string  # type: ignore[no-untyped-call]
    return sql


def make_autocommit_engine(settings: Settings) -> AsyncEngine:
    """The API's engine: the settings' pool, connections in autocommit.

    Autocommit is set once per connection (switching per checkout costs a round
    trip), and a connection goes back to the pool without a ROLLBACK: in
    autocommit there is nothing to roll back, and a transaction opened by
    :meth:`HotPaths.transaction` has ended by then.
    """
    return create_async_engine(
        normalise_database_url(settings.require_database_url()),
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=settings.db_pool_pre_ping,
        connect_args={"connect_timeout": max(1, int(settings.db_connect_timeout))},
    )


class Batcher(Generic[T, U]):
    """Coalesce concurrent requests into few statements.

    A request that arrives while statements are on their way to the database
    joins the next one: under load many requests share one statement (one round
    trip, one plan, one trigger call, one WAL flush); idle, a request goes alone
    at once, so batching adds no latency. ``run`` gets the items of a batch and
    returns one outcome per item, an exception being that item's failure.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[Sequence[U | BaseException]]],
        *,
        max_batch: int = 256,
        in_flight: int = 4,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.in_flight = in_flight
        self.pending: list[tuple[T, asyncio.Future[U]]] = []
        self.drainers: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> U:
        future: asyncio.Future[U] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if len(self.drainers) < self.in_flight:
            drainer = asyncio.create_task(self._drain())
            self.drainers.add(drainer)
            drainer.add_done_callback(self.drainers.discard)
        return await future

    async def _drain(self) -> None:
        while self.pending:
            batch = self.pending[: self.max_batch]
            del self.pending[: self.max_batch]
            try:
                outcomes: Sequence[U | BaseException] = await self.run([i for i, _ in batch])
            except Exception as exc:
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its request was cancelled meanwhile
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


class HotPaths:
    """The REST API's connection to the data layer.

    ``engine`` must be in autocommit (``isolation_level="AUTOCOMMIT"``): the hot
    paths run one statement per batch on it, and :meth:`transaction` opens a
    real transaction (READ COMMITTED) for requests that need several.
    """

    def __init__(self, engine: AsyncEngine, *, payload_limit: int) -> None:
        self.engine = engine
        self.payload_limit = payload_limit
        self._inserts: Batcher[NewTask, TaskRecord] = Batcher(self._insert_batch)
        self._claims: dict[str, Batcher[tuple[str, float], TaskRecord | None]] = {}
        self._replaces: Batcher[tuple[PreparedWrite, int], TaskRecord | None] = Batcher(
            self._replace_batch
        )
        self._triggers: Batcher[triggers.EventKey, list[TriggerMatch]] = Batcher(
            functools.partial(triggers.list_triggers_for_events, self.fetch)
        )

    @contextlib.asynccontextmanager
    async def driver(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A psycopg connection from the engine's pool (one hop into the pool each
        way, instead of the three an ``AsyncConnection`` takes)."""
        pooled = await greenlet_spawn(self.engine.sync_engine.raw_connection)
        conn: psycopg.AsyncConnection[Any] = pooled.driver_connection  # type: ignore[assignment]
        try:
            yield conn
        finally:
            # A failed statement leaves an autocommit connection idle and usable; one
            # interrupted mid-statement (or lost) is not, and must not go back as it is.
            if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await greenlet_spawn(pooled.invalidate)
            await greenlet_spawn(pooled.close)

    async def fetch(self, statement: TextClause, params: Mapping[str, Any]) -> list[Any]:
        """Run one statement in autocommit; its rows (the data layer's :data:`Fetch`)."""
        async with self.driver() as conn:
            cursor = await conn.execute(compiled(statement), params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def transaction(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(connection, ...)`` in one transaction."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                return await conn.run_sync(fn, *args, **kwargs)

    # -- enqueue --------------------------------------------------------------------

    async def insert_task(self, task: NewTask) -> TaskRecord:
        """Enqueue one task, merged Eventix-style into a pending one with its unique
        key; this task's own errors are raised before it joins a batch."""
        enqueue.validate(task, self.payload_limit)
        return await self._inserts.submit(task)

    async def _insert_batch(self, tasks: list[NewTask]) -> list[TaskRecord | Exception]:
        """All in one statement; a task the database refuses (a uid that exists, a
        value jsonb cannot hold) fails alone."""
        return await isolate(
            functools.partial(
                enqueue.insert_returning, self.fetch, payload_limit=self.payload_limit
            ),
            tasks,
        )

    # -- get, claim, write back -----------------------------------------------------

    async def get_task(self, uid: str) -> TaskRecord | None:
        return await admin.fetch_task(self.fetch, uid)

    async def claim_next(
        self, *, worker_id: str, namespace: str, lease_seconds: float
    ) -> TaskRecord | None:
        """Lease the next due task of one queue to an HTTP worker with the native
        workers' claim, so both kinds of worker share a queue and no task is handed
        out twice; concurrent claims on one queue share a statement."""
        batcher = self._claims.get(namespace)
        if batcher is None:
            batcher = self._claims[namespace] = Batcher(
                lambda claims: self._claim_batch(namespace, claims)
            )
        return await batcher.submit((worker_id, lease_seconds))

    async def _claim_batch(
        self, namespace: str, claims: list[tuple[str, float]]
    ) -> list[TaskRecord | None]:
        workers = [worker for worker, _ in claims]
        found = await leases.claim_slots(self.fetch, namespace, workers, claims[0][1])
        if not self._claims[namespace].pending and len(self._claims) > 1000:
            self._claims.pop(namespace, None)  # queues come and go: keep the map small
        return found

    async def replace_task(self, write: PreparedWrite, *, revision: int) -> TaskRecord | None:
        """The common write-back: the revision matches. None: it does not (or the
        task is gone), and :func:`~eventix_operator.db.writeback.write_task`
        decides in a transaction. Concurrent write-backs share statements."""
        return await self._replaces.submit((write, revision))

    async def _replace_batch(
        self, writes: list[tuple[PreparedWrite, int]]
    ) -> list[TaskRecord | Exception | None]:
        return await writeback.replace_batch(self.fetch, writes, payload_limit=self.payload_limit)

    # -- events ---------------------------------------------------------------------

    async def triggers_for_event(
        self, event_name: str, payload: Mapping[str, Any], queue: str
    ) -> list[TriggerMatch]:
        """The table's triggers of an event that may see its queue (Eventix's
        namespace), with concurrent events sharing a statement."""
        return await self._triggers.submit((event_name, payload, queue))
