"""Enqueue tasks from application code, in the caller's transaction or on its own.

Pass ``connection=`` (a SQLAlchemy ``Connection`` or ``Session``) to make the
enqueue part of your own transaction: the task exists exactly when your data
does. Without it the client opens its own engine from ``DATABASE_URL`` once.

An application that traces with OpenTelemetry has its current span's context
stored with each task, and the task's attempts continue that trace
(:mod:`eventix_operator.tracing`): ``enqueue`` as children of the span,
``enqueue_many`` as traces of their own linked to it (thousands of children would
bury the caller's trace).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventix_operator.db.enqueue import NewTask, insert_tasks
from eventix_operator.settings import get_settings
from eventix_operator.tracing import current

if TYPE_CHECKING:  # loaded when a task is enqueued: `eventix enqueue` validates with
    # new_task and inserts on plain psycopg (db/oneshot.py)
    from sqlalchemy import Connection, Engine
    from sqlalchemy.orm import Session

__all__ = ["enqueue", "enqueue_many", "new_task"]


@functools.cache
def default_engine() -> Engine:
    from eventix_operator.db.engine import make_engine

    return make_engine(get_settings())


def new_task(
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 0,
    eta: datetime | None = None,
    delay: float | None = None,
    unique_key: str | None = None,
    max_retries: int | None = None,
    retry: bool = True,
    backoff_seconds: int = 15,
    max_backoff_seconds: int = 300,
    timeout_seconds: float | None = None,
    store_result: bool = True,
    result_ttl_seconds: int | None = 604_800,
    error_ttl_seconds: int | None = None,
    operator: str | None = None,
    source: str = "client",
) -> NewTask:
    """Validate options into a :class:`NewTask`; errors name the offending option."""
    if not isinstance(task, str) or not task:
        raise ValueError("task must be a non-empty string")
    if eta is not None and delay is not None:
        raise ValueError("give eta or delay, not both")
    if delay is not None and delay < 0:
        raise ValueError("delay must be >= 0 seconds")
    if isinstance(args, str | bytes | Mapping):
        raise TypeError("args must be a sequence of positional arguments")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise TypeError("kwargs must be a mapping")
    for name, value in (
        ("max_retries", max_retries),
        ("backoff_seconds", backoff_seconds),
        ("max_backoff_seconds", max_backoff_seconds),
    ):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0")
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise ValueError("timeout_seconds must be > 0")
    if eta is not None and eta.tzinfo is None:
        eta = eta.replace(tzinfo=UTC)  # naive times are UTC, as in Eventix
    return NewTask(
        task=task,
        args=tuple(args),
        kwargs=dict(kwargs or {}),
        queue=queue,
        priority=priority,
        eta=eta,
        delay=delay,
        unique_key=unique_key,
        retry=retry,
        max_retries=max_retries,
        backoff_seconds=backoff_seconds,
        max_backoff_seconds=max_backoff_seconds,
        timeout_seconds=timeout_seconds,
        store_result=store_result,
        result_expires=result_ttl_seconds,
        error_expires=error_ttl_seconds,
        operator=operator,
        source=source,
    )


def enqueue(
    task: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 0,
    eta: datetime | None = None,
    delay: float | None = None,
    unique_key: str | None = None,
    max_retries: int | None = None,
    connection: Connection | Session | None = None,
    **options: Any,
) -> str:
    """Enqueue one task; returns its uid (an existing pending task's uid when
    ``unique_key`` merged the two)."""
    item = new_task(
        task,
        args,
        kwargs,
        queue=queue,
        priority=priority,
        eta=eta,
        delay=delay,
        unique_key=unique_key,
        max_retries=max_retries,
        **options,
    )
    item.trace_context = current()
    return _insert([item], connection)[0]


def enqueue_many(
    tasks: Iterable[Mapping[str, Any]], *, connection: Connection | Session | None = None
) -> list[str]:
    """Enqueue many tasks in a few statements; each item takes ``enqueue``'s
    arguments as keys (``task`` required). Returns uids in input order."""
    items = []
    context = current(link=True)
    for i, spec in enumerate(tasks):
        spec = dict(spec)
        if "connection" in spec:
            raise ValueError(f"task #{i}: pass connection to enqueue_many, not per task")
        try:
            item = new_task(**spec)
        except TypeError as exc:
            raise TypeError(f"task #{i}: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"task #{i}: {exc}") from exc
        item.trace_context = context
        items.append(item)
    return _insert(items, connection)


def _insert(items: Sequence[NewTask], connection: Connection | Session | None) -> list[str]:
    from sqlalchemy import Connection

    limit = get_settings().max_payload_bytes
    if connection is not None and not isinstance(connection, Connection):  # an ORM Session
        return insert_tasks(connection.connection(), items, payload_limit=limit)
    if connection is not None:
        return insert_tasks(connection, items, payload_limit=limit)
    with default_engine().begin() as conn:
        return insert_tasks(conn, items, payload_limit=limit)
