"""Request and response shapes of the REST API, field for field as Eventix 3.5 has them.

Eventix's clients send their whole pydantic documents (``TEventixTask``,
``TEventixEvent``, with the backend fields ``uid``, ``revision``, ``version``,
``created_time``, ``updated_time``) and read ours back with the same models, so
the names, types and defaults here are Eventix's. What Eventix left open we
close: unknown fields, values the database cannot hold (NUL characters, numbers
past 32 bits, negative retries) are a 422 naming the field, not a 500 later.
Times without a zone are UTC, as Eventix reads them; answers are always UTC.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

EventixStatus = Literal["scheduled", "processing", "done", "error", "retry"]
EVENTIX_STATUSES: tuple[str, ...] = ("scheduled", "processing", "done", "error", "retry")

INT32_MAX = 2**31 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (PostgreSQL text cannot hold them)")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Text = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(_no_nul)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=1000), AfterValidator(_no_nul)]
Utc = Annotated[datetime, AfterValidator(_utc)]


def hex_uid(value: str | uuid.UUID) -> str:
    """Eventix's spelling of a uid: 32 hex digits, no dashes."""
    return (value if isinstance(value, uuid.UUID) else uuid.UUID(value)).hex


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventixTaskIn(_Strict):
    """A task as an Eventix client sends it (``TEventixTask.model_dump()``)."""

    model_config = ConfigDict(extra="forbid", title="TEventixTask (request)")

    uid: str | None = Field(
        default=None, description="32 hex digits (a UUID). Absent: the server makes one."
    )
    revision: str | None = Field(
        default=None, description="The revision read; a write-back with another one is a 409."
    )
    version: int | None = 1
    created_time: Utc | None = None
    updated_time: Utc | None = None
    unique_key: Text | None = None
    eta: Utc | None = Field(default=None, description="Due time. Absent: now.")
    scheduled: Utc | None = None
    status: EventixStatus | None = "scheduled"
    priority: Int32 | None = Field(default=0, description="Lower runs first.")
    namespace: Name | None = Field(default="default", description="The queue.")
    task: Name
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    worker_id: Text | None = None
    worker_expires: Utc | None = None
    retry: bool = True
    max_retries: Count | None = Field(
        default=None, description="Retries left (Eventix counts down). Absent: forever."
    )
    error_eta_inc: Count = Field(default=15, description="Seconds before the next retry.")
    error_eta_max: Count = 300
    store_result: bool = True
    result: Any = None
    error_expires: Count | None = None
    result_expires: Count | None = 604_800
    expires: Utc | None = None
    operator: Text | None = "unknown"

    @field_validator("uid")
    @classmethod
    def _uid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return hex_uid(value)
        except ValueError:
            raise ValueError(
                "uid must be a UUID: 32 hex digits as Eventix makes them (dashes allowed)"
            ) from None


class EventixTask(BaseModel):  # type: ignore[no-redef]  # plugin: field `kwargs` vs **kwargs
    """A task as Eventix clients read it (``TEventixTask``)."""

    model_config = ConfigDict(title="TEventixTask")

    uid: str
    revision: str | None = None
    version: int | None = 1
    created_time: datetime | None = None
    updated_time: datetime | None = None
    unique_key: str | None = None
    eta: datetime | None = None
    scheduled: datetime | None = None
    status: EventixStatus | None = "scheduled"
    priority: int | None = 0
    namespace: str | None = "default"
    task: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    worker_id: str | None = None
    worker_expires: datetime | None = None
    retry: bool = True
    max_retries: int | None = Field(default=None, description="Retries left.")
    error_eta_inc: int = Field(
        default=15, description="Seconds the next failure waits before its retry."
    )
    error_eta_max: int = 300
    store_result: bool = True
    result: Any = Field(
        default=None,
        description="The return value; for a failed or retrying task, Eventix's error "
        "document (error_class, error_message, error_status_code, error_traceback, "
        "error_payload).",
    )
    error_expires: int | None = None
    result_expires: int | None = 604_800
    expires: datetime | None = None
    operator: str | None = "unknown"


class EventixEventIn(_Strict):
    """An event as an Eventix client posts it (``TEventixEvent.model_dump()``).

    The methods are those Eventix trigger code calls on the event it receives.
    """

    model_config = ConfigDict(extra="forbid", title="TEventixEvent")

    uid: str | None = None
    revision: str | None = None
    version: int | None = 1
    created_time: Utc | None = None
    updated_time: Utc | None = None
    namespace: Name | None = "default"
    timestamp: Utc | None = None
    priority: Int32 | None = 0
    payload: dict[str, Any] | None = None
    name: Name | None = Field(
        default=None, description="The event name triggers listen to. Absent: TEventixEvent."
    )
    operator: Text | None = "unknown"

    def payload_object(self, model: type[BaseModel]) -> BaseModel:
        return model.model_validate(self.payload or {})

    def payload_dict(self) -> dict[str, Any]:
        return dict(self.payload or {})


class PageRequest(_Strict):
    """Eventix's pagination parameters (``skip``, ``limit``, ``sort``, ``view``, ``filter``)."""

    skip: Count | None = None
    limit: Count | None = Field(
        default=None, description="Page size; absent or 0: the server's largest page."
    )
    sort: Text | None = Field(
        default=None,
        description='Comma-separated field names, "-" for descending: "priority,-eta".',
    )
    view: Text | None = Field(default=None, description="Accepted for compatibility; unused.")
    filter: dict[str, Any] | None = Field(
        default=None,
        description='Equality on task fields, or {"field": {"$in": [...]}}.',
    )


class TasksByStatusRequest(PageRequest):
    status: EventixStatus | None = None
    namespace: Name | None = None


class TasksByTaskRequest(PageRequest):
    task: Name
    namespace: Name | None = None


class TasksPage(BaseModel):
    """Eventix's ``PaginationResponseModel``: tasks by uid, and the uids in order."""

    data: dict[str, EventixTask] = Field(default_factory=dict)
    skip: int | None = None
    limit: int | None = None
    max_results: int | None = None
    sort: str | None = None
    view: str | None = None
    ids: list[str] = Field(default_factory=list)


class EventixError(BaseModel):
    """Eventix's error body (``WebException.dict()``); clients map ``error_class``."""

    error_class: str
    error_message: str
    error_status_code: int
    error_traceback: str = ""
    error_payload: dict[str, Any] = Field(default_factory=dict)


class HttpError(BaseModel):
    """FastAPI's error body: authentication, size limits, unavailable database."""

    detail: Any


class Health(BaseModel):
    status: str = "healthy"


class Version(BaseModel):
    version: str


class NamespacesResponseModel(BaseModel):
    namespaces: list[str]


class NamespaceTaskTypesResponseModel(BaseModel):
    task_types: list[str]


class MemoryInfo(BaseModel):
    rss: int
    vms: int
    data: int


class WorkerInfo(BaseModel):
    number_of_worker: int = Field(description="Workers holding a live lease now.")


class Metrics(BaseModel):
    """Eventix's ``/metrics`` JSON, with real numbers: memory of this process,
    workers with live leases, tasks per status over all queues, and what the
    triggers of this process did since it started."""

    memory: MemoryInfo
    worker: WorkerInfo
    tasks: dict[str, int]
    triggers: dict[str, dict[str, int]] = Field(default_factory=dict)
