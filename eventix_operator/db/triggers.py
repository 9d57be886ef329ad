"""Declarative triggers: the trigger table's data functions, and the small, safe
template that turns an event into a task.

A trigger (filled by the operator from an ``EventixTrigger`` resource) names an
event, optionally a filter on the event's payload, and a task template. The
template is data, never code: a string of the exact form ``"{{ payload.a.b }}"``
(or ``"{{ event.name }}"``) anywhere in ``args``, ``kwargs`` or ``unique_key`` is
replaced by that value, whatever its JSON type; nothing else is evaluated. So
whoever can write a resource can choose which registered task runs with which
arguments, and nothing more. The template and the filter are checked here so
that the operator can reject a bad resource with the same rules the API applies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from eventix_operator.db import statements
from eventix_operator.db.enqueue import NewTask
from eventix_operator.db.rows import Fetch

__all__ = [
    "EventContext",
    "EventKey",
    "TemplateError",
    "TriggerMatch",
    "TriggerOutcome",
    "TriggerRecord",
    "changed_resource_triggers",
    "delete_trigger",
    "get_trigger",
    "list_triggers_for_event",
    "list_triggers_for_events",
    "record_trigger_outcomes",
    "render",
    "trigger_task",
    "upsert_trigger",
    "validate_filter",
    "validate_template",
]


class TemplateError(ValueError):
    """A template or filter that cannot work, or an event it cannot be applied to."""


#: What a template may set, and the JSON types each takes (``None`` is allowed where listed).
TEMPLATE_FIELDS: Mapping[str, tuple[type, ...]] = {
    "task": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "namespace": (str,),
    "unique_key": (str, type(None)),
    "delay": (int, float),
    "retry": (bool,),
    "max_retries": (int, type(None)),
    "error_eta_inc": (int,),
    "error_eta_max": (int,),
    "store_result": (bool,),
    "result_expires": (int, type(None)),
    "error_expires": (int, type(None)),
}
#: Fields whose strings may be placeholders; the others are taken literally.
TEMPLATED_FIELDS = ("args", "kwargs", "unique_key")

_PLACEHOLDER = re.compile(r"^\{\{\s*(payload|event)((?:\.[^.\s{}]+)*)\s*\}\}$")
_EVENT_FIELDS = ("name", "namespace", "priority", "operator", "timestamp", "uid")


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a template can read of an event."""

    name: str
    namespace: str = "default"
    priority: int = 0
    operator: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    timestamp: str | None = None
    uid: str | None = None


def _placeholders(value: Any) -> list[str]:
    """Strings in ``value`` that look like placeholders (contain ``{{``)."""
    if isinstance(value, str):
        return [value] if "{{" in value else []
    if isinstance(value, list):
        return [p for item in value for p in _placeholders(item)]
    if isinstance(value, dict):
        return [p for item in value.values() for p in _placeholders(item)]
    return []


def validate_template(template: Any) -> None:
    """Raise :class:`TemplateError` naming what is wrong with a task template."""
    if not isinstance(template, dict):
        raise TemplateError("the template must be a JSON object")
    unknown = sorted(set(template) - set(TEMPLATE_FIELDS))
    if unknown:
        raise TemplateError(
            f"unknown template field(s) {', '.join(unknown)}; allowed: {', '.join(TEMPLATE_FIELDS)}"
        )
    for name, value in template.items():
        kinds = TEMPLATE_FIELDS[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise TemplateError(f"template field {name} must be {wanted}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise TemplateError(f"template field {name} must be >= 0")
    if not template.get("task"):
        raise TemplateError("the template needs a task name (field task)")
    if not template.get("namespace", "default"):
        raise TemplateError("template field namespace must not be empty")
    for name, value in template.items():
        for text in _placeholders(value):
            if name not in TEMPLATED_FIELDS:
                raise TemplateError(
                    f"template field {name} is taken literally; placeholders work only in "
                    f"{', '.join(TEMPLATED_FIELDS)}"
                )
            if not _PLACEHOLDER.match(text):
                raise TemplateError(
                    f"{text!r} is not a placeholder: write the whole string as "
                    '"{{ payload.some.key }}" or "{{ event.name }}" (no text around it)'
                )
            match = _PLACEHOLDER.match(text)
            if match and match.group(1) == "event":
                path = match.group(2).lstrip(".").split(".") if match.group(2) else []
                if len(path) != 1 or path[0] not in _EVENT_FIELDS:
                    raise TemplateError(
                        f"{text!r}: an event placeholder names one of {', '.join(_EVENT_FIELDS)}"
                    )


def validate_filter(payload_filter: Any) -> None:
    if payload_filter is not None and not isinstance(payload_filter, dict):
        raise TemplateError("the filter must be a JSON object (or absent)")


def _lookup(context: EventContext, root: str, path: str, text: str) -> Any:
    if root == "event":
        return getattr(context, path.lstrip("."))
    value: Any = context.payload
    walked = "payload"
    for key in path.lstrip(".").split(".") if path else []:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif (
            isinstance(value, list)
            and key.lstrip("-").isdigit()
            and -len(value) <= int(key) < len(value)
        ):
            value = value[int(key)]
        else:
            raise TemplateError(f"{text!r}: the event's {walked} has no {key!r}")
        walked = f"{walked}.{key}"
    return value


def render(value: Any, context: EventContext) -> Any:
    """``value`` with every placeholder string replaced by what it names."""
    if isinstance(value, str):
        match = _PLACEHOLDER.match(value)
        return _lookup(context, match.group(1), match.group(2), value) if match else value
    if isinstance(value, list):
        return [render(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """One row of ``eventix_trigger``."""

    uid: str
    name: str
    k8s_namespace: str | None
    k8s_name: str | None
    generation: int
    event_name: str
    filter: dict[str, Any] | None
    template: dict[str, Any]
    fired_count: int
    ignored_count: int
    failed_count: int
    last_fired_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: LIKE patterns of the queues whose events it sees (None: every queue).
    queue_scope: list[str] | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TriggerRecord:
        """A record from the columns of :data:`~.statements.TRIGGER_COLUMNS`, in order."""
        return cls(*row)


@dataclass(frozen=True, slots=True)
class TriggerMatch:
    """A trigger registered for an event, and whether the event passes its filter."""

    trigger: TriggerRecord
    matches: bool


@dataclass(frozen=True, slots=True)
class TriggerOutcome:
    """What one trigger did with a number of events, to add to its counters."""

    uid: str
    fired: int = 0
    ignored: int = 0
    failed: int = 0
    error: str | None = None


def trigger_task(trigger: TriggerRecord, event: EventContext) -> NewTask:
    """The task a trigger makes of an event. As Eventix does with a trigger's task,
    the event gives the priority and the operator, and the queue unless the
    template names one other than ``default``; the task names the trigger's
    resource (``k8s_namespace``/``k8s_name``) when it has one."""
    template = trigger.template
    validate_template(template)
    unique_key = render(template.get("unique_key"), event)
    if unique_key is not None and not isinstance(unique_key, str | int | float):
        raise TemplateError("unique_key must render to a string")
    namespace = template.get("namespace") or "default"
    return NewTask(
        task=template["task"],
        args=tuple(render(template.get("args", []), event)),
        kwargs=render(template.get("kwargs", {}), event),
        queue=event.namespace if namespace == "default" else namespace,
        priority=event.priority,
        delay=template.get("delay"),
        unique_key=None if unique_key is None else str(unique_key),
        retry=template.get("retry", True),
        max_retries=template.get("max_retries"),
        backoff_seconds=template.get("error_eta_inc", 15),
        max_backoff_seconds=template.get("error_eta_max", 300),
        store_result=template.get("store_result", True),
        result_expires=template.get("result_expires", 604_800),
        error_expires=template.get("error_expires"),
        operator=event.operator,
        source="trigger",
        # Which EventixTrigger made it, as a schedule's runs name their schedule (the
        # dashboard links a task to its origin); and a resource's trigger makes tasks
        # of its namespace: their unique keys merge only with that namespace's tasks
        # (docs/tenancy.md).
        k8s_namespace=trigger.k8s_namespace,
        k8s_name=trigger.k8s_name,
    )


def upsert_trigger(
    conn: Connection,
    *,
    uid: str,
    name: str,
    event_name: str,
    template: Mapping[str, Any],
    filter: Mapping[str, Any] | None = None,
    k8s_namespace: str | None = None,
    k8s_name: str | None = None,
    generation: int = 0,
    queue_scope: Sequence[str] | None = None,
) -> TriggerRecord:
    """Create or update the trigger ``uid`` (idempotent: a replay changes nothing
    but ``updated_at``). ``queue_scope``: SQL LIKE patterns of the queues whose events
    it sees (None: every queue). Raises :class:`TemplateError` for a template or
    filter that cannot work, before anything is written."""
    if not uid or not name or not event_name:
        raise TemplateError("a trigger needs a uid, a name and an event name")
    validate_template(dict(template))
    validate_filter(None if filter is None else dict(filter))
    params = {
        "uid": uid,
        "name": name,
        "k8s_namespace": k8s_namespace,
        "k8s_name": k8s_name,
        "generation": generation,
        "event_name": event_name,
        "filter": None if filter is None else json.dumps(dict(filter)),
        "template": json.dumps(dict(template)),
        "queue_scope": None if queue_scope is None else list(queue_scope),
    }
    return TriggerRecord.from_row(conn.execute(statements.UPSERT_TRIGGER, params).one())


def get_trigger(conn: Connection, uid: str) -> TriggerRecord | None:
    row = conn.execute(statements.GET_TRIGGER, {"uid": uid}).first()
    return TriggerRecord.from_row(row) if row else None


def delete_trigger(conn: Connection, uid: str) -> bool:
    """Remove a trigger; False when there was none. Tasks it created stay: they
    are work already asked for, not state of the trigger."""
    return conn.execute(statements.DELETE_TRIGGER, {"uid": uid}).first() is not None


#: An event as the trigger lookup reads it: (name, payload, queue, i.e. Eventix's namespace).
EventKey = tuple[str, Mapping[str, Any], str]


def list_triggers_for_event(
    conn: Connection,
    event_name: str,
    payload: Mapping[str, Any] | None = None,
    queue: str = "default",
) -> list[TriggerMatch]:
    """Every trigger of ``event_name`` (by name) that may see events of ``queue``
    (the event's Eventix namespace; see ``queue_scope``), each with whether
    ``payload`` passes its filter; the database decides containment, so the filter
    means exactly what JSONB ``@>`` means."""
    params = _events_params([(event_name, payload or {}, queue)])
    return _matches(conn.execute(statements.TRIGGERS_FOR_EVENTS, params).all(), 1)[0]


async def list_triggers_for_events(
    fetch: Fetch, events: Sequence[EventKey]
) -> list[list[TriggerMatch]]:
    """:func:`list_triggers_for_event` for a batch of (name, payload, queue) events
    in one statement, on a hot path's connection."""
    rows = await fetch(statements.TRIGGERS_FOR_EVENTS, _events_params(events))
    return _matches(rows, len(events))


def _events_params(events: Sequence[EventKey]) -> dict[str, list[str]]:
    return {
        "event_name": [name for name, _, _ in events],
        "payload": [json.dumps(dict(payload)) for _, payload, _ in events],
        "queue": [queue for _, _, queue in events],
    }


def _matches(rows: Sequence[Sequence[Any]], events: int) -> list[list[TriggerMatch]]:
    """Rows of (event slot, trigger columns…, matches) grouped by event."""
    found: list[list[TriggerMatch]] = [[] for _ in range(events)]
    for slot, *trigger, matches in rows:
        found[slot - 1].append(TriggerMatch(TriggerRecord.from_row(trigger), bool(matches)))
    return found


def record_trigger_outcomes(conn: Connection, outcomes: Sequence[TriggerOutcome]) -> int:
    """Add outcomes to the triggers' counters in one statement; returns rows changed
    (a trigger deleted meanwhile is skipped)."""
    merged: dict[str, TriggerOutcome] = {}
    for o in outcomes:
        old = merged.get(o.uid)
        merged[o.uid] = (
            o
            if old is None
            else TriggerOutcome(
                o.uid,
                old.fired + o.fired,
                old.ignored + o.ignored,
                old.failed + o.failed,
                o.error if o.error is not None else old.error,
            )
        )
    if not merged:
        return 0
    values = list(merged.values())
    params = {
        "uid": [o.uid for o in values],
        "fired": [o.fired for o in values],
        "ignored": [o.ignored for o in values],
        "failed": [o.failed for o in values],
        "error": [None if o.error is None else o.error[:2000] for o in values],
    }
    return conn.execute(statements.RECORD_TRIGGER_OUTCOMES, params).rowcount


def changed_resource_triggers(conn: Connection, since: datetime) -> list[TriggerRecord]:
    """Triggers of ``EventixTrigger`` resources whose row (spec or counters) changed at
    or after ``since``, oldest change first: the operator's status sync reads these."""
    rows = conn.execute(statements.CHANGED_RESOURCE_TRIGGERS, {"since": since})
    return [TriggerRecord.from_row(r) for r in rows]
