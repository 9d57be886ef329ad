"""One task: create, read, write back, delete, reschedule, cancel, look up by unique key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from eventix_operator.api import convert, errors
from eventix_operator.api.context import (
    E404,
    E409,
    E413,
    E422,
    ApiContext,
    conflict,
    null_response,
    task_response,
    uid_or_404,
)
from eventix_operator.api.models import EventixError, EventixStatus, EventixTask, EventixTaskIn
from eventix_operator.db import admin, writeback
from eventix_operator.db.rows import TaskRecord, parse_uid
from eventix_operator.tracing import from_headers


def wanted_stati(chosen: list[EventixStatus] | None) -> list[str]:
    """Eventix's statuses as ours: pending by default, and ``error`` includes ``cancelled``."""
    wanted: list[str] = list(chosen) if chosen else ["scheduled", "retry"]
    return [*wanted, "cancelled"] if "error" in wanted else wanted


def revision_of(value: str | None) -> int | None:
    """Our revisions are integers; Eventix's own (``3-9f…``) never match one."""
    return int(value) if value is not None and value.isdigit() else None


def changed(conn: Connection, uid: str, record: TaskRecord | None) -> TaskRecord:
    """The row an action changed, or why it changed none: no such task (404), or a
    task in a state the action does not take (422, naming the state)."""
    if record is not None:
        return record
    current = admin.get_task(conn, uid)
    if current is None:
        raise errors.NotFound(uid)
    raise errors.WrongTaskStatus(uid, convert.task_out(current).status or "")


def router(ctx: ApiContext) -> APIRouter:
    routes = APIRouter()
    limit = ctx.payload_limit

    @routes.post("/task", tags=["task"], response_model=EventixTask, responses={**E409, **E413})
    async def post_task(task: EventixTaskIn, request: Request) -> Response:
        """Schedule a task. With a ``unique_key`` that a pending task of the same
        namespace has, that task is updated instead (earliest eta, lowest priority,
        newest args and kwargs) and returned. A uid that exists is a 409. A
        ``traceparent`` header is the parent of the task's attempts' spans (when
        the server traces)."""
        item = convert.new_task(task)
        if ctx.tracing:
            item.trace_context = from_headers(request.headers)
        try:
            record = await ctx.db.insert_task(item)
        except psycopg.IntegrityError as exc:
            raise conflict(exc, item.uid, item.unique_key) from None
        return task_response(record)

    @routes.get(
        "/task/by_unique_key/{unique_key}",
        tags=["task"],
        response_model=EventixTask,
        responses={**E404, **E409},
        deprecated=True,
    )
    async def task_by_unique_key(unique_key: str) -> Response:
        """The pending (scheduled or retry) task with this unique key, in any
        namespace; 409 when several namespaces have one."""
        found = await ctx.run(
            admin.tasks_by_unique_key,
            unique_key,
            namespace=None,
            stati=wanted_stati(None),
        )
        if not found:
            raise errors.NoTaskFoundForUniqueKey(unique_key)
        if len(found) > 1:
            raise errors.TaskUniqueKeyNotUnique(unique_key)
        return task_response(found[0])

    @routes.get(
        "/task/by_unique_key/{namespace}/{unique_key}",
        tags=["task"],
        response_model=EventixTask,
        responses=E404,
    )
    async def task_by_unique_key_in_namespace(
        namespace: str,
        unique_key: str,
        stati: Annotated[list[EventixStatus] | None, Query()] = None,
    ) -> Response:
        """The newest task of the namespace with this unique key and one of
        ``stati`` (default: scheduled and retry)."""
        found = await ctx.run(
            admin.tasks_by_unique_key,
            unique_key,
            namespace=namespace,
            stati=wanted_stati(stati),
            limit=1,
        )
        if not found:
            raise errors.NoTaskFoundForUniqueKey(unique_key, list(stati) if stati else None)
        return task_response(found[0])

    @routes.delete("/task/by_unique_key/{unique_key}", tags=["task"], responses={**E404, **E409})
    async def delete_task_by_unique_key(unique_key: str) -> Response:
        """Delete the pending task with this unique key (as GET finds it)."""

        def delete(conn: Connection) -> None:
            found = admin.tasks_by_unique_key(
                conn, unique_key, namespace=None, stati=wanted_stati(None)
            )
            if not found:
                raise errors.NoTaskFoundForUniqueKey(unique_key)
            if len(found) > 1:
                raise errors.TaskUniqueKeyNotUnique(unique_key)
            admin.delete_task(conn, found[0].uid)

        await ctx.run(delete)
        return null_response()

    @routes.get("/task/{uid}", tags=["task"], response_model=EventixTask, responses=E404)
    async def get_task(uid: str) -> Response:
        record = await ctx.db.get_task(uid_or_404(uid))
        if record is None:
            raise errors.NotFound(uid)
        return task_response(record)

    @routes.put(
        "/task/{uid}",
        tags=["task"],
        response_model=EventixTask,
        responses={
            409: {"model": EventixError, "description": "RevisionConflict: the task changed."},
            **E413,
        },
    )
    async def put_task(uid: str, task: EventixTaskIn) -> Response:
        """A worker's write-back (or any full update): replaces the task if its
        ``revision`` is still the one read, else 409 ``RevisionConflict``; creates
        it when it does not exist. Retry bookkeeping is translated: the task keeps
        its total retries and its own backoff. An outcome (done, retry, error)
        whose result or arguments cannot be stored ends the task ``error`` with
        the reason."""
        if parse_uid(uid) is None:
            raise errors.InvalidRequest("uid must be a UUID (32 hex digits, as Eventix makes them)")
        write = writeback.prepare(convert.task_write(task, uid), limit)
        revision = revision_of(task.revision)
        try:
            outcome: TaskRecord | writeback.WriteConflict | None = None
            if revision is not None:
                outcome = await ctx.db.replace_task(write, revision=revision)
            if outcome is None:  # stale revision, or no such task: decide in a transaction
                outcome = await ctx.run(writeback.write_task, write)
        except (IntegrityError, psycopg.IntegrityError) as exc:
            raise conflict(exc, write.write.uid, write.write.unique_key) from None
        if isinstance(outcome, writeback.WriteConflict):
            raise errors.RevisionConflict(str(outcome.current_revision))
        return task_response(outcome)

    @routes.delete("/task/{uid}", tags=["task"], responses=E404)
    async def delete_task(uid: str) -> Response:
        if not await ctx.run(admin.delete_task, uid_or_404(uid)):
            raise errors.NotFound(uid)
        return null_response()

    @routes.post(
        "/task/{uid}/cancel",
        tags=["task"],
        response_model=EventixTask,
        responses={**E404, **E422},
    )
    async def cancel_task(uid: str) -> Response:
        """Cancel a task (not an Eventix route): a pending one ends cancelled (shown
        as ``error``, its error ``Cancelled``); a running one is stopped by its native
        worker, which records it cancelled (returned still ``processing``). A
        finished task is a 422 ``WrongTaskStatus``."""
        uid_or_404(uid)

        def cancel(conn: Connection) -> TaskRecord:
            return changed(conn, uid, admin.cancel_task(conn, uid, "api"))

        return task_response(await ctx.run(cancel))

    @routes.get(
        "/task/{uid}/reschedule",
        tags=["task"],
        response_model=EventixTask,
        responses={**E404, **E422, **E409},
    )
    async def reschedule_task(uid: str, eta: datetime | None = None) -> Response:
        """Run a task again, at ``eta`` or now: a failed, retrying, cancelled or
        done one (the one requeue rule, also the CLI's ``tasks retry``); its
        attempts start afresh."""
        uid_or_404(uid)
        if eta is not None:
            eta = eta.replace(tzinfo=UTC) if eta.tzinfo is None else eta.astimezone(UTC)

        def reschedule(conn: Connection) -> TaskRecord:
            return changed(conn, uid, admin.requeue_task(conn, uid, eta))

        try:
            return task_response(await ctx.run(reschedule))
        except IntegrityError as exc:
            raise conflict(exc, uid, None) from None

    return routes
