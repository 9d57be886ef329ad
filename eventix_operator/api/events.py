"""``POST /event``: every trigger of the event's name makes its task, in one transaction.

Code triggers have already run (in a thread) when this starts; here the table's
triggers are read, their templates rendered, and all the tasks enqueued with the
queue's own unique-key merge. A trigger whose task cannot be made or stored
counts as failed and is logged; the others' tasks are still enqueued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from eventix_operator.api.triggers import CodeResult, TriggerStats
from eventix_operator.db.api_tasks import get_tasks
from eventix_operator.db.tasks import (
    NewTask,
    PayloadTooLarge,
    TaskRecord,
    insert_params,
    insert_tasks,
)
from eventix_operator.db.triggers import (
    EventContext,
    TemplateError,
    TriggerOutcome,
    list_triggers_for_event,
    trigger_task,
)
from eventix_operator.logs import get_logger

log = get_logger("eventix.api.events")


@dataclass(frozen=True, slots=True)
class _Made:
    """A task a trigger made; ``row_uid`` says which table trigger, if any, to credit."""

    label: str
    task: NewTask
    row_uid: str | None


def fire_event(
    conn: Connection,
    event: EventContext,
    code_results: Sequence[CodeResult],
    *,
    stats: TriggerStats,
    payload_limit: int,
) -> list[TaskRecord]:
    """Enqueue the tasks of code triggers and of the table's triggers for ``event``;
    returns them (a task merged into a pending one by unique key is that one)."""
    made: list[_Made] = []
    for result in code_results:
        if result.error is not None:
            stats.count(result.trigger, "failed")
        elif result.task is None:
            stats.count(result.trigger, "ignored")
        else:
            made.append(_Made(result.trigger, result.task, None))

    for match in list_triggers_for_event(conn, event.name, event.payload):
        trigger = match.trigger
        if not match.matches:
            stats.count(trigger.name, "ignored")
            stats.queue(TriggerOutcome(trigger.uid, ignored=1))
            continue
        try:
            made.append(_Made(trigger.name, trigger_task(trigger, event), trigger.uid))
        except (TemplateError, TypeError, ValueError) as exc:
            _failed(stats, trigger.name, trigger.uid, event, str(exc))

    storable: list[_Made] = []
    for item in made:
        try:
            insert_params([item.task], payload_limit=payload_limit)
        except (PayloadTooLarge, TypeError, ValueError) as exc:
            _failed(stats, item.label, item.row_uid, event, str(exc))
        else:
            storable.append(item)

    uids = _insert(conn, storable, stats, event, payload_limit)
    for item, uid in zip(storable, uids, strict=True):
        if uid is None:
            continue
        stats.count(item.label, "fired")
        if item.row_uid is not None:
            stats.queue(TriggerOutcome(item.row_uid, fired=1))
        log.info("trigger fired", trigger=item.label, event_name=event.name, uid=uid)
    return get_tasks(conn, [u for u in uids if u is not None])


def _insert(
    conn: Connection,
    items: Sequence[_Made],
    stats: TriggerStats,
    event: EventContext,
    payload_limit: int,
) -> list[str | None]:
    """All in one statement; if the database refuses one (a code trigger's fixed
    uid that exists), each on its own so that only that one fails."""
    if not items:
        return []
    try:
        with conn.begin_nested():
            return list(insert_tasks(conn, [i.task for i in items], payload_limit=payload_limit))
    except IntegrityError:
        pass
    uids: list[str | None] = []
    for item in items:
        try:
            with conn.begin_nested():
                uids.append(insert_tasks(conn, [item.task], payload_limit=payload_limit)[0])
        except IntegrityError as exc:
            _failed(stats, item.label, item.row_uid, event, str(exc.orig).splitlines()[0])
            uids.append(None)
    return uids


def _failed(
    stats: TriggerStats, label: str, row_uid: str | None, event: EventContext, error: str
) -> None:
    log.warning("trigger failed", trigger=label, event_name=event.name, error=error[:500])
    stats.count(label, "failed")
    if row_uid is not None:
        stats.queue(TriggerOutcome(row_uid, failed=1, error=error))
