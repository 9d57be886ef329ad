"""Queue settings over HTTP (issue #15): list, read, replace, pause, resume.

Not an Eventix route (Eventix queues have no settings); the names and shapes are
those of the EventixQueue resource's spec and status, camelCase. Behind the same
bearer token as every other route (:mod:`eventix_operator.api.guard`).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from eventix_operator.api.context import ApiContext
from eventix_operator.db import queues


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    count: int = Field(ge=1, description="Starts allowed per period, across all workers.")
    per_seconds: float = Field(gt=0, alias="perSeconds", description="The period, in seconds.")


class Retention(BaseModel):
    model_config = ConfigDict(extra="forbid")

    succeeded: int | None = Field(None, ge=0, description="Seconds a succeeded task is kept.")
    failed: int | None = Field(None, ge=0, description="Seconds a failed task is kept.")


class QueueSpec(BaseModel):
    """A queue's settings; a field left out is cleared (PUT replaces them all)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    paused: bool = False
    concurrency_limit: int | None = Field(None, ge=1, alias="concurrencyLimit")
    rate_limit: RateLimit | None = Field(None, alias="rateLimit")
    retention: Retention | None = None


class QueueOut(QueueSpec):
    name: str
    due: int
    running: int
    oldest_due_age_seconds: float | None = Field(alias="oldestDueAgeSeconds")
    configured_by: str | None = Field(
        alias="configuredBy", description="The EventixQueue resource (namespace/name), if one."
    )
    updated_at: datetime = Field(alias="updatedAt")


def queue_out(q: queues.Queue) -> QueueOut:
    rate = (
        None
        if q.rate_count is None or q.rate_per_seconds is None
        else RateLimit(count=q.rate_count, per_seconds=q.rate_per_seconds)
    )
    kept = q.retain_succeeded_seconds, q.retain_failed_seconds
    return QueueOut(
        name=q.name,
        paused=q.paused,
        concurrency_limit=q.concurrency_limit,
        rate_limit=rate,
        retention=None if kept == (None, None) else Retention(succeeded=kept[0], failed=kept[1]),
        due=q.due,
        running=q.running,
        oldest_due_age_seconds=q.oldest_due_seconds,
        configured_by=f"{q.k8s_namespace}/{q.k8s_name}" if q.k8s_name else None,
        updated_at=q.updated_at,
    )


def settings_of(spec: QueueSpec) -> queues.QueueSettings:
    rate, kept = spec.rate_limit, spec.retention or Retention()
    return queues.everything(
        paused=spec.paused,
        concurrency_limit=spec.concurrency_limit,
        rate_count=rate.count if rate else None,
        rate_per_seconds=rate.per_seconds if rate else None,
        retain_succeeded_seconds=kept.succeeded,
        retain_failed_seconds=kept.failed,
    )


def router(ctx: ApiContext) -> APIRouter:
    routes = APIRouter(tags=["queues"])

    def one(conn: Connection, name: str) -> QueueOut:
        found = queues.get_queue(conn, name)
        if found is None:
            raise HTTPException(404, f"queue {name} has no settings")
        return queue_out(found)

    @routes.get("/queues", response_model=list[QueueOut], response_model_by_alias=True)
    async def list_queues() -> list[QueueOut]:
        """Queues that have settings, with their due and running tasks."""
        return [queue_out(q) for q in await ctx.read(queues.list_queues)]

    @routes.get("/queues/{name}", response_model=QueueOut, response_model_by_alias=True)
    async def get_queue(name: str) -> QueueOut:
        return await ctx.read(one, name)

    @routes.put("/queues/{name}", response_model=QueueOut, response_model_by_alias=True)
    async def put_queue(name: str, spec: QueueSpec) -> QueueOut:
        """Replace the queue's settings (a field left out is cleared)."""

        def write(conn: Connection) -> QueueOut:
            queues.set_queue(conn, name, settings_of(spec))
            return one(conn, name)

        return await ctx.run(write)

    @routes.post("/queues/{name}/pause", response_model=QueueOut, response_model_by_alias=True)
    async def pause_queue(name: str) -> QueueOut:
        """Stop claims of the queue at once (a claim in flight may finish)."""

        def write(conn: Connection) -> QueueOut:
            queues.pause(conn, name)
            return one(conn, name)

        return await ctx.run(write)

    @routes.post("/queues/{name}/resume", response_model=QueueOut, response_model_by_alias=True)
    async def resume_queue(name: str) -> QueueOut:
        """Let the queue be claimed again; its workers are woken."""

        def write(conn: Connection) -> QueueOut:
            queues.resume(conn, name)
            return one(conn, name)

        return await ctx.run(write)

    return routes
