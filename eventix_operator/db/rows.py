"""The one mapping from task rows to values, for every front end.

Statements that return whole task rows return
:data:`~eventix_operator.db.statements.TASK_COLUMNS` in table order, the field
order of :class:`TaskRecord`, so a row (a SQLAlchemy ``Row`` or a psycopg tuple
alike) becomes a record by position: no names to look up per row, at tens of
thousands of rows a second.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventix_operator.retry import RetryPolicy

if TYPE_CHECKING:  # one-shot commands read rows without importing SQLAlchemy (db/oneshot.py)
    from sqlalchemy import TextClause

#: Parameters of an enqueue, in the order of the parallel arrays of
#: :func:`~.enqueue.insert_params` (``delay`` is not a column: the database's clock
#: turns it into ``eta``). Here rather than in :mod:`.statements`, which builds the
#: INSERT from it, so that a one-shot enqueue (db/oneshot.py) needs no SQLAlchemy.
INSERT_COLUMNS = (
    "uid", "task", "namespace", "priority", "eta", "delay", "args", "kwargs", "unique_key",
    "retry", "max_retries", "error_eta_inc", "error_eta_max", "timeout_seconds",
    "store_result", "result_expires", "error_expires", "operator", "source",
    "k8s_namespace", "k8s_name", "k8s_uid", "schedule_uid", "schedule_time", "trace_context",
)  # fmt: skip

#: Runs one statement on its own (autocommit) and returns its rows: how the REST
#: API's hot paths hand the data layer a connection of theirs.
Fetch = Callable[["TextClause", Mapping[str, Any]], Awaitable[Sequence[Sequence[Any]]]]


def parse_uid(uid: str) -> uuid.UUID | None:
    """The UUID a uid names (Eventix writes 32 hex digits, we write dashes), or None."""
    try:
        return uuid.UUID(uid)
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of ``eventix_task``; fields in the table's column order."""

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
    trace_context: dict[str, str] | None
    cancel_requested_at: datetime | None = None
    cancelled_by: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TaskRecord:
        """A record from a row of whole-row columns, in table order."""
        return cls(str(row[0]), *row[1:])

    @property
    def queue(self) -> str:
        return self.namespace

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry, self.max_retries, self.error_eta_inc, self.error_eta_max)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def records(rows: Sequence[Sequence[Any]]) -> list[TaskRecord]:
    return [TaskRecord.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class QueueStat:
    queue: str
    status: str
    count: int
    due: int
    oldest_due_seconds: float | None


def queue_stat(row: Sequence[Any]) -> QueueStat:
    """A row of :data:`~.statements.QUEUE_STATS`: namespace, status, count, oldest
    due seconds, due."""
    namespace, status, count, oldest, due = row
    return QueueStat(
        queue=namespace,
        status=status,
        count=count,
        due=due,
        oldest_due_seconds=None if oldest is None else float(oldest),
    )


@dataclass(slots=True)
class ClaimedTask:
    """A task as a native worker holds it: the columns of
    :data:`~eventix_operator.db.statements.CLAIMED_COLUMNS`, from row tuples.

    Not frozen: at tens of thousands of tasks a second, a frozen 36-field record
    per task was the worker's largest cost.
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
    trace_context: Any  # a carrier (dict) or None, for eventix_operator.tracing

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry, self.max_retries, self.error_eta_inc, self.error_eta_max)
