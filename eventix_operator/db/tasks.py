"""The only module that runs task queries: parameters in, frozen values out.

Synchronous functions serve the client, the CLI and the operator's reconcile
functions (inside the caller's transaction); :class:`AsyncTaskStore` serves the
worker, whose loop is asyncio.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, RowMapping

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from eventix_operator.db import queries

#: Rows per INSERT statement in bulk enqueue: large enough to amortise the round
#: trip, small enough to keep one statement's parameters in a few megabytes.
INSERT_CHUNK = 10_000


class PayloadTooLarge(ValueError):
    """Args, kwargs or a result exceed ``EVENTIX_MAX_PAYLOAD_BYTES``."""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of ``eventix_task``."""

    uid: str
    task: str
    namespace: str
    status: str
    priority: int
    eta: datetime
    scheduled: datetime
    args: list[Any]
    kwargs: dict[str, Any]
    unique_key: str | None
    revision: int
    created_at: datetime
    updated_at: datetime
    worker_id: str | None
    worker_expires: datetime | None
    retry: bool
    max_retries: int | None
    attempts: int
    error_eta_inc: int
    error_eta_max: int
    timeout_seconds: float | None
    store_result: bool
    result: Any
    error: dict[str, Any] | None
    result_expires: int | None
    error_expires: int | None
    expires: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    operator: str | None
    source: str
    k8s_namespace: str | None
    k8s_name: str | None
    k8s_uid: str | None
    schedule_uid: str | None
    schedule_time: datetime | None

    @property
    def queue(self) -> str:
        return self.namespace

    @classmethod
    def from_row(cls, row: RowMapping) -> TaskRecord:
        values = dict(row)
        values["uid"] = str(values["uid"])
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return out


@dataclass(slots=True)
class ClaimedTask:
    """A task as a worker holds it: the columns of :data:`queries.CLAIMED_COLUMNS`.

    Not frozen, and built from row tuples: at tens of thousands of tasks a second,
    a frozen 36-field record per task was the worker's largest cost.
    """

    uid: str
    task: str
    namespace: str
    status: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempts: int
    retry: bool
    max_retries: int | None
    error_eta_inc: int
    error_eta_max: int
    timeout_seconds: float | None
    store_result: bool


@dataclass(slots=True)
class NewTask:
    """A task to enqueue. ``eta`` wins over ``delay``; neither means due now
    (by the database's clock, so client clock skew does not delay work).

    Not frozen: building 100,000 frozen instances was a third of a bulk enqueue.
    """

    task: str
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    eta: datetime | None = None
    delay: float | None = None
    unique_key: str | None = None
    retry: bool = True
    max_retries: int | None = None
    backoff_seconds: int = 15
    max_backoff_seconds: int = 300
    timeout_seconds: float | None = None
    store_result: bool = True
    result_expires: int | None = 604_800
    error_expires: int | None = None
    operator: str | None = None
    source: str = "client"
    k8s_namespace: str | None = None
    k8s_name: str | None = None
    k8s_uid: str | None = None
    schedule_uid: str | None = None
    schedule_time: datetime | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))


def dump_json(value: Any, *, what: str, limit: int) -> str:
    """JSON text of ``value``, or a clear error naming ``what`` could not be stored."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from exc
    if len(text) > limit:
        raise PayloadTooLarge(f"{what} is {len(text)} bytes of JSON, over the {limit} byte limit")
    return text


def _due(task: NewTask, now: datetime) -> datetime:
    return task.eta if task.eta is not None else now + timedelta(seconds=task.delay or 0)


def merge_duplicates(tasks: Sequence[NewTask]) -> tuple[list[NewTask], dict[int, int]]:
    """Fold tasks sharing (queue, unique key) within one batch, Eventix-style.

    PostgreSQL refuses to let one INSERT ... ON CONFLICT touch a row twice, so
    duplicates inside a batch are merged here exactly as the statement would
    merge them with a stored row. Returns the tasks to insert and, for each input
    position, its position in that list.
    """
    now = datetime.now(UTC)
    merged: list[NewTask] = []
    position: dict[tuple[str, str], int] = {}
    mapping: dict[int, int] = {}
    for i, t in enumerate(tasks):
        if t.unique_key is None:
            mapping[i] = len(merged)
            merged.append(t)
            continue
        key = (t.queue, t.unique_key)
        j = position.get(key)
        if j is None:
            position[key] = mapping[i] = len(merged)
            merged.append(t)
            continue
        old = merged[j]
        first = old if _due(old, now) <= _due(t, now) else t
        merged[j] = replace(
            t, uid=old.uid, eta=first.eta, delay=first.delay, priority=min(old.priority, t.priority)
        )
        mapping[i] = j
    return merged, mapping


INSERT_COLUMNS = (
    "uid", "task", "namespace", "priority", "eta", "delay", "args", "kwargs", "unique_key",
    "retry", "max_retries", "error_eta_inc", "error_eta_max", "timeout_seconds",
    "store_result", "result_expires", "error_expires", "operator", "source",
    "k8s_namespace", "k8s_name", "k8s_uid", "schedule_uid", "schedule_time",
)  # fmt: skip


def _payload(task: NewTask, limit: int) -> tuple[str, str]:
    """The JSON of args and kwargs, checked against the payload limit."""
    if not task.task:
        raise ValueError("a task needs a name")
    # Most tasks have no args or no kwargs: skip the encoder for those.
    args = (
        dump_json(list(task.args), what=f"args of {task.task}", limit=limit) if task.args else "[]"
    )
    kwargs = (
        dump_json(dict(task.kwargs), what=f"kwargs of {task.task}", limit=limit)
        if task.kwargs
        else "{}"
    )
    if len(args) + len(kwargs) > limit:
        raise PayloadTooLarge(
            f"args and kwargs of {task.task} are {len(args) + len(kwargs)} bytes of JSON, "
            f"over the {limit} byte limit"
        )
    return args, kwargs


def insert_params(tasks: Sequence[NewTask], *, payload_limit: int) -> dict[str, list[Any]]:
    """Parallel arrays, one per column of :data:`queries.INSERT_TASKS`."""
    rows = []
    for t in tasks:
        args, kwargs = _payload(t, payload_limit)
        rows.append(
            (
                t.uid,
                t.task,
                t.queue,
                t.priority,
                t.eta,
                t.delay,
                args,
                kwargs,
                t.unique_key,
                t.retry,
                t.max_retries,
                t.backoff_seconds,
                t.max_backoff_seconds,
                t.timeout_seconds,
                t.store_result,
                t.result_expires,
                t.error_expires,
                t.operator,
                t.source,
                t.k8s_namespace,
                t.k8s_name,
                t.k8s_uid,
                t.schedule_uid,
                t.schedule_time,
            )
        )
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in INSERT_COLUMNS]
    return {name: list(values) for name, values in zip(INSERT_COLUMNS, columns, strict=True)}


#: Below this many plain tasks a COPY saves nothing over the INSERT.
COPY_MIN = 64


def _plain(task: NewTask) -> bool:
    """Nothing about it can conflict or needs the server's clock: COPY can load it."""
    return (
        task.unique_key is None
        and task.delay is None
        and task.k8s_uid is None
        and task.schedule_uid is None
    )


def insert_tasks(conn: Connection, tasks: Sequence[NewTask], *, payload_limit: int) -> list[str]:
    """Insert or merge ``tasks``; the uid of each, in input order.

    A task merged into a pending task with the same unique key gets that task's
    uid. Runs in ``conn``'s transaction: nothing is visible before its commit.
    Many plain tasks go in by COPY, the others by one INSERT per chunk.
    """
    uids = [t.uid for t in tasks]
    plain = [t for t in tasks if _plain(t)]
    if len(plain) >= COPY_MIN:
        _copy_tasks(conn, plain, payload_limit)
        rest = [i for i, t in enumerate(tasks) if not _plain(t)]
    else:
        rest = list(range(len(tasks)))
    for start in range(0, len(rest), INSERT_CHUNK):
        positions = rest[start : start + INSERT_CHUNK]
        chunk = [tasks[i] for i in positions]
        merged, mapping = merge_duplicates(chunk)
        params = insert_params(merged, payload_limit=payload_limit)
        rows = conn.execute(queries.INSERT_TASKS, params).all()
        by_key = {(r.namespace, r.unique_key): str(r.uid) for r in rows if r.unique_key}
        resolved = [
            by_key.get((t.queue, t.unique_key), t.uid) if t.unique_key else t.uid for t in merged
        ]
        for i, position in enumerate(positions):
            uids[position] = resolved[mapping[i]]
    return uids


def _copy_tasks(conn: Connection, tasks: Sequence[NewTask], payload_limit: int) -> None:
    """COPY rows in :data:`queries.COPY_COLUMNS` order, with an eta column only
    for the tasks that name one."""
    without_eta: list[tuple[Any, ...]] = []
    with_eta: list[tuple[Any, ...]] = []
    for t in tasks:
        args, kwargs = _payload(t, payload_limit)
        row = (
            t.uid, t.task, t.queue, t.priority, args, kwargs, t.retry, t.max_retries,
            t.backoff_seconds, t.max_backoff_seconds, t.timeout_seconds, t.store_result,
            t.result_expires, t.error_expires, t.operator, t.source,
        )  # fmt: skip
        if t.eta is None:
            without_eta.append(row)
        else:
            with_eta.append((*row, t.eta))
    raw = conn.connection.driver_connection  # psycopg's connection, in conn's transaction
    if raw is None:
        raise RuntimeError("the connection is closed")
    with raw.cursor() as cursor:
        for statement, rows in (
            (queries.COPY_TASKS, without_eta),
            (queries.COPY_TASKS_WITH_ETA, with_eta),
        ):
            if rows:
                with cursor.copy(statement) as copy:
                    for row in rows:
                        copy.write_row(row)


def insert_tasks_once(
    conn: Connection, tasks: Sequence[NewTask], *, payload_limit: int
) -> set[str]:
    """Insert tasks whose identity (resource uid, schedule tick) makes them
    idempotent; returns the uids actually inserted, leaving existing rows alone."""
    inserted: set[str] = set()
    for start in range(0, len(tasks), INSERT_CHUNK):
        params = insert_params(tasks[start : start + INSERT_CHUNK], payload_limit=payload_limit)
        inserted.update(str(r.uid) for r in conn.execute(queries.INSERT_TASKS_ONCE, params))
    return inserted


def get_task(conn: Connection, uid: str) -> TaskRecord | None:
    try:
        uuid.UUID(uid)
    except ValueError:
        return None
    row = conn.execute(queries.GET_TASK, {"uid": uid}).mappings().first()
    return TaskRecord.from_row(row) if row else None


def list_tasks(
    conn: Connection, *, status: str | None = None, queue: str | None = None, limit: int = 100
) -> list[TaskRecord]:
    params = {"status": status, "queue": queue, "limit": limit}
    return [TaskRecord.from_row(r) for r in conn.execute(queries.LIST_TASKS, params).mappings()]


def retry_task(conn: Connection, uid: str) -> TaskRecord | None:
    """Requeue a finished task; None when it does not exist or is still pending/running."""
    row = conn.execute(queries.RETRY_TASK, {"uid": uid}).mappings().first()
    if row is None:
        return None
    conn.execute(queries.NOTIFY_READY, {"queues": [row["namespace"]]})
    return TaskRecord.from_row(row)


def cancel_task(conn: Connection, uid: str) -> TaskRecord | None:
    """Cancel a pending task; None when it does not exist or has already started."""
    row = conn.execute(queries.CANCEL_TASK, {"uid": uid}).mappings().first()
    return TaskRecord.from_row(row) if row else None


def get_resource_task(conn: Connection, k8s_uid: str) -> TaskRecord | None:
    row = conn.execute(queries.GET_RESOURCE_TASK, {"k8s_uid": k8s_uid}).mappings().first()
    return TaskRecord.from_row(row) if row else None


def update_pending_resource_task(
    conn: Connection, k8s_uid: str, *, priority: int, eta: datetime | None, delay: float | None
) -> TaskRecord | None:
    """Carry a change of priority or eta to a task that has not started; None if it has."""
    params = {"k8s_uid": k8s_uid, "priority": priority, "eta": eta, "delay": delay}
    row = conn.execute(queries.UPDATE_PENDING_RESOURCE_TASK, params).mappings().first()
    return TaskRecord.from_row(row) if row else None


def delete_resource_task(conn: Connection, k8s_uid: str) -> str | None:
    """Remove the row of a deleted resource; its former status, or None if there was none.

    A worker still running it finishes, and its result goes nowhere: recording is
    guarded by the lease and finds no row.
    """
    row = conn.execute(queries.DELETE_RESOURCE_TASK, {"k8s_uid": k8s_uid}).first()
    return None if row is None else str(row.status)


#: Most resource-backed rows one status-sync pass reads; the rest come next pass.
CHANGED_LIMIT = 5000


def database_now(conn: Connection) -> datetime:
    now: datetime = conn.execute(queries.DATABASE_NOW).scalar_one()
    return now


def changed_resource_tasks(
    conn: Connection, since: datetime, limit: int = CHANGED_LIMIT
) -> list[TaskRecord]:
    """Resource-backed rows changed since ``since``, oldest change first."""
    rows = conn.execute(queries.CHANGED_RESOURCE_TASKS, {"since": since, "limit": limit})
    return [TaskRecord.from_row(r) for r in rows.mappings()]


@dataclass(frozen=True, slots=True)
class QueueStat:
    queue: str
    status: str
    count: int
    due: int
    oldest_due_seconds: float | None


def queue_stats(conn: Connection) -> list[QueueStat]:
    return [
        QueueStat(
            queue=r["namespace"],
            status=r["status"],
            count=r["count"],
            due=r["due"],
            oldest_due_seconds=None
            if r["oldest_due_seconds"] is None
            else float(r["oldest_due_seconds"]),
        )
        for r in conn.execute(queries.QUEUE_STATS).mappings()
    ]


@dataclass(frozen=True, slots=True)
class Success:
    uid: str
    result_json: str


@dataclass(frozen=True, slots=True)
class Failure:
    """``retry_in`` is the delay before the next attempt, or None for a final error."""

    uid: str
    error: dict[str, Any]
    retry_in: float | None


class AsyncTaskStore:
    """The worker's side of the queue: claim, heartbeat, record, release, clean up."""

    def __init__(self, engine: AsyncEngine, worker_id: str, lease_seconds: float) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds

    async def claim(self, queues: Sequence[str], limit: int) -> list[ClaimedTask]:
        params = {
            "queues": list(queues),
            "limit": limit,
            "worker_id": self.worker_id,
            "lease_seconds": self.lease_seconds,
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(queries.CLAIM_TASKS, params)
            return [ClaimedTask(*row) for row in result.all()]

    async def record(self, outcomes: Iterable[Success | Failure]) -> tuple[int, int]:
        """Write outcomes in one transaction; returns (completed, failed) rows changed.

        Rows this worker no longer holds (lease expired and claimed elsewhere)
        are not touched: their current holder decides their fate.
        """
        successes = [o for o in outcomes if isinstance(o, Success)]
        failures = [o for o in outcomes if isinstance(o, Failure)]
        done = failed = 0
        async with self.engine.begin() as conn:
            if successes:
                result = await conn.execute(
                    queries.COMPLETE_TASKS,
                    {
                        "uid": [o.uid for o in successes],
                        "result": [o.result_json for o in successes],
                        "worker_id": self.worker_id,
                    },
                )
                done = len(result.all())
            if failures:
                result = await conn.execute(
                    queries.FAIL_TASKS,
                    {
                        "uid": [o.uid for o in failures],
                        "error": [json.dumps(o.error) for o in failures],
                        "retry_in": [o.retry_in for o in failures],
                        "worker_id": self.worker_id,
                    },
                )
                rows = result.all()
                failed = len(rows)
                retried = sorted({r.namespace for r in rows if r.status == "retry"})
                if retried:
                    await conn.execute(queries.NOTIFY_READY, {"queues": retried})
        return done, failed

    async def heartbeat(self) -> int:
        params = {"worker_id": self.worker_id, "lease_seconds": self.lease_seconds}
        async with self.engine.begin() as conn:
            return (await conn.execute(queries.HEARTBEAT, params)).rowcount

    async def release(self, uids: Sequence[str], started: Sequence[bool]) -> int:
        if not uids:
            return 0
        params = {"uid": list(uids), "started": list(started), "worker_id": self.worker_id}
        async with self.engine.begin() as conn:
            rows = (await conn.execute(queries.RELEASE_TASKS, params)).all()
            if rows:
                queues = sorted({r.namespace for r in rows})
                await conn.execute(queries.NOTIFY_READY, {"queues": queues})
            return len(rows)

    async def recover_expired_leases(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Requeue tasks of dead workers; returns (uid, new status) of each."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(queries.RECOVER_EXPIRED_LEASES, {"limit": limit})).all()
            queues = sorted({r.namespace for r in rows if r.status == "scheduled"})
            if queues:
                await conn.execute(queries.NOTIFY_READY, {"queues": queues})
            return [(str(r.uid), r.status) for r in rows]

    async def purge_expired(self, limit: int = 1000) -> int:
        async with self.engine.begin() as conn:
            return (await conn.execute(queries.PURGE_EXPIRED, {"limit": limit})).rowcount
