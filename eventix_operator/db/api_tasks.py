"""Runs the REST API's task statements: parameters in, frozen values out.

Two kinds of caller. Synchronous functions on a SQLAlchemy ``Connection``, like
:mod:`db.tasks`, serve the requests that need a transaction (listings,
reschedule, a write-back that lost its revision); the API runs each inside one
``run_sync``. :class:`AsyncApiStore` serves the hot paths an Eventix client and
its workers call thousands of times a second (insert, get, claim, write-back):
one autocommit statement each, run on the pooled psycopg connection, with
concurrent requests coalesced into shared statements. Eventix's vocabulary
(remaining retries, error documents in ``result``) is translated by the API;
here rows are rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

import psycopg
from sqlalchemy import Connection, RowMapping, TextClause
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from eventix_operator.db import api_queries, queries
from eventix_operator.db.schema import PENDING_STATUSES
from eventix_operator.db.tasks import (
    NewTask,
    TaskRecord,
    dump_json,
    insert_params,
    merge_duplicates,
)
from eventix_operator.db.triggers import TriggerMatch, TriggerRecord
from eventix_operator.settings import Settings, normalise_database_url

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")

__all__ = [
    "PENDING_STATUSES",
    "AsyncApiStore",
    "Page",
    "TaskWrite",
    "WriteConflict",
    "active_workers",
    "delete_task",
    "get_tasks",
    "namespaces",
    "parse_uid",
    "reschedule_task",
    "status_counts",
    "task_types",
    "tasks_by_unique_key",
    "tasks_page",
    "write_task",
]


def parse_uid(uid: str) -> uuid.UUID | None:
    """The UUID a uid names (Eventix writes 32 hex digits, we write dashes), or None."""
    try:
        return uuid.UUID(uid)
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class TaskWrite:
    """A whole task as an Eventix client writes it back (``PUT /task/{uid}``).

    ``remaining_retries`` is Eventix's count-down ``max_retries``; ``result`` and
    ``error`` are already split (the API knows which one an Eventix document meant).
    ``error_eta_inc`` only applies to a task created by the write.
    """

    uid: str
    task: str
    namespace: str
    status: str
    priority: int
    eta: datetime
    scheduled: datetime | None
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    unique_key: str | None
    worker_id: str | None
    worker_expires: datetime | None
    retry: bool
    remaining_retries: int | None
    error_eta_inc: int
    error_eta_max: int
    store_result: bool
    result: Any
    error: Mapping[str, Any] | None
    result_expires: int | None
    error_expires: int | None
    expires: datetime | None
    operator: str | None


@dataclass(frozen=True, slots=True)
class WriteConflict:
    """The write lost: the task changed since the writer read it."""

    current_revision: int


def _write_params(write: TaskWrite, payload_limit: int) -> dict[str, Any]:
    args = dump_json(list(write.args), what=f"args of {write.task}", limit=payload_limit)
    kwargs = dump_json(dict(write.kwargs), what=f"kwargs of {write.task}", limit=payload_limit)
    result = (
        None
        if write.result is None
        else dump_json(write.result, what=f"the result of {write.task}", limit=payload_limit)
    )
    error = (
        None
        if write.error is None
        else dump_json(dict(write.error), what=f"the error of {write.task}", limit=payload_limit)
    )
    return {
        "uid": write.uid,
        "task": write.task,
        "namespace": write.namespace,
        "status": write.status,
        "priority": write.priority,
        "eta": write.eta,
        "scheduled": write.scheduled,
        "args": args,
        "kwargs": kwargs,
        "unique_key": write.unique_key,
        "worker_id": write.worker_id,
        "worker_expires": write.worker_expires,
        "retry": write.retry,
        "remaining_retries": write.remaining_retries,
        "error_eta_inc": write.error_eta_inc,
        "error_eta_max": write.error_eta_max,
        "store_result": write.store_result,
        "result": result,
        "error": error,
        "result_expires": write.result_expires,
        "error_expires": write.error_expires,
        "expires": write.expires,
        "operator": write.operator,
    }


_REPLACE_COLUMNS = (
    "uid", "revision", "task", "namespace", "status", "priority", "eta", "args", "kwargs",
    "unique_key", "worker_id", "worker_expires", "retry", "remaining_retries",
    "error_eta_max", "store_result", "result", "error", "result_expires", "error_expires",
    "expires", "operator",
)  # fmt: skip


def _replace_params(
    writes: Sequence[tuple[TaskWrite, int]], payload_limit: int
) -> dict[str, list[Any]]:
    """Parallel arrays for :data:`api_queries.REPLACE_TASKS`."""
    rows = [{**_write_params(w, payload_limit), "revision": r} for w, r in writes]
    return {name: [row[name] for row in rows] for name in _REPLACE_COLUMNS}


def write_task(
    conn: Connection, write: TaskWrite, *, revision: int | None, payload_limit: int
) -> TaskRecord | WriteConflict:
    """Replace the task while its revision is still ``revision``; create it when
    it does not exist (as Eventix's backend does); otherwise a conflict.

    A task that becomes pending again wakes the workers of its queue.
    """
    params = _write_params(write, payload_limit)
    row: RowMapping | None = None
    if revision is not None:
        batch = _replace_params([(write, revision)], payload_limit)
        row = conn.execute(api_queries.REPLACE_TASKS, batch).mappings().first()
    if row is None:
        current = conn.execute(api_queries.TASK_REVISION, {"uid": write.uid}).scalar()
        if current is not None:
            return WriteConflict(int(current))
        row = conn.execute(api_queries.INSERT_TASK_ROW, params).mappings().one()
    record = TaskRecord.from_row(row)
    if record.status in PENDING_STATUSES:
        conn.execute(queries.NOTIFY_READY, {"queues": [record.namespace]})
    return record


def get_tasks(conn: Connection, uids: Sequence[str]) -> list[TaskRecord]:
    """The tasks of ``uids`` that exist, in the order of ``uids``."""
    if not uids:
        return []
    rows = conn.execute(api_queries.TASKS_BY_UIDS, {"uids": list(uids)}).mappings()
    by_uid = {str(r["uid"]): TaskRecord.from_row(r) for r in rows}
    return [by_uid[u] for u in uids if u in by_uid]


def delete_task(conn: Connection, uid: str) -> bool:
    """Remove a task whatever its state; False when there was none.

    A worker still running it finishes, and its write-back creates it again, as
    in Eventix; a native worker's recording is guarded by its lease and finds nothing.
    """
    if parse_uid(uid) is None:
        return False
    return conn.execute(api_queries.DELETE_TASK, {"uid": uid}).first() is not None


def reschedule_task(conn: Connection, uid: str, eta: datetime | None) -> TaskRecord | None:
    """Make a failed (or retrying, or cancelled) task due again; None when there is
    no such task in such a state."""
    if parse_uid(uid) is None:
        return None
    row = conn.execute(api_queries.RESCHEDULE_TASK, {"uid": uid, "eta": eta}).mappings().first()
    if row is None:
        return None
    conn.execute(queries.NOTIFY_READY, {"queues": [row["namespace"]]})
    return TaskRecord.from_row(row)


def tasks_by_unique_key(
    conn: Connection,
    unique_key: str,
    *,
    namespace: str | None,
    stati: Sequence[str],
    limit: int = 2,
) -> list[TaskRecord]:
    """Newest first; ``namespace=None`` searches every queue."""
    params = {
        "unique_key": unique_key,
        "namespace": namespace,
        "stati": list(stati),
        "limit": limit,
    }
    rows = conn.execute(api_queries.TASKS_BY_UNIQUE_KEY, params).mappings()
    return [TaskRecord.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[TaskRecord]
    total: int


def tasks_page(
    conn: Connection,
    *,
    equals: Mapping[str, Any],
    within: Mapping[str, Sequence[Any]] | None = None,
    order: Sequence[tuple[str, bool]] = (),
    skip: int = 0,
    limit: int = 100,
) -> Page:
    """One page of a listing and the size of the whole listing.

    Column names are Eventix's (see :data:`api_queries.LISTING_COLUMNS`); an
    unknown name is a ``KeyError`` the caller turns into a 422.
    """
    within = within or {}
    for name in [*equals, *within, *(n for n, _ in order if n != "status_id")]:
        if name not in api_queries.LISTING_COLUMNS:
            raise KeyError(name)
    page = api_queries.tasks_page(equals=equals, within=within, order=order, skip=skip, limit=limit)
    total = conn.execute(api_queries.tasks_count(equals=equals, within=within)).scalar_one()
    return Page([TaskRecord.from_row(r) for r in conn.execute(page).mappings()], int(total))


def namespaces(conn: Connection) -> list[str]:
    return [str(n) for n in conn.execute(api_queries.NAMESPACES).scalars()]


def task_types(conn: Connection, namespace: str) -> list[str]:
    return [
        str(t) for t in conn.execute(api_queries.TASK_TYPES, {"namespace": namespace}).scalars()
    ]


def status_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(api_queries.STATUS_COUNTS).mappings()
    return {str(r["status"]): int(r["count"]) for r in rows}


def active_workers(conn: Connection) -> int:
    return int(conn.execute(api_queries.ACTIVE_WORKERS).scalar_one())


# -- the hot paths ------------------------------------------------------------------


class DriverStatement:
    """A named statement compiled once by SQLAlchemy for psycopg, then run on the
    pooled connection's psycopg connection.

    The four statements an Eventix client and worker send thousands of times a
    second (insert, get, claim, write-back) are one statement each; through
    SQLAlchemy's execute path each would also cost a transaction's BEGIN and
    COMMIT round trips and the rebuilding of 36 columns' result metadata, several
    times the statement itself. So they run in autocommit (one statement is one
    transaction) straight on the driver, and rows map to :class:`TaskRecord` by
    the column names computed here once.
    """

    def __init__(self, statement: TextClause) -> None:
        self.sql = statement.compile(dialect=psycopg_dialect()).string  # type: ignore[no-untyped-call]
        self.names: tuple[str, ...] | None = None  # the result's columns, read once

    async def fetch_task(
        self, conn: psycopg.AsyncConnection[Any], params: Mapping[str, Any]
    ) -> TaskRecord | None:
        cursor = await conn.execute(self.sql, params)
        row = await cursor.fetchone()
        return None if row is None else self._record(cursor, row)

    async def fetch_tasks(
        self, conn: psycopg.AsyncConnection[Any], params: Mapping[str, Any]
    ) -> list[TaskRecord]:
        cursor = await conn.execute(self.sql, params)
        return [self._record(cursor, row) for row in await cursor.fetchall()]

    async def fetch_tasks_with(
        self, conn: psycopg.AsyncConnection[Any], params: Mapping[str, Any], extra: str
    ) -> list[tuple[Any, TaskRecord]]:
        """Rows with one more column than a task's (named ``extra``, first)."""
        cursor = await conn.execute(self.sql, params)
        rows = await cursor.fetchall()
        return [(row[0], self._record(cursor, row[1:], skip=1)) for row in rows]

    def _record(
        self, cursor: psycopg.AsyncCursor[Any], row: Sequence[Any], skip: int = 0
    ) -> TaskRecord:
        if self.names is None:
            assert cursor.description is not None
            self.names = tuple(c.name for c in cursor.description[skip:])
        values = dict(zip(self.names, row, strict=True))
        values["uid"] = str(values["uid"])
        return TaskRecord(**values)


_INSERT = DriverStatement(api_queries.INSERT_TASK_RETURNING)
_GET = DriverStatement(queries.GET_TASK)
_CLAIM_FOR_WORKERS = DriverStatement(api_queries.CLAIM_TASKS_FOR_WORKERS)
_REPLACE = DriverStatement(api_queries.REPLACE_TASKS)
_NOTIFY = DriverStatement(queries.NOTIFY_READY)
_TRIGGERS = DriverStatement(api_queries.TRIGGERS_FOR_EVENTS)


def make_autocommit_engine(settings: Settings) -> AsyncEngine:
    """The API's engine: the settings' pool, connections in autocommit.

    Autocommit is set once per connection (switching per checkout costs a round
    trip), and a connection goes back to the pool without a ROLLBACK: in
    autocommit there is nothing to roll back, and a transaction opened by
    :meth:`AsyncApiStore.transaction` has ended by then.
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
        run: Callable[[list[T]], Awaitable[list[U | BaseException]]],
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
                outcomes = await self.run([item for item, _ in batch])
            except Exception as exc:
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its request was cancelled meanwhile
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)


class AsyncApiStore:
    """The REST API's side of the queue.

    ``engine`` must be in autocommit (``isolation_level="AUTOCOMMIT"``): the hot
    paths run one statement per request on it, and :meth:`transaction` opens a
    real transaction (READ COMMITTED) for requests that need several.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._payload_limit = 1_000_000
        self._inserts: Batcher[NewTask, TaskRecord] = Batcher(self._insert_batch)
        self._claims: dict[str, Batcher[tuple[str, float], TaskRecord | None]] = {}
        self._replaces: Batcher[tuple[TaskWrite, int], TaskRecord | None] = Batcher(
            self._replace_batch
        )
        self._triggers: Batcher[tuple[str, str], list[TriggerMatch]] = Batcher(self._triggers_batch)

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

    async def transaction(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(connection, ...)`` in one transaction."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="READ COMMITTED")
            async with conn.begin():
                return await conn.run_sync(fn, *args, **kwargs)

    async def insert_task(self, task: NewTask, *, payload_limit: int) -> TaskRecord:
        """Enqueue one task, merged Eventix-style into a pending one with its unique
        key; concurrent requests share INSERT statements (see :class:`Batcher`)."""
        insert_params([task], payload_limit=payload_limit)  # this task's own errors, first
        self._payload_limit = payload_limit
        return await self._inserts.submit(task)

    async def _insert_batch(self, tasks: list[NewTask]) -> list[TaskRecord | BaseException]:
        """All in one statement; if the database refuses it (a uid that exists, a
        value jsonb cannot hold), each on its own, so that the error is its task's."""
        try:
            return list(await self._insert_many(tasks, self._payload_limit))
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            if len(tasks) == 1:
                return [exc]
        outcomes: list[TaskRecord | BaseException] = []
        for task in tasks:
            try:
                outcomes.append((await self._insert_many([task], self._payload_limit))[0])
            except (psycopg.IntegrityError, psycopg.DataError) as exc:
                outcomes.append(exc)
        return outcomes

    async def _insert_many(self, tasks: Sequence[NewTask], payload_limit: int) -> list[TaskRecord]:
        """One INSERT for ``tasks``; the row of each, in order (a task merged by
        unique key gets the row it merged into)."""
        merged, position = merge_duplicates(tasks)
        params = insert_params(merged, payload_limit=payload_limit)
        async with self.driver() as conn:
            rows = await _INSERT.fetch_tasks(conn, params)
        by_key = {(r.namespace, r.unique_key): r for r in rows if r.unique_key is not None}
        by_uid = {r.uid: r for r in rows}
        resolved = [
            by_key[(t.queue, t.unique_key)] if t.unique_key is not None else by_uid[t.uid]
            for t in merged
        ]
        return [resolved[position[i]] for i in range(len(tasks))]

    async def triggers_for_event(
        self, event_name: str, payload: Mapping[str, Any]
    ) -> list[TriggerMatch]:
        """:func:`~eventix_operator.db.triggers.list_triggers_for_event`, with
        concurrent events sharing a statement."""
        return await self._triggers.submit((event_name, json.dumps(dict(payload))))

    async def _triggers_batch(
        self, events: list[tuple[str, str]]
    ) -> list[list[TriggerMatch] | BaseException]:
        params = {"event_name": [e for e, _ in events], "payload": [p for _, p in events]}
        found: list[list[TriggerMatch]] = [[] for _ in events]
        async with self.driver() as conn:
            cursor = await conn.execute(_TRIGGERS.sql, params)
            assert cursor.description is not None
            names = [c.name for c in cursor.description]
            for row in await cursor.fetchall():
                values = dict(zip(names, row, strict=True))
                slot, matches = values.pop("event_slot"), bool(values.pop("matches"))
                found[slot - 1].append(TriggerMatch(TriggerRecord(**values), matches))
        return list(found)

    async def get_task(self, uid: str) -> TaskRecord | None:
        if parse_uid(uid) is None:
            return None
        async with self.driver() as conn:
            return await _GET.fetch_task(conn, {"uid": uid})

    async def claim_next(
        self, *, worker_id: str, namespace: str, lease_seconds: float
    ) -> TaskRecord | None:
        """Lease the next due task of one queue to an HTTP worker, with the native
        worker's claim order and SKIP LOCKED, so both kinds of worker share a queue
        and no task is handed out twice; concurrent claims on one queue share a
        statement (:data:`api_queries.CLAIM_TASKS_FOR_WORKERS`)."""
        batcher = self._claims.get(namespace)
        if batcher is None:
            batcher = self._claims[namespace] = Batcher(
                lambda claims: self._claim_batch(namespace, claims)
            )
        return await batcher.submit((worker_id, lease_seconds))

    async def _claim_batch(
        self, namespace: str, claims: list[tuple[str, float]]
    ) -> list[TaskRecord | BaseException | None]:
        params = {
            "namespace": namespace,
            "worker_ids": [worker for worker, _ in claims],
            "lease_seconds": claims[0][1],
        }
        async with self.driver() as conn:
            rows = await _CLAIM_FOR_WORKERS.fetch_tasks_with(conn, params, extra="claim_slot")
        by_slot = {slot: record for slot, record in rows}
        if not self._claims[namespace].pending and len(self._claims) > 1000:
            self._claims.pop(namespace, None)  # queues come and go: keep the map small
        return [by_slot.get(slot) for slot in range(1, len(claims) + 1)]

    async def replace_task(
        self, write: TaskWrite, *, revision: int, payload_limit: int
    ) -> TaskRecord | None:
        """The common write-back: the revision matches. None: it does not (or the
        task is gone), and :func:`write_task` decides in a transaction. Concurrent
        write-backs share statements."""
        _write_params(write, payload_limit)  # this write's own errors, first
        self._payload_limit = payload_limit
        return await self._replaces.submit((write, revision))

    async def _replace_batch(
        self, writes: list[tuple[TaskWrite, int]]
    ) -> list[TaskRecord | BaseException | None]:
        """Writes to distinct tasks go in one statement; a second write to the same
        task waits for the next round (one UPDATE cannot apply both, and the later
        one must see the first's revision to lose against it)."""
        outcomes: dict[int, TaskRecord | BaseException | None] = {}
        remaining = list(enumerate(writes))
        while remaining:
            seen: set[str] = set()
            round_: list[tuple[int, tuple[TaskWrite, int]]] = []
            later: list[tuple[int, tuple[TaskWrite, int]]] = []
            for i, item in remaining:
                (later if item[0].uid in seen else round_).append((i, item))
                seen.add(item[0].uid)
            remaining = later
            try:
                params = _replace_params([item for _, item in round_], self._payload_limit)
                async with self.driver() as conn:
                    rows = await _REPLACE.fetch_tasks(conn, params)
                    queues = sorted({r.namespace for r in rows if r.status in PENDING_STATUSES})
                    if queues:
                        await conn.execute(_NOTIFY.sql, {"queues": queues})
            except (psycopg.IntegrityError, psycopg.DataError) as exc:
                if len(round_) == 1:
                    outcomes[round_[0][0]] = exc
                else:  # one of them is at fault: each on its own
                    for i, item in round_:
                        outcomes[i] = (await self._replace_batch([item]))[0]
                continue
            by_uid = {r.uid: r for r in rows}
            for i, (write, _) in round_:
                outcomes[i] = by_uid.get(write.uid)
        return [outcomes[i] for i in range(len(writes))]
