"""What Eventix's HTTP workers call to get work: the claim. (They write back with
``PUT /task/{uid}``, a route of :mod:`.tasks`.)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from eventix_operator.api.context import ApiContext, no_content, task_response
from eventix_operator.api.models import EventixTask


def router(ctx: ApiContext) -> APIRouter:
    routes = APIRouter()

    @routes.get(
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

    return routes
