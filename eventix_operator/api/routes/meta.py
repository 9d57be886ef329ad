"""Liveness, version and Eventix's metrics JSON."""

from __future__ import annotations

import os
import resource

from fastapi import APIRouter
from fastapi.responses import Response
from sqlalchemy import Connection

from eventix_operator.api.context import JSON, ApiContext, package_version
from eventix_operator.api.models import (
    EVENTIX_STATUSES,
    Health,
    MemoryInfo,
    Metrics,
    Version,
    WorkerInfo,
)
from eventix_operator.db import admin


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


def router(ctx: ApiContext) -> APIRouter:
    routes = APIRouter()

    @routes.get("/healthz", tags=["default"], response_model=Health)
    async def healthz() -> Response:
        """Liveness: the process answers. Needs no token; does not touch the database."""
        return Response(b'{"status":"healthy"}', media_type=JSON)

    @routes.get("/version", tags=["default"], response_model=Version)
    async def get_version() -> Version:
        return Version(version=package_version())

    @routes.get("/metrics", tags=["metrics"], response_model=Metrics)
    async def metrics() -> Metrics:
        """Eventix's metrics JSON (not Prometheus text)."""

        def read(conn: Connection) -> tuple[dict[str, int], int]:
            return admin.status_counts(conn), admin.active_workers(conn)

        counts, workers = await ctx.read(read)
        tasks = {s: 0 for s in (*EVENTIX_STATUSES, "cancelled")} | counts
        return Metrics(
            memory=memory_info(),
            worker=WorkerInfo(number_of_worker=workers),
            tasks=tasks,
            triggers=ctx.stats.snapshot(),
        )

    return routes
