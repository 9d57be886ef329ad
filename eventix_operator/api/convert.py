"""Between Eventix's task document and our row.

Where the two models differ, the row keeps the queue's meaning and Eventix's
clients see Eventix's:

- Retries. Eventix counts ``max_retries`` down on every retry and doubles
  ``error_eta_inc``; the row keeps both fixed and counts ``attempts`` up. A task
  is shown with the retries it has left and with the increment its next failure
  will wait, which is what an Eventix worker then writes back: so its retry
  lands when a native worker's would, and the totals survive the round trip.
- Errors. Eventix keeps a failure's document in ``result``; the row keeps it in
  ``error`` (native tools read it there), with Eventix's document alongside so
  that it reads back unchanged. Native failures are shown as Eventix documents.
- ``cancelled`` (ours only) is shown as ``error``: Eventix clients reject
  statuses they do not know.
- uids are shown as 32 hex digits, as Eventix makes them; both spellings are
  accepted on the way in.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, cast

from eventix_operator.api.models import EventixStatus, EventixTask, EventixTaskIn
from eventix_operator.db.enqueue import NewTask
from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.writeback import TaskWrite


def eventix_error(error: dict[str, Any]) -> Any:
    """The Eventix document of a stored error."""
    if "eventix" in error:
        return error["eventix"]
    return {
        "error_class": error.get("type", "Error"),
        "error_message": error.get("message", ""),
        "error_status_code": 500,
        "error_traceback": error.get("traceback", ""),
        "error_payload": {},
    }


def native_error(document: Any) -> dict[str, Any]:
    """A stored error from an Eventix error document (or whatever a worker sent)."""
    if isinstance(document, dict) and "error_class" in document:
        trace = document.get("error_traceback", "")
        return {
            "type": str(document["error_class"]),
            "message": str(document.get("error_message", "")),
            "traceback": "".join(map(str, trace)) if isinstance(trace, list) else str(trace),
            "eventix": document,
        }
    text = document if isinstance(document, str) else json.dumps(document, default=str)
    return {"type": "Error", "message": text[:2000], "eventix": document}


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def task_out(record: TaskRecord) -> EventixTask:
    """The Eventix document of a row. Built without validation: the row is ours."""
    if record.result is not None:
        result = record.result
    elif record.error is not None:
        result = eventix_error(record.error)
    else:
        result = None
    return EventixTask.model_construct(
        uid=uuid.UUID(record.uid).hex,
        revision=str(record.revision),
        version=1,
        created_time=_utc(record.created_at),
        updated_time=_utc(record.updated_at),
        unique_key=record.unique_key,
        eta=_utc(record.eta),
        scheduled=_utc(record.scheduled),
        status=cast(EventixStatus, "error" if record.status == "cancelled" else record.status),
        priority=record.priority,
        namespace=record.namespace,
        task=record.task,
        args=record.args,
        kwargs=record.kwargs,
        worker_id=record.worker_id,
        worker_expires=_utc(record.worker_expires),
        retry=record.retry,
        max_retries=record.policy.remaining(record.status, record.attempts),
        error_eta_inc=record.policy.next_wait(record.status, record.attempts),
        error_eta_max=record.error_eta_max,
        store_result=record.store_result,
        result=result,
        error_expires=record.error_expires,
        result_expires=record.result_expires,
        expires=_utc(record.expires),
        operator=record.operator,
    )


def is_error_document(value: Any) -> bool:
    return isinstance(value, dict) and "error_class" in value


def task_write(body: EventixTaskIn, uid: str) -> TaskWrite:
    """A write-back as the row will take it."""
    status = body.status or "scheduled"
    failed = status in ("retry", "error") or (status != "done" and is_error_document(body.result))
    return TaskWrite(
        uid=str(uuid.UUID(uid)),
        task=body.task,
        namespace=body.namespace or "default",
        status=status,
        priority=body.priority or 0,
        eta=body.eta or datetime.now(UTC),
        scheduled=body.scheduled,
        args=body.args or [],
        kwargs=body.kwargs or {},
        unique_key=body.unique_key,
        worker_id=body.worker_id,
        worker_expires=body.worker_expires,
        retry=body.retry,
        remaining_retries=body.max_retries,
        error_eta_inc=body.error_eta_inc,
        error_eta_max=body.error_eta_max,
        store_result=body.store_result,
        result=None if failed else body.result,
        error=native_error(body.result) if failed and body.result is not None else None,
        result_expires=body.result_expires,
        error_expires=body.error_expires,
        expires=body.expires,
        operator=body.operator,
    )


def new_task(body: EventixTaskIn, *, source: str = "api") -> NewTask:
    """What ``POST /task`` enqueues: Eventix's posted document becomes a pending
    task (status, result and worker fields of a new task mean nothing yet)."""
    return NewTask(
        task=body.task,
        args=tuple(body.args or ()),
        kwargs=dict(body.kwargs or {}),
        queue=body.namespace or "default",
        priority=body.priority or 0,
        eta=body.eta,
        unique_key=body.unique_key,
        retry=body.retry,
        max_retries=body.max_retries,
        backoff_seconds=body.error_eta_inc,
        max_backoff_seconds=body.error_eta_max,
        store_result=body.store_result,
        result_expires=body.result_expires,
        error_expires=body.error_expires,
        operator=body.operator,
        source=source,
        uid=str(uuid.UUID(body.uid)) if body.uid else str(uuid.uuid4()),
    )
