"""What the operator does for EventixQueue events, as plain functions of data and a
database engine (kopf stays in handlers.py).

An EventixQueue becomes the settings row of its queue in ``eventix_queue``, which
every claim consults (docs/queues.md), through the mapping that `eventix local
--manifests` uses too (:mod:`eventix_operator.resources`). Applying is an upsert:
a replayed event, a resumed operator or a second replica changes nothing. One resource per queue: a
queue another EventixQueue configures is refused (QueueConflict) and left alone,
and a namespace configures only queues it may use (docs/tenancy.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from eventix_operator.db import queues as queue_db
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.reconcile import Event, Reconciled, handled, refused
from eventix_operator.resources import queue_name, queue_settings
from eventix_operator.tenancy import QUEUE_NOT_ALLOWED, TenancyPolicy, queue_refusal

QUEUE_CONFLICT = "QueueConflict"


def apply_queue(
    engine: Engine,
    ref: ResourceRef,
    spec: Mapping[str, Any],
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: datetime,
    tenancy: TenancyPolicy,
) -> Reconciled:
    """Write the queue's settings; refuse a queue the namespace may not use
    (QueueNotAllowed) or that another EventixQueue configures (QueueConflict)."""
    name = queue_name(ref.name, spec)
    refusal = queue_refusal(ref.namespace, name, tenancy)
    if refusal is not None:
        with engine.begin() as conn:
            queue_db.delete_queue(conn, None, k8s_uid=ref.uid)
        return refused(
            refusal, previous=previous, generation=generation, now=now, reason=QUEUE_NOT_ALLOWED
        )
    settings = queue_settings(spec)
    with engine.begin() as conn:
        existing = queue_db.get_queue(conn, name)
        paused = queue_db.set_queue(
            conn, name, settings, k8s=(ref.namespace, ref.name, ref.uid), generation=generation
        )
    if paused is None:
        owner = f"{existing.k8s_namespace}/{existing.k8s_name}" if existing else "another"
        return refused(
            f"queue {name!r} is configured by EventixQueue {owner}; a queue has one",
            previous=previous,
            generation=generation,
            now=now,
            reason=QUEUE_CONFLICT,
        )
    events: list[Event] = []
    was_paused = existing.paused if existing else False
    if paused and not was_paused:
        events.append(("Normal", "Paused", f"queue {name} paused: no new claims"))
    elif was_paused and not paused:
        events.append(("Normal", "Resumed", f"queue {name} resumed: workers woken"))
    return Reconciled(handled(generation, queue=name), events)


def delete_queue_resource(engine: Engine, ref: ResourceRef) -> bool:
    """Remove the settings this resource wrote (the queue runs unpaused and unlimited
    again; its workers are woken). False when it had none (refused, or gone)."""
    with engine.begin() as conn:
        return queue_db.delete_queue(conn, None, k8s_uid=ref.uid)
