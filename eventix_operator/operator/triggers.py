"""What the operator does for EventixTrigger events, as plain functions of data and a
database engine (kopf stays in handlers.py).

A trigger resource becomes one row of ``eventix_trigger`` keyed by its uid; the
REST API reads that table on every ``POST /event``. Applying is an upsert, so a
replayed event, a resumed operator or a second replica changes nothing. The
template is checked with the same rules the API applies (db/triggers.py) before
anything is written; a spec that fails them unregisters the trigger, as a
schedule with an invalid expression stops firing, rather than letting an older
generation go on firing under a resource that says something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from eventix_operator.db import triggers as trigger_db
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.reconcile import Event, Reconciled, handled, refused
from eventix_operator.tenancy import QUEUE_NOT_ALLOWED, TenancyPolicy, like_patterns, queue_refusal

#: CRD template field -> eventix_trigger.template field (fields under retry below).
_TEMPLATE_FIELDS = {
    "task": "task",
    "args": "args",
    "kwargs": "kwargs",
    "queue": "namespace",
    "uniqueKey": "unique_key",
    "delaySeconds": "delay",
    "storeResult": "store_result",
    "resultTTLSeconds": "result_expires",
}
_RETRY_FIELDS = {
    "maxRetries": "max_retries",
    "backoffSeconds": "error_eta_inc",
    "maxBackoffSeconds": "error_eta_max",
}


def stored_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """The table's template for a resource's ``spec.template`` (camelCase to Eventix's
    names). Unknown fields are refused: the API server prunes them, so one here is a
    bug, not a user's typo to drop."""
    unknown = sorted(set(template) - set(_TEMPLATE_FIELDS) - {"retry"})
    if unknown:
        raise trigger_db.TemplateError(f"unknown template field(s): {', '.join(unknown)}")
    stored = {_TEMPLATE_FIELDS[k]: v for k, v in template.items() if k in _TEMPLATE_FIELDS}
    retry = template.get("retry") or {}
    if not isinstance(retry, Mapping):
        raise trigger_db.TemplateError("template field retry must be an object")
    unknown = sorted(set(retry) - set(_RETRY_FIELDS))
    if unknown:
        raise trigger_db.TemplateError(f"unknown retry field(s): {', '.join(unknown)}")
    stored |= {_RETRY_FIELDS[k]: v for k, v in retry.items()}
    return stored


def apply_trigger(
    engine: Engine,
    ref: ResourceRef,
    spec: Mapping[str, Any],
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
    tenancy: TenancyPolicy,
) -> Reconciled:
    """Register (or update) the trigger of an EventixTrigger; an invalid spec removes
    it and reports InvalidSpec.

    Tenancy (docs/tenancy.md): the row keeps the queues its namespace may use, and the
    REST API's lookup gives it only the events of those queues. Its tasks go to the
    event's queue (``default``, as in Eventix) or to the one its template names, which
    must be one the namespace may use: otherwise it is unregistered, QueueNotAllowed.
    """
    try:
        event_name = spec.get("eventName")
        if not isinstance(event_name, str) or not event_name:
            raise trigger_db.TemplateError("spec.eventName is required")
        template = spec.get("template")
        if not isinstance(template, Mapping):
            raise trigger_db.TemplateError("spec.template must be an object")
        stored = stored_template(template)
        trigger_db.validate_template(stored)
        payload_filter = spec.get("filter")
        trigger_db.validate_filter(payload_filter)
    except trigger_db.TemplateError as exc:
        with engine.begin() as conn:
            trigger_db.delete_trigger(conn, ref.uid)
        return refused(
            f"spec cannot be used: {exc}", previous=previous, generation=generation, now=now
        )
    queue = stored.get("namespace") or "default"
    refusal = None if queue == "default" else queue_refusal(ref.namespace, queue, tenancy)
    if refusal is not None:
        with engine.begin() as conn:
            trigger_db.delete_trigger(conn, ref.uid)
        return refused(
            refusal, previous=previous, generation=generation, now=now, reason=QUEUE_NOT_ALLOWED
        )
    with engine.begin() as conn:
        existing = trigger_db.get_trigger(conn, ref.uid)
        record = trigger_db.upsert_trigger(
            conn,
            uid=ref.uid,
            name=f"{ref.namespace}/{ref.name}",
            event_name=event_name,
            template=stored,
            filter=payload_filter,
            k8s_namespace=ref.namespace,
            k8s_name=ref.name,
            generation=generation,
            queue_scope=like_patterns(ref.namespace, tenancy),
        )
    events: list[Event] = []
    what = f"task {record.template['task']} on event {record.event_name!r}"
    if existing is None:
        events.append(("Normal", "Registered", f"registered: {what}"))
    elif existing.generation != generation:
        events.append(("Normal", "Updated", f"generation {generation} registered: {what}"))
    return Reconciled(handled(generation), events)


def delete_trigger_resource(engine: Engine, ref: ResourceRef) -> bool:
    """Unregister the trigger; False when it had no row (never valid, or gone). The
    tasks it enqueued stay: they are work already asked for."""
    with engine.begin() as conn:
        return trigger_db.delete_trigger(conn, ref.uid)
