"""Listings: tasks by status, by task name, all of them (a page at a time), and
the names of queues and task types. Filters and sorts name whitelisted columns
(:data:`~eventix_operator.db.admin.LISTING_COLUMNS`); the query is built
by the data layer's one listing builder."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from eventix_operator.api import convert, errors
from eventix_operator.api.context import JSON, ApiContext
from eventix_operator.api.models import (
    NamespacesResponseModel,
    NamespaceTaskTypesResponseModel,
    PageRequest,
    TasksByStatusRequest,
    TasksByTaskRequest,
    TasksPage,
)
from eventix_operator.db import admin
from eventix_operator.db.rows import parse_uid


def listing(
    body: PageRequest, max_page: int
) -> tuple[dict[str, Any], dict[str, list[Any]], list[tuple[str, bool]], int, int]:
    """Eventix pagination parameters as filters, order, skip and limit (422 on
    what cannot be served)."""
    equals: dict[str, Any] = {}
    within: dict[str, list[Any]] = {}
    for name, value in (body.filter or {}).items():
        if name not in admin.LISTING_COLUMNS:
            raise errors.InvalidRequest(
                f"cannot filter on {name!r}; fields: {', '.join(sorted(admin.LISTING_COLUMNS))}"
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
            parsed = parse_uid(str(equals[name]))
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
        if name not in admin.LISTING_COLUMNS and name != "status_id":
            raise errors.InvalidRequest(
                f"cannot sort by {name!r}; fields: {', '.join(sorted(admin.LISTING_COLUMNS))}"
            )
        order.append((name, descending))
    limit = body.limit or max_page
    return equals, within, order, body.skip or 0, min(limit, max_page)


def page_response(body: PageRequest, found: admin.Page, limit: int) -> Response:
    tasks = [convert.task_out(r) for r in found.records]
    model = TasksPage(
        data={t.uid: t for t in tasks},
        ids=[t.uid for t in tasks],
        skip=body.skip,
        limit=limit,
        max_results=found.total,
        sort=body.sort,
        view=body.view,
    )
    return Response(model.model_dump_json(), media_type=JSON)


def router(ctx: ApiContext) -> APIRouter:
    routes = APIRouter()
    max_page = ctx.settings.api_max_page_size

    async def page(
        body: PageRequest,
        equals: dict[str, Any],
        within: dict[str, list[Any]],
        order: list[tuple[str, bool]],
        skip: int,
        size: int,
    ) -> Response:
        found = await ctx.read(
            admin.tasks_page, equals=equals, within=within, order=order, skip=skip, limit=size
        )
        return page_response(body, found, size)

    @routes.put("/tasks/by_status", tags=["tasks"], response_model=TasksPage)
    async def tasks_by_status(body: TasksByStatusRequest | None = None) -> Response:
        """Tasks of a status and/or namespace, a page at a time."""
        body = body or TasksByStatusRequest()
        equals, within, order, skip, size = listing(body, max_page)
        if body.status is not None:
            equals["status"] = body.status
            if body.status == "error":
                within["status"] = ["error", "cancelled"]
                del equals["status"]
        if body.namespace is not None:
            equals["namespace"] = body.namespace
        return await page(body, equals, within, order or [("created_time", False)], skip, size)

    @routes.put("/tasks/by_task", tags=["tasks"], response_model=TasksPage)
    async def tasks_by_task(body: TasksByTaskRequest) -> Response:
        """Tasks of one task name, pending ones first, newest eta first (Eventix's order)."""
        equals, within, _order, skip, size = listing(body, max_page)
        equals["task"] = body.task
        if body.namespace is not None:
            equals["namespace"] = body.namespace
        return await page(body, equals, within, [("status_id", False), ("eta", True)], skip, size)

    @routes.put("/tasks/dump", tags=["tasks"], response_model=TasksPage)
    async def tasks_dump(body: PageRequest | None = None) -> Response:
        """Every task in uid order, a page at a time (Eventix's `eventix dump`)."""
        body = body or PageRequest()
        equals, within, _order, skip, size = listing(body, max_page)
        return await page(body, equals, within, [("uid", False)], skip, size)

    @routes.get("/namespaces", tags=["tasks"], response_model=NamespacesResponseModel)
    async def namespaces() -> NamespacesResponseModel:
        """Every namespace (queue) that has tasks."""
        return NamespacesResponseModel(namespaces=await ctx.read(admin.namespaces))

    @routes.get(
        "/namespace/{namespace}/task_types",
        tags=["tasks"],
        response_model=NamespaceTaskTypesResponseModel,
    )
    async def task_types(namespace: str) -> NamespaceTaskTypesResponseModel:
        """Task names that have tasks in the namespace."""
        return NamespaceTaskTypesResponseModel(
            task_types=await ctx.read(admin.task_types, namespace)
        )

    return routes
