"""What the operator does for each resource event, as plain functions of data and
a database engine (kopf stays in handlers.py). Every function is idempotent:
a replayed event, a resumed operator or a second replica changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from eventix_operator.db import admin, enqueue
from eventix_operator.db import schedules as schedule_db
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.status import PHASES, invalid_status
from eventix_operator.resources import schedule_definition, task_from_spec
from eventix_operator.schedules.scheduler import apply_schedule
from eventix_operator.tenancy import QUEUE_NOT_ALLOWED, TenancyPolicy, default_queue, queue_refusal
from eventix_operator.tracing import enqueuing

Event = tuple[str, str, str]  # (type, reason, message)


@dataclass(frozen=True)
class Reconciled:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)


def handled(generation: int, **fields: Any) -> dict[str, Any]:
    """The status a handler writes once the database holds the resource.

    Only what the handler alone knows: the generation it acted on (and the task
    row it created). Phase, attempts, conditions and times come from status
    sync, the one writer of database state: a handler's snapshot, applied after
    a quick task already finished, would otherwise turn Succeeded back into Pending.
    """
    return {"observedGeneration": generation, **fields}


def refused(
    message: str,
    *,
    previous: Mapping[str, Any] | None,
    generation: int,
    now: datetime,
    reason: str = "InvalidSpec",
) -> Reconciled:
    """A resource the operator will not act on: Ready=False and Stalled with the reason,
    and a Warning event saying it."""
    status = invalid_status(
        message, previous=previous, generation=generation, now=now, reason=reason
    )
    return Reconciled(status, [("Warning", reason, message)])


def resolve_queue(namespace: str, queue: Any, tenancy: TenancyPolicy) -> tuple[str, str | None]:
    """The queue a resource's task goes to (the one it names, or the namespace's
    default) and why the namespace may not use it (None: it may)."""
    chosen = queue if isinstance(queue, str) and queue else default_queue(namespace, tenancy)
    return chosen, queue_refusal(namespace, chosen, tenancy)


def enqueue_task(
    engine: Engine,
    ref: ResourceRef,
    spec: Mapping[str, Any],
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    payload_limit: int,
    now: datetime,
    tenancy: TenancyPolicy,
) -> Reconciled:
    """Make sure an EventixTask has its row, then report the row's state.

    The row is keyed by the resource uid, so replays find it. A task with a
    ``uniqueKey`` may instead merge into a pending task of the same key and of the
    same namespace (Eventix semantics, within a tenancy boundary); the status then
    names that task. A queue the namespace may not use enqueues nothing: the
    resource is refused with QueueNotAllowed. A row that exists already (enqueued
    under an earlier policy) is left as it is. With traces on, the enqueue is a
    span that the task's attempts continue.
    """
    queue, refusal = resolve_queue(ref.namespace, spec.get("queue"), tenancy)
    try:
        new = task_from_spec(
            {**spec, "queue": queue},
            source="k8s",
            k8s_namespace=ref.namespace,
            k8s_name=ref.name,
            k8s_uid=ref.uid,
        )
    except (KeyError, TypeError, ValueError) as exc:
        message = f"spec cannot be enqueued: {exc}"
        return refused(message, previous=previous, generation=generation, now=now)
    events: list[Event] = []
    with engine.begin() as conn:
        record = admin.get_resource_task(conn, ref.uid)
        merged_into = (previous or {}).get("taskUid")
        if record is None and merged_into:
            record = admin.get_task(conn, merged_into)  # merged earlier by unique key
        if record is None and not merged_into:
            if refusal is not None:
                return refused(
                    refusal,
                    previous=previous,
                    generation=generation,
                    now=now,
                    reason=QUEUE_NOT_ALLOWED,
                )
            resource = {
                "k8s.namespace.name": ref.namespace,
                "eventix.resource": f"EventixTask/{ref.name}",
                "messaging.destination.name": new.queue,
            }
            with enqueuing(new.task, attributes=resource) as context:
                new.trace_context = context
                if new.unique_key is None:
                    enqueue.insert_tasks_once(conn, [new], payload_limit=payload_limit)
                    uid = new.uid
                else:
                    [uid] = enqueue.insert_tasks(conn, [new], payload_limit=payload_limit)
            record = admin.get_task(conn, uid)
            if record is not None:
                if record.uid != new.uid:
                    events.append(
                        (
                            "Normal",
                            "Merged",
                            f"merged into pending task {record.uid} "
                            f"with unique key {new.unique_key!r}",
                        )
                    )
                else:
                    events.append(
                        (
                            "Normal",
                            "Enqueued",
                            f"task {new.task} enqueued in queue {new.queue} as {record.uid}",
                        )
                    )
    if record is None:  # finished and expired since: nothing left to show
        return Reconciled(dict(previous or {}))
    return Reconciled(handled(generation, taskUid=record.uid), events)


def update_task(
    engine: Engine,
    ref: ResourceRef,
    spec: Mapping[str, Any],
    *,
    generation: int,
    previous: Mapping[str, Any] | None,
    payload_limit: int,
    now: datetime,
    tenancy: TenancyPolicy,
) -> Reconciled:
    """Apply a new priority or eta while the task has not started (the CRD makes
    the other fields immutable). A task that was never enqueued (refused) is judged
    afresh, as at its creation, so its status speaks of this generation."""
    if not (previous or {}).get("taskUid"):
        return enqueue_task(
            engine,
            ref,
            spec,
            generation=generation,
            previous=previous,
            payload_limit=payload_limit,
            now=now,
            tenancy=tenancy,
        )
    eta = spec.get("eta")
    with engine.begin() as conn:
        record = admin.update_pending_resource_task(
            conn,
            ref.uid,
            priority=int(spec.get("priority", 0)),
            eta=datetime.fromisoformat(eta.replace("Z", "+00:00")) if eta else None,
            delay=spec.get("delaySeconds"),
        )
        events: list[Event] = []
        if record is None:
            record = admin.get_resource_task(conn, ref.uid)
            if record is not None:
                phase = PHASES[record.status]
                events.append(
                    (
                        "Warning",
                        "SpecNotApplied",
                        f"the task is already {phase.lower()}: the change does not apply to it",
                    )
                )
    if record is None:
        return Reconciled(dict(previous or {}), events)
    return Reconciled(handled(generation, taskUid=record.uid), events)


def delete_task(engine: Engine, ref: ResourceRef) -> str | None:
    """Remove the resource's row; returns the status it had (None: there was none)."""
    with engine.begin() as conn:
        return admin.delete_resource_task(conn, ref.uid)


def apply_schedule_resource(
    engine: Engine,
    ref: ResourceRef,
    spec: Mapping[str, Any],
    *,
    generation: int,
    created_at: datetime,
    previous: Mapping[str, Any] | None,
    now: datetime,
    tenancy: TenancyPolicy,
) -> Reconciled:
    """Store the schedule; its template's queue is settled here, once (the namespace's
    default when it names none), so every tick goes where the operator allowed. A queue
    the namespace may not use stops the whole schedule with QueueNotAllowed."""
    template = spec.get("template")
    queue, refusal = resolve_queue(
        ref.namespace, template.get("queue") if isinstance(template, Mapping) else None, tenancy
    )
    try:
        if not isinstance(template, Mapping):
            raise ValueError("spec.template must be an object")
        definition = schedule_definition(
            {**spec, "template": {**template, "queue": queue}},
            uid=ref.uid,
            namespace=ref.namespace,
            name=ref.name,
            generation=generation,
            created_at=created_at,
        )
    except (KeyError, TypeError, ValueError) as exc:
        return refused(
            f"spec cannot be used: {exc}", previous=previous, generation=generation, now=now
        )
    with engine.begin() as conn:
        _, error = apply_schedule(
            conn, definition, now, refusal=None if refusal is None else (QUEUE_NOT_ALLOWED, refusal)
        )
    if refusal is not None:
        return refused(
            refusal, previous=previous, generation=generation, now=now, reason=QUEUE_NOT_ALLOWED
        )
    events: list[Event] = []
    if error:
        events.append(("Warning", "InvalidSchedule", error))
    return Reconciled(handled(generation), events)


def delete_schedule_resource(engine: Engine, ref: ResourceRef) -> int:
    """Remove the schedule and every run it created; returns how many runs."""
    with engine.begin() as conn:
        return schedule_db.delete_schedule(conn, ref.uid)


def pool_spec(spec: Mapping[str, Any], namespace: str, tenancy: TenancyPolicy) -> Mapping[str, Any]:
    """A pool's spec with its queues defaulted to the queue its namespace's resources
    get when they name none. A pool's queues are not held to the tenancy rule: a pool
    enqueues and claims nothing, it reads the depth of the queues it names (which the
    operator's /metrics shows anyway) and scales a workload of its own namespace that
    opted in (docs/tenancy.md)."""
    if spec.get("queues"):
        return spec
    return {**spec, "queues": [default_queue(namespace, tenancy)]}
