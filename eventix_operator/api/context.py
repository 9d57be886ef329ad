"""What the REST API's routes share: the context of the running app, and the
ways they answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Concatenate, ParamSpec, TypeVar

from fastapi.responses import Response
from sqlalchemy import Connection

from eventix_operator.api import convert, errors
from eventix_operator.api.hotpath import HotPaths
from eventix_operator.api.models import EventixError, HttpError, hex_uid
from eventix_operator.api.triggers import CodeTrigger, TriggerStats
from eventix_operator.db.rows import TaskRecord, parse_uid
from eventix_operator.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

JSON = "application/json"

Responses = dict[int | str, dict[str, Any]]
E404: Responses = {404: {"model": EventixError, "description": "No such task (NotFound)."}}
E409: Responses = {409: {"model": EventixError, "description": "Conflict (an Eventix error)."}}
E413: Responses = {413: {"model": HttpError, "description": "The body is over the size limit."}}
E422: Responses = {422: {"model": EventixError, "description": "Eventix's WrongTaskStatus."}}


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
    store: HotPaths | None = None
    #: Whether this process traces (decided at start-up): requests then store the
    #: trace context they carry (``traceparent``) with the tasks they make.
    tracing: bool = False

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

    async def read(
        self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(connection, ...)``, a read that tolerates replication lag (listings,
        counts), in one transaction on ``EVENTIX_READ_DATABASE_URL`` when it is set."""
        return await self.db.read(fn, *args, **kwargs)

    @property
    def db(self) -> HotPaths:
        assert self.store is not None, "the API is not started"
        return self.store


def task_response(record: TaskRecord) -> Response:
    """A task as Eventix's clients read it, serialised once, straight from the row."""
    return Response(convert.task_out(record).model_dump_json(), media_type=JSON)


def no_content() -> Response:
    return Response(status_code=204)


def null_response() -> Response:
    return Response(b"null", media_type=JSON)


def uid_or_404(uid: str) -> str:
    if parse_uid(uid) is None:
        raise errors.NotFound(uid)
    return uid


def conflict(exc: Exception, uid: str | None, unique_key: str | None) -> errors.ApiError:
    """The Eventix error for a unique violation (from SQLAlchemy or from psycopg)."""
    orig = getattr(exc, "orig", exc)
    constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
    if constraint == "pk_eventix_task":
        return errors.AlreadyExists(hex_uid(uid) if uid else "")
    if constraint == "uq_eventix_task_pending_unique_key":
        return errors.TaskUniqueKeyNotUnique(unique_key or "")
    return errors.ApiError(str(orig).splitlines()[0])
