"""``POST /event``: code triggers (in a thread), then the table's triggers."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response

from eventix_operator.api import convert
from eventix_operator.api.context import E413, JSON, ApiContext
from eventix_operator.api.events import fire_event
from eventix_operator.api.models import EventixEventIn, EventixTask
from eventix_operator.api.triggers import event_context, run_code_triggers
from eventix_operator.tracing import from_headers


def router(ctx: ApiContext) -> APIRouter:
    routes = APIRouter()

    @routes.post("/event", tags=["event"], response_model=list[EventixTask], responses=E413)
    async def post_event(event: EventixEventIn, request: Request) -> Response:
        """Run every trigger registered for the event's name and return the tasks
        they scheduled. A trigger that fails or ignores the event is logged and
        counted; the others still run. A ``traceparent`` header is the parent of
        those tasks' attempts' spans (when the server traces)."""
        context = event_context(event)
        code = ctx.code_triggers.get(context.name)
        results = (
            await anyio.to_thread.run_sync(run_code_triggers, code, event, context) if code else []
        )
        trace_context = from_headers(request.headers) if ctx.tracing else None
        records = await fire_event(
            ctx.db, context, results, stats=ctx.stats, trace_context=trace_context
        )
        body = b",".join(convert.task_out(r).model_dump_json().encode() for r in records)
        return Response(b"[" + body + b"]", media_type=JSON)

    return routes
