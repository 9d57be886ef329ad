"""``POST /event``: every trigger of the event's name makes its task.

Code triggers have already run (in a thread) when this starts; here the
table's triggers are read (those that may see the event's queue: an
``EventixTrigger`` sees the queues its namespace may use, docs/tenancy.md),
their templates rendered, and every task enqueued
through the same coalesced insert as ``POST /task`` (with its unique-key
merge). Each task is its own statement's row, so a trigger whose task cannot be
made or stored counts as failed and is logged, and the others' tasks are still
enqueued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventix_operator.api.hotpath import HotPaths
from eventix_operator.api.triggers import CodeResult, TriggerStats
from eventix_operator.db.enqueue import NewTask, validate
from eventix_operator.db.errors import database_unavailable, first_line
from eventix_operator.db.payload import NotStorable, PayloadTooLarge
from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.triggers import (
    EventContext,
    TemplateError,
    TriggerOutcome,
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


async def fire_event(
    store: HotPaths,
    event: EventContext,
    code_results: Sequence[CodeResult],
    *,
    stats: TriggerStats,
    trace_context: Mapping[str, str] | None = None,
) -> list[TaskRecord]:
    """Enqueue the tasks of code triggers and of the table's triggers for ``event``;
    returns them (a task merged into a pending one by unique key is that one).
    ``trace_context``: the event's poster's, stored with every task it fires."""
    made: list[_Made] = []
    for result in code_results:
        if result.error is not None:
            stats.count(result.trigger, "failed")
        elif result.task is None:
            stats.count(result.trigger, "ignored")
        else:
            made.append(_Made(result.trigger, result.task, None))

    for match in await store.triggers_for_event(event.name, event.payload, event.namespace):
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
        if trace_context is not None:
            item.task.trace_context = trace_context
        try:
            validate(item.task, store.payload_limit)
        except (NotStorable, PayloadTooLarge, ValueError) as exc:
            _failed(stats, item.label, item.row_uid, event, str(exc))
        else:
            storable.append(item)

    outcomes = await asyncio.gather(
        *(store.insert_task(i.task) for i in storable),
        return_exceptions=True,
    )
    records: list[TaskRecord] = []
    for item, outcome in zip(storable, outcomes, strict=True):
        if isinstance(outcome, Exception) and not database_unavailable(outcome):
            _failed(stats, item.label, item.row_uid, event, first_line(outcome))
            continue
        if isinstance(outcome, BaseException):
            raise outcome  # the database is down: the request fails, and is tried again
        stats.count(item.label, "fired")
        if item.row_uid is not None:
            stats.queue(TriggerOutcome(item.row_uid, fired=1))
        log.info("trigger fired", trigger=item.label, event_name=event.name, uid=outcome.uid)
        records.append(outcome)
    return records


def _failed(
    stats: TriggerStats, label: str, row_uid: str | None, event: EventContext, error: str
) -> None:
    log.warning("trigger failed", trigger=label, event_name=event.name, error=error[:500])
    stats.count(label, "failed")
    if row_uid is not None:
        stats.queue(TriggerOutcome(row_uid, failed=1, error=error))
