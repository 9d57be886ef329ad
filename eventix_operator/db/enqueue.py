"""Enqueue: validate each task once, merge by unique key, INSERT or COPY.

Every front end enqueues through here: the client and the CLI (in the caller's
transaction), the operator's reconcile and the scheduler (idempotent inserts
keyed on a resource or a tick), and the REST API's ``POST /task`` and
``POST /event`` (:func:`insert_returning`, on a connection of theirs).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from eventix_operator.db.payload import PayloadTooLarge, dump_json
from eventix_operator.db.rows import INSERT_COLUMNS, Fetch, TaskRecord

# The functions that run statements import them (and so SQLAlchemy) when they run:
# `eventix enqueue` validates and inserts through here on plain psycopg
# (:func:`insert_batch`, db/oneshot.py) without paying for SQLAlchemy's import.
if TYPE_CHECKING:
    from sqlalchemy import Connection

#: Rows per INSERT statement in bulk enqueue: large enough to amortise the round
#: trip, small enough to keep one statement's parameters in a few megabytes.
INSERT_CHUNK = 10_000
#: Below this many plain tasks a COPY saves nothing over the INSERT.
COPY_MIN = 64


@dataclass(slots=True)
class NewTask:
    """A task to enqueue. ``eta`` wins over ``delay``; neither means due now
    (by the database's clock, so client clock skew does not delay work).

    Not frozen: building 100,000 frozen instances was a third of a bulk enqueue.
    ``payload`` is the JSON of args and kwargs once :func:`validate` has checked
    it, so that no path encodes a task twice.
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
    #: The enqueuer's trace context (:mod:`eventix_operator.tracing`), or None.
    trace_context: Mapping[str, str] | None = None
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    payload: tuple[str, str] | None = field(default=None, repr=False, compare=False)


def validate(task: NewTask, payload_limit: int) -> tuple[str, str]:
    """The JSON of the task's args and kwargs, checked against what jsonb holds
    and the payload limit; raises :class:`~.payload.NotStorable`,
    :class:`~.payload.PayloadTooLarge` or ``ValueError`` naming the task."""
    if task.payload is not None:
        return task.payload
    if not task.task:
        raise ValueError("a task needs a name")
    name = task.task
    # Most tasks have no args or no kwargs: skip the encoder for those.
    args = (
        dump_json(list(task.args), what=f"args of {name}", root="args", limit=payload_limit)
        if task.args
        else "[]"
    )
    kwargs = (
        dump_json(dict(task.kwargs), what=f"kwargs of {name}", root="kwargs", limit=payload_limit)
        if task.kwargs
        else "{}"
    )
    if len(args) + len(kwargs) > payload_limit:
        raise PayloadTooLarge(
            f"args and kwargs of {name} are {len(args) + len(kwargs)} bytes of JSON, "
            f"over the {payload_limit} byte limit"
        )
    task.payload = (args, kwargs)
    return task.payload


def _due(task: NewTask, now: datetime) -> datetime:
    return task.eta if task.eta is not None else now + timedelta(seconds=task.delay or 0)


def _merge_key(task: NewTask) -> tuple[str, str | None, str]:
    """What a task merges by: (queue, unique key, Kubernetes namespace or ""), the
    columns of the pending unique-key index: a merge never crosses namespaces."""
    return (task.queue, task.unique_key, task.k8s_namespace or "")


def merge_duplicates(tasks: Sequence[NewTask]) -> tuple[list[NewTask], dict[int, int]]:
    """Fold tasks sharing (queue, unique key, namespace) within one batch, Eventix-style.

    PostgreSQL refuses to let one INSERT ... ON CONFLICT touch a row twice, so
    duplicates inside a batch are merged here exactly as the statement would
    merge them with a stored row. Returns the tasks to insert and, for each input
    position, its position in that list.
    """
    now = datetime.now(UTC)
    merged: list[NewTask] = []
    position: dict[tuple[str, str | None, str], int] = {}
    mapping: dict[int, int] = {}
    for i, t in enumerate(tasks):
        if t.unique_key is None:
            mapping[i] = len(merged)
            merged.append(t)
            continue
        key = _merge_key(t)
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


def insert_params(tasks: Sequence[NewTask], *, payload_limit: int) -> dict[str, list[Any]]:
    """Parallel arrays, one per :data:`~.rows.INSERT_COLUMNS`."""
    rows = []
    for t in tasks:
        args, kwargs = validate(t, payload_limit)
        rows.append(
            (
                t.uid, t.task, t.queue, t.priority, t.eta, t.delay, args, kwargs, t.unique_key,
                t.retry, t.max_retries, t.backoff_seconds, t.max_backoff_seconds,
                t.timeout_seconds, t.store_result, t.result_expires, t.error_expires,
                t.operator, t.source, t.k8s_namespace, t.k8s_name, t.k8s_uid, t.schedule_uid,
                t.schedule_time, _trace_json(t),
            )
        )  # fmt: skip
    names = INSERT_COLUMNS
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return {name: list(values) for name, values in zip(names, columns, strict=True)}


def _trace_json(task: NewTask) -> str | None:
    return None if task.trace_context is None else json.dumps(dict(task.trace_context))


def resolve(merged: Sequence[NewTask], rows: Sequence[Any]) -> list[Any]:
    """For each merged task, the returned row that holds it: a task with a unique
    key may have merged into a pending row of another uid; find it by its key.
    Rows need ``uid``, ``namespace``, ``unique_key`` and ``k8s_namespace`` attributes."""
    by_key = {
        (r.namespace, r.unique_key, r.k8s_namespace or ""): r
        for r in rows
        if r.unique_key is not None
    }
    by_uid = {str(r.uid): r for r in rows}
    return [by_key[_merge_key(t)] if t.unique_key is not None else by_uid[t.uid] for t in merged]


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
    from eventix_operator.db import statements

    def run(params: dict[str, list[Any]]) -> Sequence[Any]:
        return conn.execute(statements.INSERT_TASKS, params).all()

    for start in range(0, len(rest), INSERT_CHUNK):
        positions = rest[start : start + INSERT_CHUNK]
        found = insert_batch(run, [tasks[i] for i in positions], payload_limit=payload_limit)
        for position, uid in zip(positions, found, strict=True):
            uids[position] = uid
    return uids


def insert_batch(
    run: Callable[[dict[str, list[Any]]], Sequence[Any]],
    tasks: Sequence[NewTask],
    *,
    payload_limit: int,
) -> list[str]:
    """The uids of ``tasks``, in order, once ``run`` has executed
    :data:`~.statements.INSERT_TASKS` with the parameters it is given and returned
    its rows (attributes ``uid``, ``namespace``, ``unique_key``, ``k8s_namespace``)."""
    merged, mapping = merge_duplicates(tasks)
    resolved = resolve(merged, run(insert_params(merged, payload_limit=payload_limit)))
    return [str(resolved[mapping[i]].uid) for i in range(len(tasks))]


def _copy_tasks(conn: Connection, tasks: Sequence[NewTask], payload_limit: int) -> None:
    """COPY rows in :data:`~.statements.COPY_COLUMNS` order, with an eta column
    only for the tasks that name one."""
    from eventix_operator.db import statements

    without_eta: list[tuple[Any, ...]] = []
    with_eta: list[tuple[Any, ...]] = []
    for t in tasks:
        args, kwargs = validate(t, payload_limit)
        row = (
            t.uid, t.task, t.queue, t.priority, args, kwargs, t.retry, t.max_retries,
            t.backoff_seconds, t.max_backoff_seconds, t.timeout_seconds, t.store_result,
            t.result_expires, t.error_expires, t.operator, t.source, _trace_json(t),
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
            (statements.COPY_TASKS, without_eta),
            (statements.COPY_TASKS_WITH_ETA, with_eta),
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
    from eventix_operator.db import statements

    inserted: set[str] = set()
    for start in range(0, len(tasks), INSERT_CHUNK):
        params = insert_params(tasks[start : start + INSERT_CHUNK], payload_limit=payload_limit)
        inserted.update(str(r.uid) for r in conn.execute(statements.INSERT_TASKS_ONCE, params))
    return inserted


async def insert_returning(
    fetch: Fetch, tasks: Sequence[NewTask], *, payload_limit: int
) -> list[TaskRecord]:
    """One INSERT for ``tasks`` (each merged by unique key); the row of each, in
    order (a task merged into a pending one gets that task's row)."""
    from eventix_operator.db import statements

    merged, position = merge_duplicates(tasks)
    params = insert_params(merged, payload_limit=payload_limit)
    rows = [TaskRecord.from_row(r) for r in await fetch(statements.INSERT_TASK_ROWS, params)]
    resolved = resolve(merged, rows)
    return [resolved[position[i]] for i in range(len(tasks))]
