"""The routes of the REST API, one router per resource, each made for one app's
context (a closure, not a dependency: nothing to resolve per request)."""

from __future__ import annotations

from fastapi import FastAPI

from eventix_operator.api.context import ApiContext
from eventix_operator.api.routes import events, listings, meta, queues, tasks, workers


def add_routes(app: FastAPI, ctx: ApiContext) -> None:
    for module in (meta, tasks, workers, listings, events, queues):
        app.include_router(module.router(ctx))
