"""Administration of tasks: get, list, requeue, cancel, delete, look up by unique
key, counts; and the operator's resource-backed rows. One function per rule,
whoever asks (CLI, REST API, operator, dashboard).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from eventix_operator.db import statements
from eventix_operator.db.rows import Fetch, QueueStat, TaskRecord, parse_uid, queue_stat, records


def get_task(conn: Connection, uid: str) -> TaskRecord | None:
    if parse_uid(uid) is None:
        return None
    row = conn.execute(statements.GET_TASK, {"uid": uid}).first()
    return None if row is None else TaskRecord.from_row(row)


async def fetch_task(fetch: Fetch, uid: str) -> TaskRecord | None:
    """:func:`get_task` on a hot path's connection."""
    if parse_uid(uid) is None:
        return None
    rows = await fetch(statements.GET_TASK, {"uid": uid})
    return TaskRecord.from_row(rows[0]) if rows else None


#: What a listing may filter and sort on: Eventix's field names (the CLI uses
#: them too) and the columns they stand for.
LISTING_COLUMNS = statements.LISTING_COLUMNS


@dataclass(frozen=True, slots=True)
class Page:
    records: list[TaskRecord]
    total: int


def list_tasks(
    conn: Connection,
    *,
    equals: Mapping[str, Any] | None = None,
    within: Mapping[str, Sequence[Any]] | None = None,
    order: Sequence[tuple[str, bool]] = (),
    skip: int = 0,
    limit: int = 100,
) -> list[TaskRecord]:
    """Tasks matching equality and membership filters, in ``order`` (pairs of
    column name and descending), uid last. Column names are those of
    :data:`LISTING_COLUMNS`; an unknown one is a ``KeyError``."""
    equals, within = equals or {}, within or {}
    for name in [*equals, *within, *(n for n, _ in order if n != "status_id")]:
        if name not in LISTING_COLUMNS:
            raise KeyError(name)
    query = statements.tasks_page(equals=equals, within=within, order=order, skip=skip, limit=limit)
    return records(conn.execute(query).all())


def tasks_page(
    conn: Connection,
    *,
    equals: Mapping[str, Any],
    within: Mapping[str, Sequence[Any]] | None = None,
    order: Sequence[tuple[str, bool]] = (),
    skip: int = 0,
    limit: int = 100,
) -> Page:
    """One page of :func:`list_tasks` and the size of the whole listing."""
    found = list_tasks(conn, equals=equals, within=within, order=order, skip=skip, limit=limit)
    total = conn.execute(statements.tasks_count(equals=equals, within=within or {})).scalar_one()
    return Page(found, int(total))


def requeue_task(conn: Connection, uid: str, eta: datetime | None = None) -> TaskRecord | None:
    """Run a task again, at ``eta`` or now (the CLI's ``tasks retry``, Eventix's
    reschedule): one that finished, failed, was cancelled or waits for a retry;
    its attempts start afresh. None when there is no such task in such a state.
    Workers of its queue hear of it."""
    if parse_uid(uid) is None:
        return None
    row = conn.execute(statements.REQUEUE_TASK, {"uid": uid, "eta": eta}).first()
    return None if row is None else TaskRecord.from_row(row)


#: Who may cancel a task, as its error names them (``cancelled by cli``).
CANCELLERS = ("cli", "api", "dashboard", "resource deletion")


def cancel_task(conn: Connection, uid: str, by: str = "cli") -> TaskRecord | None:
    """Cancel a task for ``by`` (one of :data:`CANCELLERS`): a pending one ends
    ``cancelled`` now; a running one is marked and its worker told, and the worker
    stops it and records it ``cancelled`` (docs/cancelling.md); the returned record
    then still says ``processing``, with ``cancel_requested_at`` set. None when
    there is no such task or it has finished."""
    if parse_uid(uid) is None:
        return None
    row = conn.execute(statements.CANCEL_RUNNING_TASK, {"uid": uid, "by": by}).first()
    return None if row is None else TaskRecord.from_row(row)


def delete_task(conn: Connection, uid: str) -> bool:
    """Remove a task whatever its state; False when there was none.

    A worker still running it finishes: an HTTP worker's write-back creates it
    again, as in Eventix; a native worker's recording is guarded by its lease
    and finds nothing.
    """
    if parse_uid(uid) is None:
        return False
    return conn.execute(statements.DELETE_TASK, {"uid": uid}).first() is not None


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
    return records(conn.execute(statements.TASKS_BY_UNIQUE_KEY, params).all())


# -- counts -------------------------------------------------------------------------


def queue_stats(conn: Connection) -> list[QueueStat]:
    return [queue_stat(r) for r in conn.execute(statements.QUEUE_STATS).all()]


def namespaces(conn: Connection) -> list[str]:
    return [str(n) for n in conn.execute(statements.NAMESPACES).scalars()]


def task_types(conn: Connection, namespace: str) -> list[str]:
    params = {"namespace": namespace}
    return [str(t) for t in conn.execute(statements.TASK_TYPES, params).scalars()]


def status_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(statements.STATUS_COUNTS).mappings()
    return {str(r["status"]): int(r["count"]) for r in rows}


def active_workers(conn: Connection) -> int:
    return int(conn.execute(statements.ACTIVE_WORKERS).scalar_one())


# -- resource-backed tasks (the operator) ----------------------------------------------

#: Most resource-backed rows one status-sync pass reads; the rest come next pass.
CHANGED_LIMIT = 5000


def get_resource_task(conn: Connection, k8s_uid: str) -> TaskRecord | None:
    row = conn.execute(statements.GET_RESOURCE_TASK, {"k8s_uid": k8s_uid}).first()
    return None if row is None else TaskRecord.from_row(row)


def update_pending_resource_task(
    conn: Connection, k8s_uid: str, *, priority: int, eta: datetime | None, delay: float | None
) -> TaskRecord | None:
    """Carry a change of priority or eta to a task that has not started; None if it has."""
    params = {"k8s_uid": k8s_uid, "priority": priority, "eta": eta, "delay": delay}
    row = conn.execute(statements.UPDATE_PENDING_RESOURCE_TASK, params).first()
    return None if row is None else TaskRecord.from_row(row)


def delete_resource_task(conn: Connection, k8s_uid: str) -> str | None:
    """Remove the row of a deleted resource; its former status, or None if there was none.

    A worker still running it is told to stop it (as a cancel; its result would go
    nowhere: recording is guarded by the lease and finds no row).
    """
    row = conn.execute(statements.DELETE_RESOURCE_TASK_STOPPING, {"k8s_uid": k8s_uid}).first()
    return None if row is None else str(row.status)


def database_now(conn: Connection) -> datetime:
    now: datetime = conn.execute(statements.DATABASE_NOW).scalar_one()
    return now


def changed_resource_tasks(
    conn: Connection, since: datetime, limit: int = CHANGED_LIMIT
) -> list[TaskRecord]:
    """Resource-backed rows changed since ``since``, oldest change first."""
    rows = conn.execute(statements.CHANGED_RESOURCE_TASKS, {"since": since, "limit": limit})
    return records(rows.all())
