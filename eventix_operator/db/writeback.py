"""Write-back by revision: how Eventix's HTTP workers (and clients) record a task.

An Eventix worker claims a task (:func:`~.leases.claim_slots`), runs it and
``PUT``s the whole document back; the write replaces the row only while its
revision is the one the writer read (:func:`replace_batch`), and otherwise either
creates the task, as Eventix's backend does for a uid it does not know, or
loses with the revision it lost against (:func:`write_task`).

A write-back that carries an outcome (done, retry, error) is a worker's last
word on its task: if its result or arguments cannot be stored, the task ends
``error`` saying why instead, so that it neither stays ``processing`` until its
lease runs out nor runs again for the same outcome. Any other write with such
values is refused (the API answers 422 or 413). Error documents are cleaned
(see :func:`~.payload.dump_error`), never refused.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from eventix_operator.db import statements
from eventix_operator.db.errors import first_line, isolate
from eventix_operator.db.payload import NotStorable, PayloadTooLarge, dump_error, dump_json
from eventix_operator.db.rows import Fetch, TaskRecord

#: Statuses in which a write-back reports what became of a run.
OUTCOME_STATUSES = frozenset({"done", "retry", "error"})


@dataclass(frozen=True, slots=True)
class TaskWrite:
    """A whole task as an Eventix client writes it back (``PUT /task/{uid}``).

    ``remaining_retries`` is Eventix's count-down ``max_retries``; ``result`` and
    ``error`` are already split (the API knows which one an Eventix document meant).
    ``error_eta_inc`` only applies to a task created by the write.
    """

    uid: str
    task: str
    namespace: str
    status: str
    priority: int
    eta: datetime
    scheduled: datetime | None
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    unique_key: str | None
    worker_id: str | None
    worker_expires: datetime | None
    retry: bool
    remaining_retries: int | None
    error_eta_inc: int
    error_eta_max: int
    store_result: bool
    result: Any
    error: Mapping[str, Any] | None
    result_expires: int | None
    error_expires: int | None
    expires: datetime | None
    operator: str | None


@dataclass(frozen=True, slots=True)
class WriteConflict:
    """The write lost: the task changed since the writer read it."""

    current_revision: int


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A write-back checked once, with its statement parameters (JSON encoded).
    ``refusal`` says why it was turned into an error, if it was."""

    write: TaskWrite
    params: dict[str, Any]
    refusal: str | None = None


def prepare(write: TaskWrite, payload_limit: int) -> PreparedWrite:
    """Check and encode a write-back; see the module's docstring for what
    happens to values the database cannot hold."""
    try:
        return PreparedWrite(write, _params(write, payload_limit))
    except (NotStorable, PayloadTooLarge) as exc:
        if write.status not in OUTCOME_STATUSES:
            raise
        return stored_as_error(write, str(exc), payload_limit)


def stored_as_error(write: TaskWrite, reason: str, payload_limit: int) -> PreparedWrite:
    """``write`` as a final failure that says why its outcome could not be stored.
    Its args and kwargs are kept when they can be, else the row keeps its own."""
    now = datetime.now(UTC)
    failed = replace(
        write,
        status="error",
        result=None,
        error={"type": "ResultNotStorable", "message": reason},
        expires=None
        if write.error_expires is None
        else now + timedelta(seconds=write.error_expires),
    )
    params = _params(failed, payload_limit, keep_refused_arguments=True)
    return PreparedWrite(failed, params, reason)


def _params(
    write: TaskWrite, payload_limit: int, *, keep_refused_arguments: bool = False
) -> dict[str, Any]:
    name = write.task
    arguments: dict[str, str | None] = {}
    for root, value in (("args", list(write.args)), ("kwargs", dict(write.kwargs))):
        try:
            arguments[root] = dump_json(
                value, what=f"{root} of {name}", root=root, limit=payload_limit
            )
        except (NotStorable, PayloadTooLarge):
            if not keep_refused_arguments:
                raise
            arguments[root] = None  # the row keeps its own
    result = (
        None
        if write.result is None
        else dump_json(
            write.result, what=f"the result of {name}", root="result", limit=payload_limit
        )
    )
    return {
        "uid": write.uid,
        "task": write.task,
        "namespace": write.namespace,
        "status": write.status,
        "priority": write.priority,
        "eta": write.eta,
        "scheduled": write.scheduled,
        "args": arguments["args"],
        "kwargs": arguments["kwargs"],
        "unique_key": write.unique_key,
        "worker_id": write.worker_id,
        "worker_expires": write.worker_expires,
        "retry": write.retry,
        "remaining_retries": write.remaining_retries,
        "error_eta_inc": write.error_eta_inc,
        "error_eta_max": write.error_eta_max,
        "store_result": write.store_result,
        "result": result,
        "error": None if write.error is None else dump_error(dict(write.error)),
        "result_expires": write.result_expires,
        "error_expires": write.error_expires,
        "expires": write.expires,
        "operator": write.operator,
    }


async def replace_batch(
    fetch: Fetch, writes: Sequence[tuple[PreparedWrite, int]], *, payload_limit: int
) -> list[TaskRecord | Exception | None]:
    """Apply write-backs whose revision (the ``int``) still matches, in as few
    statements as their uids allow; per write: the new row, None when its
    revision did not match (or the task is gone; :func:`write_task` decides),
    or the exception the database refused it with.

    A second write to the same task waits for the next round: one UPDATE cannot
    apply both, and the later one must see the first's revision to lose against it.
    """
    outcomes: dict[int, TaskRecord | Exception | None] = {}
    remaining = list(enumerate(writes))
    while remaining:
        seen: set[str] = set()
        round_: list[tuple[int, tuple[PreparedWrite, int]]] = []
        later: list[tuple[int, tuple[PreparedWrite, int]]] = []
        for i, item in remaining:
            (later if item[0].write.uid in seen else round_).append((i, item))
            seen.add(item[0].write.uid)
        remaining = later
        results = await isolate(functools.partial(_replace, fetch), [w for _, w in round_])
        for (i, (prepared, revision)), result in zip(round_, results, strict=True):
            if (
                isinstance(result, Exception)
                and prepared.refusal is None
                and prepared.write.status in OUTCOME_STATUSES
            ):
                reason = f"the database refused this write-back: {first_line(result)}"
                failed = stored_as_error(prepared.write, reason, payload_limit)
                [result] = await isolate(functools.partial(_replace, fetch), [(failed, revision)])
            outcomes[i] = result
    return [outcomes[i] for i in range(len(writes))]


async def _replace(fetch: Fetch, batch: list[tuple[PreparedWrite, int]]) -> list[TaskRecord | None]:
    params: dict[str, list[Any]] = {name: [] for name in statements.REPLACE_COLUMNS}
    for prepared, revision in batch:
        for name in statements.REPLACE_COLUMNS:
            params[name].append(revision if name == "revision" else prepared.params[name])
    by_uid = {
        record.uid: record
        for record in map(TaskRecord.from_row, await fetch(statements.REPLACE_TASKS, params))
    }
    return [by_uid.get(prepared.write.uid) for prepared, _ in batch]


def write_task(conn: Connection, prepared: PreparedWrite) -> TaskRecord | WriteConflict:
    """The write-back whose revision did not match: create the task when it does
    not exist (as Eventix's backend does), else the revision it lost against."""
    current = conn.execute(statements.TASK_REVISION, {"uid": prepared.write.uid}).scalar()
    if current is not None:
        return WriteConflict(int(current))
    return TaskRecord.from_row(conn.execute(statements.INSERT_TASK_ROW, prepared.params).one())
