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
:mod:`~eventix_operator.api.hotpath`); the rest run as one transaction each.
Answers are serialised once, straight from the row. The routes are in
:mod:`~eventix_operator.api.routes`, one router per resource; here is the
application and what runs beside the requests (lease recovery, trigger counters,
the dashboard's throughput roll-up). The web dashboard (:mod:`~eventix_operator.api.ui`)
is served under ``/ui`` by the same app; ``dashboard_only`` serves it without the
REST routes (``eventix dashboard``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse, Response

from eventix_operator.api.context import JSON, ApiContext, package_version
from eventix_operator.api.errors import add_error_handlers
from eventix_operator.api.guard import Guard, bearer_token
from eventix_operator.api.hotpath import HotPaths, make_autocommit_engine
from eventix_operator.api.routes import add_routes, meta
from eventix_operator.api.triggers import load_code_triggers
from eventix_operator.api.ui import add_ui
from eventix_operator.api.ui.auth import PageHeaders
from eventix_operator.db import dashboard, leases
from eventix_operator.db.errors import log_failure
from eventix_operator.db.triggers import record_trigger_outcomes
from eventix_operator.logs import get_logger
from eventix_operator.settings import Settings, get_settings
from eventix_operator.tracing import enabled as tracing_enabled

log = get_logger("eventix.api")

#: Seconds between writes of table triggers' counters.
TRIGGER_STATS_INTERVAL = 1.0
#: Seconds between roll-ups of the dashboard's throughput (a minute's count is
#: written once the minute has closed; with several API processes one does it).
ROLL_UP_INTERVAL = 20.0


async def _maintenance(ctx: ApiContext) -> None:
    """Return tasks of vanished HTTP workers to the queue and remove expired
    results, as native workers do: a deployment may have only HTTP workers."""
    while True:
        await asyncio.sleep(ctx.settings.api_maintenance_interval)
        try:
            recovered = await leases.recover_expired_leases(ctx.db.engine)
            purged = await leases.purge_expired(ctx.db.engine)
        except Exception as exc:
            log_failure(log, "maintenance skipped", exc)
            continue
        if recovered or purged:
            log.info("maintenance", recovered=len(recovered), purged=purged)


async def _flush_trigger_stats(ctx: ApiContext) -> None:
    pending = ctx.stats.drain()
    if not pending:
        return
    try:
        await ctx.run(record_trigger_outcomes, pending)
    except Exception as exc:
        if log_failure(log, "trigger counters not written", exc):
            ctx.stats.requeue(pending)  # written with the next ones


async def _trigger_stats_loop(ctx: ApiContext) -> None:
    while True:
        await asyncio.sleep(TRIGGER_STATS_INTERVAL)
        await _flush_trigger_stats(ctx)


async def _roll_up_loop(ctx: ApiContext) -> None:
    """Count the tasks finished in each closed minute for the dashboard's throughput
    chart: a statement per ten minutes until caught up, then one every interval."""
    while True:
        try:
            while await ctx.run(dashboard.roll_up_throughput):
                pass
        except Exception as exc:
            log_failure(log, "throughput roll-up skipped", exc)
        await asyncio.sleep(ROLL_UP_INTERVAL)


def create_app(settings: Settings | None = None, *, dashboard_only: bool = False) -> FastAPI:
    """The ASGI application; it connects to the database when it starts, not here.
    ``dashboard_only``: the dashboard and ``/healthz``, without the REST routes.
    ``ValueError`` when the token settings forbid serving (see :func:`bearer_token`)."""
    settings = settings or get_settings()
    token = bearer_token(settings)
    ctx = ApiContext(settings=settings)
    api = settings
    if api.trigger_config_directory:
        ctx.code_triggers = load_code_triggers(api.trigger_config_directory)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        read_url = settings.read_url()
        ctx.store = HotPaths(
            make_autocommit_engine(settings),
            payload_limit=ctx.payload_limit,
            read_engine=make_autocommit_engine(settings, read_url) if read_url else None,
        )
        ctx.tracing = tracing_enabled()  # here, in the serving process, after any fork
        if api.api_gc_tuning:
            # Everything loaded so far lives as long as the process: keep the cyclic
            # collector from walking it again and again, and let it run less often
            # (a request allocates many short-lived objects, few of them cyclic).
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
        side = [asyncio.create_task(_roll_up_loop(ctx), name="eventix-throughput-roll-up")]
        if not dashboard_only:
            side.append(asyncio.create_task(_trigger_stats_loop(ctx), name="eventix-trigger-stats"))
        if api.api_maintenance_interval > 0 and not dashboard_only:
            side.append(asyncio.create_task(_maintenance(ctx), name="eventix-api-maintenance"))
        log.info(
            "dashboard started" if dashboard_only else "api started",
            version=package_version(),
            auth=token is not None,
            ui_read_only=api.ui_read_only,
            tracing=ctx.tracing,
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
            if ctx.db.read_engine is not ctx.db.engine:
                await ctx.db.read_engine.dispose()
            await ctx.db.engine.dispose()
            log.info("api stopped")

    app = FastAPI(
        title="Eventix-compatible REST API",
        summary="Eventix 3.5's HTTP routes on eventix-operator's PostgreSQL queue.",
        version=package_version(),
        lifespan=lifespan,
    )
    add_error_handlers(app)
    if dashboard_only:
        app.include_router(meta.router(ctx))
    else:
        add_routes(app, ctx)
    add_ui(app, ctx, token=token)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/ui/", status_code=307)

    app.add_middleware(Guard, token=token, max_body_bytes=ctx.max_body_bytes)
    app.add_middleware(PageHeaders)
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


def dashboard_from_environment() -> FastAPI:
    """:func:`app_from_environment` for ``eventix dashboard --workers N``."""
    from eventix_operator.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, dashboard_only=True)
