"""The Eventix-compatible REST API on the PostgreSQL queue.

Every route of Eventix 3.5's server, with its paths, parameters, bodies, status
codes and error documents, so that Eventix's own client, ``TaskWorker`` and CLI
work against it unchanged; the rows are the queue's, so native workers, the CLI
and the operator see the same tasks. ``GET /tasks/next_scheduled`` claims with
the native worker's ``SKIP LOCKED`` statement: HTTP and native workers can drain
one queue together and no task runs twice.

The hot paths (``POST /task``, ``GET /task/{uid}``, the claim, the write-back,
``POST /event``) are one autocommit statement each on a pooled psycopg
connection, and concurrent requests share statements (see
:class:`~eventix_operator.db.api_tasks.Batcher`); the rest run as one
transaction each. Answers are serialised once, straight from the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
import psycopg
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Connection
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from eventix_operator.api import convert, errors
from eventix_operator.api.events import fire_event
from eventix_operator.api.guard import Guard, bearer_token
from eventix_operator.api.models import (
    EVENTIX_STATUSES,
    EventixError,
    EventixEventIn,
    EventixStatus,
    EventixTask,
    EventixTaskIn,
    Health,
    HttpError,
    MemoryInfo,
    Metrics,
    NamespacesResponseModel,
    NamespaceTaskTypesResponseModel,
    PageRequest,
    TasksByStatusRequest,
    TasksByTaskRequest,
    TasksPage,
    Version,
    WorkerInfo,
    hex_uid,
)
from eventix_operator.api.triggers import (
    CodeTrigger,
    TriggerStats,
    event_context,
    load_code_triggers,
    run_code_triggers,
)
from eventix_operator.db import api_tasks
from eventix_operator.db import tasks as task_db
from eventix_operator.db.api_queries import LISTING_COLUMNS
from eventix_operator.db.tasks import AsyncTaskStore, PayloadTooLarge, TaskRecord
from eventix_operator.db.triggers import record_trigger_outcomes
from eventix_operator.logs import get_logger
from eventix_operator.settings import Settings, get_settings

log = get_logger("eventix.api")

P = ParamSpec("P")
R = TypeVar("R")

#: Database errors that mean "not reachable now": 503, try again.
DB_DOWN = (OperationalError, InterfaceError, PoolTimeout, psycopg.OperationalError)
#: Seconds between writes of table triggers' counters.
TRIGGER_STATS_INTERVAL = 1.0

JSON = "application/json"


def package_version() -> str:
    try:
        return version("eventix-operator")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


@dataclass
class ApiContext:
    """What the routes share; the engine exists between start-up and shutdown."""

    settings: Settings
    code_triggers: dict[str, dict[str, CodeTrigger]] = field(default_factory=dict)
    stats: TriggerStats = field(default_factory=TriggerStats)
    store: api_tasks.AsyncApiStore | None = None

    @property
    def payload_limit(self) -> int:
        return self.settings.max_payload_bytes

    @property
    def max_body_bytes(self) -> int:
        return self.settings.api_max_body_bytes or 2 * self.settings.max_payload_bytes + 65_536

    async def run(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(connection, ...)`` in one transaction."""
        return await self.db.transaction(fn, *args, **kwargs)

    @property
    def db(self) -> api_tasks.AsyncApiStore:
        assert self.store is not None, "the API is not started"
        return self.store


# -- answers ---------------------------------------------------------------------


def task_response(record: TaskRecord) -> Response:
    return Response(convert.task_out(record).model_dump_json(), media_type=JSON)


def no_content() -> Response:
    return Response(status_code=204)


def null_response() -> Response:
    return Response(b"null", media_type=JSON)


def _uid_or_404(uid: str) -> str:
    if api_tasks.parse_uid(uid) is None:
        raise errors.NotFound(uid)
    return uid


def _stati(stati: list[EventixStatus] | None) -> list[str]:
    chosen: list[str] = list(stati) if stati else ["scheduled", "retry"]
    return [*chosen, "cancelled"] if "error" in chosen else chosen


def _revision(value: str | None) -> int | None:
    """Our revisions are integers; Eventix's own (``3-9f…``) never match one."""
    return int(value) if value is not None and value.isdigit() else None


def _integrity(exc: Exception, uid: str | None, unique_key: str | None) -> errors.ApiError:
    """The Eventix error for a unique violation (from SQLAlchemy or from psycopg)."""
    orig = getattr(exc, "orig", exc)
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
    if constraint == "pk_eventix_task":
        return errors.AlreadyExists(hex_uid(uid) if uid else "")
    if constraint == "uq_eventix_task_pending_unique_key":
        return errors.TaskUniqueKeyNotUnique(unique_key or "")
    return errors.ApiError(str(orig).splitlines()[0])


def _listing(
    body: PageRequest, max_page: int
) -> tuple[dict[str, Any], dict[str, list[Any]], list[tuple[str, bool]], int, int]:
    """Eventix pagination parameters as filters, order, skip and limit (422 on
    what cannot be served)."""
    equals: dict[str, Any] = {}
    within: dict[str, list[Any]] = {}
    for name, value in (body.filter or {}).items():
        if name not in LISTING_COLUMNS:
            raise errors.InvalidRequest(
                f"cannot filter on {name!r}; fields: {', '.join(sorted(LISTING_COLUMNS))}"
            )
        if isinstance(value, dict):
            if set(value) != {"$in"} or not isinstance(value["$in"], list):
                raise errors.InvalidRequest(
                    f'filter on {name!r}: only a value or {{"$in": [values]}} is supported'
                )
            within[name] = list(value["$in"])
        elif isinstance(value, list):
            raise errors.InvalidRequest(f'filter on {name!r}: use {{"$in": [values]}} for lists')
        else:
            equals[name] = value
    for name in ("uid", "_id"):
        if name in equals:
            parsed = api_tasks.parse_uid(str(equals[name]))
            if parsed is None:
                raise errors.InvalidRequest(f"filter on {name!r}: not a uid")
            equals[name] = parsed
    if equals.get("status") == "error":
        within["status"] = ["error", "cancelled"]
        del equals["status"]
    order: list[tuple[str, bool]] = []
    for part in (body.sort or "").split(","):
        part = part.strip()
        if not part:
            continue
        descending = part.startswith("-")
        name = part.lstrip("-+")
        if name not in LISTING_COLUMNS and name != "status_id":
            raise errors.InvalidRequest(
                f"cannot sort by {name!r}; fields: {', '.join(sorted(LISTING_COLUMNS))}"
            )
        order.append((name, descending))
    limit = body.limit or max_page
    return equals, within, order, body.skip or 0, min(limit, max_page)


def page_response(body: PageRequest, page: api_tasks.Page, limit: int) -> Response:
    tasks = [convert.task_out(r) for r in page.records]
    model = TasksPage(
        data={t.uid: t for t in tasks},
        ids=[t.uid for t in tasks],
        skip=body.skip,
        limit=limit,
        max_results=page.total,
        sort=body.sort,
        view=body.view,
    )
    return Response(model.model_dump_json(), media_type=JSON)


def memory_info() -> MemoryInfo:
    """RSS, virtual size and data size of this process, as psutil (Eventix) reports them."""
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/self/statm") as f:
            size, resident, _shared, _text, _lib, data, *_ = (int(v) for v in f.read().split())
        return MemoryInfo(rss=resident * page, vms=size * page, data=data * page)
    except OSError:  # not Linux
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return MemoryInfo(rss=rss, vms=0, data=0)


# -- routes ----------------------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]
E404: Responses = {404: {"model": EventixError, "description": "No such task (NotFound)."}}
E409: Responses = {409: {"model": EventixError, "description": "Conflict (an Eventix error)."}}
E413: Responses = {413: {"model": HttpError, "description": "The body is over the size limit."}}
E422: Responses = {422: {"model": EventixError, "description": "Eventix's WrongTaskStatus."}}


def add_routes(app: FastAPI, ctx: ApiContext) -> None:
    limit = ctx.payload_limit

    @app.get("/healthz", tags=["default"], response_model=Health)
    async def healthz() -> Response:
        """Liveness: the process answers. Needs no token; does not touch the database."""
        return Response(b'{"status":"healthy"}', media_type=JSON)

    @app.get("/version", tags=["default"], response_model=Version)
    async def get_version() -> Version:
        return Version(version=package_version())

    @app.post("/task", tags=["task"], response_model=EventixTask, responses={**E409, **E413})
    async def post_task(task: EventixTaskIn) -> Response:
        """Schedule a task. With a ``unique_key`` that a pending task of the same
        namespace has, that task is updated instead (earliest eta, lowest priority,
        newest args and kwargs) and returned. A uid that exists is a 409."""
        item = convert.new_task(task)
        try:
            record = await ctx.db.insert_task(item, payload_limit=limit)
        except psycopg.IntegrityError as exc:
            raise _integrity(exc, item.uid, item.unique_key) from None
        return task_response(record)

    @app.get(
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
            api_tasks.tasks_by_unique_key,
            unique_key,
            namespace=None,
            stati=_stati(None),
        )
        if not found:
            raise errors.NoTaskFoundForUniqueKey(unique_key)
        if len(found) > 1:
            raise errors.TaskUniqueKeyNotUnique(unique_key)
        return task_response(found[0])

    @app.get(
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
            api_tasks.tasks_by_unique_key,
            unique_key,
            namespace=namespace,
            stati=_stati(stati),
            limit=1,
        )
        if not found:
            raise errors.NoTaskFoundForUniqueKey(unique_key, list(stati) if stati else None)
        return task_response(found[0])

    @app.delete("/task/by_unique_key/{unique_key}", tags=["task"], responses={**E404, **E409})
    async def delete_task_by_unique_key(unique_key: str) -> Response:
        """Delete the pending task with this unique key (as GET finds it)."""

        def delete(conn: Connection) -> None:
            found = api_tasks.tasks_by_unique_key(
                conn, unique_key, namespace=None, stati=_stati(None)
            )
            if not found:
                raise errors.NoTaskFoundForUniqueKey(unique_key)
            if len(found) > 1:
                raise errors.TaskUniqueKeyNotUnique(unique_key)
            api_tasks.delete_task(conn, found[0].uid)

        await ctx.run(delete)
        return null_response()

    @app.get("/task/{uid}", tags=["task"], response_model=EventixTask, responses=E404)
    async def get_task(uid: str) -> Response:
        record = await ctx.db.get_task(_uid_or_404(uid))
        if record is None:
            raise errors.NotFound(uid)
        return task_response(record)

    @app.put(
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
        its total retries and its own backoff."""
        if api_tasks.parse_uid(uid) is None:
            raise errors.InvalidRequest("uid must be a UUID (32 hex digits, as Eventix makes them)")
        write = convert.task_write(task, uid)
        revision = _revision(task.revision)
        try:
            outcome: TaskRecord | api_tasks.WriteConflict | None = None
            if revision is not None:
                outcome = await ctx.db.replace_task(write, revision=revision, payload_limit=limit)
            if outcome is None:  # stale revision, or no such task: decide in a transaction
                outcome = await ctx.run(
                    api_tasks.write_task, write, revision=None, payload_limit=limit
                )
        except (IntegrityError, psycopg.IntegrityError) as exc:
            raise _integrity(exc, write.uid, write.unique_key) from None
        if isinstance(outcome, api_tasks.WriteConflict):
            raise errors.RevisionConflict(str(outcome.current_revision))
        return task_response(outcome)

    @app.delete("/task/{uid}", tags=["task"], responses=E404)
    async def delete_task(uid: str) -> Response:
        if not await ctx.run(api_tasks.delete_task, _uid_or_404(uid)):
            raise errors.NotFound(uid)
        return null_response()

    @app.get(
        "/task/{uid}/reschedule",
        tags=["task"],
        response_model=EventixTask,
        responses={**E404, **E422, **E409},
    )
    async def reschedule_task(uid: str, eta: datetime | None = None) -> Response:
        """Make a failed or retrying task due again, at ``eta`` or now."""
        _uid_or_404(uid)
        if eta is not None:
            eta = eta.replace(tzinfo=UTC) if eta.tzinfo is None else eta.astimezone(UTC)

        def reschedule(conn: Connection) -> TaskRecord:
            record = api_tasks.reschedule_task(conn, uid, eta)
            if record is not None:
                return record
            current = task_db.get_task(conn, uid)
            if current is None:
                raise errors.NotFound(uid)
            raise errors.WrongTaskStatus(uid, convert.task_out(current).status or "")

        try:
            return task_response(await ctx.run(reschedule))
        except IntegrityError as exc:
            raise _integrity(exc, uid, None) from None

    @app.get(
        "/tasks/next_scheduled",
        tags=["tasks"],
        response_model=EventixTask,
        responses={204: {"description": "No task is due (NoTaskFound)."}},
    )
    async def next_scheduled(
        worker_id: Annotated[str, Query(min_length=1, max_length=1000)],
        namespace: Annotated[str, Query(min_length=1, max_length=1000)],
    ) -> Response:
        """Claim the next due task of the namespace for this worker, with a lease
        of ``EVENTIX_API_LEASE_SECONDS``; 204 when none is due. The same claim as
        native workers', so both can share a queue."""
        record = await ctx.db.claim_next(
            worker_id=worker_id,
            namespace=namespace,
            lease_seconds=ctx.settings.api_lease_seconds,
        )
        return no_content() if record is None else task_response(record)

    max_page = ctx.settings.api_max_page_size

    @app.put("/tasks/by_status", tags=["tasks"], response_model=TasksPage)
    async def tasks_by_status(body: TasksByStatusRequest | None = None) -> Response:
        """Tasks of a status and/or namespace, a page at a time."""
        body = body or TasksByStatusRequest()
        equals, within, order, skip, size = _listing(body, max_page)
        if body.status is not None:
            equals["status"] = body.status
            if body.status == "error":
                within["status"] = ["error", "cancelled"]
                del equals["status"]
        if body.namespace is not None:
            equals["namespace"] = body.namespace
        page = await ctx.run(
            api_tasks.tasks_page,
            equals=equals,
            within=within,
            order=order or [("created_time", False)],
            skip=skip,
            limit=size,
        )
        return page_response(body, page, size)

    @app.put("/tasks/by_task", tags=["tasks"], response_model=TasksPage)
    async def tasks_by_task(body: TasksByTaskRequest) -> Response:
        """Tasks of one task name, pending ones first, newest eta first (Eventix's order)."""
        equals, within, _order, skip, size = _listing(body, max_page)
        equals["task"] = body.task
        if body.namespace is not None:
            equals["namespace"] = body.namespace
        page = await ctx.run(
            api_tasks.tasks_page,
            equals=equals,
            within=within,
            order=[("status_id", False), ("eta", True)],
            skip=skip,
            limit=size,
        )
        return page_response(body, page, size)

    @app.put("/tasks/dump", tags=["tasks"], response_model=TasksPage)
    async def tasks_dump(body: PageRequest | None = None) -> Response:
        """Every task in uid order, a page at a time (Eventix's `eventix dump`)."""
        body = body or PageRequest()
        equals, within, _order, skip, size = _listing(body, max_page)
        page = await ctx.run(
            api_tasks.tasks_page,
            equals=equals,
            within=within,
            order=[("uid", False)],
            skip=skip,
            limit=size,
        )
        return page_response(body, page, size)

    @app.post("/event", tags=["event"], response_model=list[EventixTask], responses=E413)
    async def post_event(event: EventixEventIn) -> Response:
        """Run every trigger registered for the event's name and return the tasks
        they scheduled. A trigger that fails or ignores the event is logged and
        counted; the others still run."""
        context = event_context(event)
        code = ctx.code_triggers.get(context.name)
        results = (
            await anyio.to_thread.run_sync(run_code_triggers, code, event, context) if code else []
        )
        records = await fire_event(ctx.db, context, results, stats=ctx.stats, payload_limit=limit)
        body = b",".join(convert.task_out(r).model_dump_json().encode() for r in records)
        return Response(b"[" + body + b"]", media_type=JSON)

    @app.get("/metrics", tags=["metrics"], response_model=Metrics)
    async def metrics() -> Metrics:
        """Eventix's metrics JSON (not Prometheus text)."""

        def read(conn: Connection) -> tuple[dict[str, int], int]:
            return api_tasks.status_counts(conn), api_tasks.active_workers(conn)

        counts, workers = await ctx.run(read)
        tasks = {s: 0 for s in (*EVENTIX_STATUSES, "cancelled")} | counts
        return Metrics(
            memory=memory_info(),
            worker=WorkerInfo(number_of_worker=workers),
            tasks=tasks,
            triggers=ctx.stats.snapshot(),
        )

    @app.get("/namespaces", tags=["tasks"], response_model=NamespacesResponseModel)
    async def namespaces() -> NamespacesResponseModel:
        """Every namespace (queue) that has tasks."""
        return NamespacesResponseModel(namespaces=await ctx.run(api_tasks.namespaces))

    @app.get(
        "/namespace/{namespace}/task_types",
        tags=["tasks"],
        response_model=NamespaceTaskTypesResponseModel,
    )
    async def task_types(namespace: str) -> NamespaceTaskTypesResponseModel:
        """Task names that have tasks in the namespace."""
        return NamespaceTaskTypesResponseModel(
            task_types=await ctx.run(api_tasks.task_types, namespace)
        )


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.ApiError)
    async def api_error(request: Request, exc: errors.ApiError) -> Response:
        return exc.response()

    @app.exception_handler(PayloadTooLarge)
    async def too_large(request: Request, exc: PayloadTooLarge) -> Response:
        return errors.PayloadTooLarge(str(exc)).response()

    @app.exception_handler(DataError)
    @app.exception_handler(psycopg.DataError)
    async def data_error(request: Request, exc: Exception) -> Response:
        message = str(getattr(exc, "orig", exc)).splitlines()[0]
        return errors.InvalidRequest(f"the database cannot store this value: {message}").response()

    @app.exception_handler(TypeError)
    async def type_error(request: Request, exc: TypeError) -> Response:
        # dump_json's "… is not JSON-serialisable" (NaN, Infinity): the input's fault.
        if "JSON" in str(exc):
            return errors.InvalidRequest(str(exc)).response()
        return await internal_error(request, exc)

    for kind in DB_DOWN:

        @app.exception_handler(kind)
        async def database_down(request: Request, exc: Exception) -> Response:
            log.warning("database unavailable", path=request.url.path, error=str(exc)[:300])
            return errors.http_error(
                503,
                {"error_class": "DatabaseUnavailable", "error_message": "database unavailable"},
                {"retry-after": "1"},
            )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("request failed", path=request.url.path, method=request.method)
        detail = {
            "error_class": type(exc).__name__,
            "error_message": "internal server error (see the server log)",
            "error_traceback": "",
        }
        return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=500)


async def _maintenance(ctx: ApiContext) -> None:
    """Return tasks of vanished HTTP workers to the queue and remove expired
    results, as native workers do: a deployment may have only HTTP workers."""
    store = AsyncTaskStore(
        ctx.db.engine, f"api-{uuid.uuid4().hex[:8]}", ctx.settings.api_lease_seconds
    )
    while True:
        await asyncio.sleep(ctx.settings.api_maintenance_interval)
        try:
            recovered = await store.recover_expired_leases()
            purged = await store.purge_expired()
        except DB_DOWN as exc:
            log.warning("maintenance skipped, database unavailable", error=str(exc)[:300])
            continue
        if recovered or purged:
            log.info("maintenance", recovered=len(recovered), purged=purged)


async def _flush_trigger_stats(ctx: ApiContext) -> None:
    pending = ctx.stats.drain()
    if not pending:
        return
    try:
        await ctx.run(record_trigger_outcomes, pending)
    except DB_DOWN:
        ctx.stats.requeue(pending)


async def _trigger_stats_loop(ctx: ApiContext) -> None:
    while True:
        await asyncio.sleep(TRIGGER_STATS_INTERVAL)
        await _flush_trigger_stats(ctx)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI application; it connects to the database when it starts, not here.
    ``ValueError`` when the token settings forbid serving (see :func:`bearer_token`)."""
    settings = settings or get_settings()
    token = bearer_token(settings)
    ctx = ApiContext(settings=settings)
    api = settings
    if api.trigger_config_directory:
        ctx.code_triggers = load_code_triggers(api.trigger_config_directory)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.store = api_tasks.AsyncApiStore(api_tasks.make_autocommit_engine(settings))
        if api.api_gc_tuning:
            # Everything loaded so far lives as long as the process: keep the cyclic
            # collector from walking it again and again, and let it run less often
            # (a request allocates many short-lived objects, few of them cyclic).
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
        side = [asyncio.create_task(_trigger_stats_loop(ctx), name="eventix-trigger-stats")]
        if api.api_maintenance_interval > 0:
            side.append(asyncio.create_task(_maintenance(ctx), name="eventix-api-maintenance"))
        log.info(
            "api started",
            version=package_version(),
            auth=token is not None,
            code_triggers=sum(len(t) for t in ctx.code_triggers.values()),
        )
        if token is None:
            log.warning(
                "serving without authentication (EVENTIX_API_ALLOW_ANONYMOUS): anyone who "
                "reaches the API may read, rewrite and delete every task"
            )
        try:
            yield
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await _flush_trigger_stats(ctx)
            await ctx.db.engine.dispose()
            log.info("api stopped")

    app = FastAPI(
        title="Eventix-compatible REST API",
        summary="Eventix 3.5's HTTP routes on eventix-operator's PostgreSQL queue.",
        version=package_version(),
        lifespan=lifespan,
    )
    add_error_handlers(app)
    add_routes(app, ctx)
    app.add_middleware(Guard, token=token, max_body_bytes=ctx.max_body_bytes)
    app.openapi = _openapi(app, secured=token is not None)  # type: ignore[method-assign]
    app.state.ctx = ctx
    return app


def _openapi(app: FastAPI, *, secured: bool) -> Callable[[], dict[str, Any]]:
    """FastAPI's document, plus the bearer scheme when a token is configured."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        if secured:
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer"}
            }
            schema["security"] = [{"bearerAuth": []}]
            for path, operations in schema["paths"].items():
                for operation in operations.values():
                    operation.setdefault("responses", {})["401"] = {
                        "description": "Missing or wrong bearer token.",
                        "content": {JSON: {"schema": {"$ref": "#/components/schemas/HttpError"}}},
                    }
                    if path == "/healthz":
                        operation["security"] = []
                        del operation["responses"]["401"]
        app.openapi_schema = schema
        return schema

    return build


def app_from_environment() -> FastAPI:
    """Factory for uvicorn's worker processes, which read settings from the environment."""
    from eventix_operator.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
