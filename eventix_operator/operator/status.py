"""Resource status from database rows (and, for pools, from the scaler's
decision): pure functions, Kubernetes conventions.

``phase`` for people, ``conditions`` and ``observedGeneration`` for tools. The
conditions say what GitOps tools must agree on (docs/observability.md): kstatus
(Flux) reads ``Reconciling`` (True: in progress), ``Stalled`` (True: failed),
then ``Ready``; the chart's Argo CD health check reads the same three the same
way. So a task that waits or runs is Reconciling, as a Job is in progress; one
that failed, or a spec the operator cannot use, is Stalled; everything else that
works is Ready. Every status writes all three.

A condition's ``lastTransitionTime`` only moves when its status does, so
recomputing a status that did not change gives the same dict and nothing is
written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from eventix_operator.db.queues import Queue
from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.schedules import ScheduleHistory, ScheduleRecord
from eventix_operator.db.triggers import TriggerRecord
from eventix_operator.operator.kube import Scale
from eventix_operator.scaling import Decision, Load, PoolConfig

PHASES = {
    "scheduled": "Pending",
    "retry": "Retrying",
    "processing": "Running",
    "done": "Succeeded",
    "error": "Failed",
    "cancelled": "Cancelled",
}
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    previous: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions list with ``type_`` set, keeping its transition time when
    its status is unchanged, and other conditions as they were."""
    value = "True" if status else "False"
    old = next((c for c in previous or () if c.get("type") == type_), None)
    changed_at = (
        old["lastTransitionTime"]
        if old and old.get("status") == value and old.get("lastTransitionTime")
        else rfc3339(now)
    )
    new: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": changed_at,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    others = [dict(c) for c in previous or () if c.get("type") != type_]
    return [*others, new]


def ready_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    *,
    ready: bool,
    stalled: bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
    reconciling: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``Ready`` and kstatus' ``Reconciling`` and ``Stalled``.

    ``reconciling`` (reason, message) says the resource is still on its way (a
    task waiting or running); a resource that cannot progress without a change (a
    failed task, an invalid spec) is Stalled, so Flux or ``kubectl wait`` fail at
    once instead of waiting for their timeout. Reconciling also replaces the
    ``NotObserved`` condition the CRDs default a fresh resource's status to.
    """
    conditions = condition(
        previous,
        type_="Ready",
        status=ready,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    conditions = condition(
        conditions,
        type_="Reconciling",
        status=reconciling is not None,
        reason=reconciling[0] if reconciling else reason,
        message=reconciling[1] if reconciling else "",
        generation=generation,
        now=now,
    )
    return condition(
        conditions,
        type_="Stalled",
        status=stalled,
        reason=reason if stalled else "Progressing",
        message=message if stalled else "",
        generation=generation,
        now=now,
    )


def task_status(
    record: TaskRecord,
    *,
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    phase = PHASES[record.status]
    status: dict[str, Any] = {
        "phase": phase,
        "taskUid": record.uid,
        "queue": record.namespace,
        "attempts": record.attempts,
        "startedAt": rfc3339(record.started_at),
        "finishedAt": rfc3339(record.finished_at) if phase in FINISHED_PHASES else None,
        "nextAttemptAt": rfc3339(record.eta) if phase in ("Pending", "Retrying") else None,
        "result": record.result if phase == "Succeeded" else None,
        "error": _error(record.error) if phase in ("Failed", "Retrying", "Cancelled") else None,
    }
    if generation is not None:
        status["observedGeneration"] = generation
    failed = phase == "Failed"
    reasons = {"Succeeded": "TaskSucceeded", "Failed": "TaskFailed", "Cancelled": "TaskCancelled"}
    reason = reasons.get(phase, "Enqueued")
    message = (
        status["error"]["message"]
        if failed and status["error"]
        else f"task {record.task} is {phase.lower()} in queue {record.namespace}"
    )
    status["conditions"] = ready_conditions(
        (previous or {}).get("conditions"),
        ready=not failed,
        stalled=failed,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
        reconciling=_on_its_way(record, status),
    )
    return status


def _on_its_way(record: TaskRecord, status: Mapping[str, Any]) -> tuple[str, str] | None:
    """The Reconciling reason and message of a task that waits or runs, as a Job's."""
    phase, attempts = status["phase"], status["attempts"]
    if phase == "Pending":
        return phase, f"waiting in queue {record.namespace}, due at {status['nextAttemptAt']}"
    if phase == "Running":
        return phase, f"attempt {attempts} is running"
    if phase == "Retrying":
        error = status["error"] or {}
        return phase, (
            f"attempt {attempts} failed ({error.get('type', 'Error')}: "
            f"{error.get('message', '')}); next attempt at {status['nextAttemptAt']}"
        )
    return None


def _error(error: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not error:
        return None
    return {"type": str(error.get("type", "Error")), "message": str(error.get("message", ""))}


def invalid_status(
    message: str,
    *,
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: datetime,
    reason: str = "InvalidSpec",
) -> dict[str, Any]:
    """Status of a resource the operator cannot act on: Ready=False and Stalled with the
    reason: InvalidSpec, or QueueNotAllowed for a queue its namespace may not use
    (eventix_operator.tenancy). Either needs a person to change the spec (or the
    operator's settings), so GitOps tools say it failed."""
    return {
        "observedGeneration": generation,
        "conditions": ready_conditions(
            (previous or {}).get("conditions"),
            ready=False,
            stalled=True,
            reason=reason,
            message=message,
            generation=generation,
            now=now,
        ),
    }


def schedule_status(
    record: ScheduleRecord,
    history: ScheduleHistory,
    *,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    if record.error:
        ready, reason, message = False, record.error_reason or "InvalidSchedule", record.error
    elif record.suspend:
        ready, reason, message = True, "Suspended", "suspended: no ticks fire"
    else:
        ready, reason = True, "Scheduled"
        message = f"{record.expression!r} in {record.time_zone}"
    active = [r.task_uid for r in history.runs if PHASES[r.status] not in FINISHED_PHASES]
    return {
        "observedGeneration": record.generation,
        "lastScheduleTime": rfc3339(record.last_tick),
        "nextScheduleTime": None if record.suspend or record.error else rfc3339(record.next_tick),
        "lastSuccessfulTime": rfc3339(history.last_success),
        "lastFailureTime": rfc3339(history.last_failure),
        "active": active,
        "recentRuns": [
            {"time": rfc3339(r.time), "taskUid": r.task_uid, "phase": PHASES[r.status]}
            for r in history.runs
        ],
        "conditions": ready_conditions(
            (previous or {}).get("conditions"),
            ready=ready,
            stalled=bool(record.error),
            reason=reason,
            message=message,
            generation=record.generation,
            now=now,
        ),
    }


def trigger_status(
    record: TriggerRecord, *, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """An EventixTrigger's status from its row: what the REST API counted, and Ready.

    A row exists only for a spec the operator accepted (an invalid one is
    unregistered, and its handler reports InvalidSpec), so a row means Ready. A
    failing event does not make the trigger unready: the next event may carry what
    the template needs; it shows in ``failedCount`` and ``lastError``.
    """
    last_error = (
        {"message": record.last_error, "time": rfc3339(record.last_error_at)}
        if record.last_error is not None
        else None
    )
    return {
        "observedGeneration": record.generation,
        "firedCount": record.fired_count,
        "ignoredCount": record.ignored_count,
        "failedCount": record.failed_count,
        "lastFiredTime": rfc3339(record.last_fired_at),
        "lastError": last_error,
        "conditions": ready_conditions(
            (previous or {}).get("conditions"),
            ready=True,
            stalled=False,
            reason="Registered",
            message=f"task {record.template.get('task')} on event {record.event_name!r}",
            generation=record.generation,
            now=now,
        ),
    }


# -- EventixWorkerPool ------------------------------------------------------------

#: The pool's conditions, in the order they are shown.
POOL_CONDITIONS = ("Ready", "Reconciling", "Stalled", "Active", "ScalingLimited")


def ordered_pool_conditions(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {t: i for i, t in enumerate(POOL_CONDITIONS)}
    return sorted(conditions, key=lambda c: rank.get(str(c.get("type")), len(rank)))


def ready_reason(status: Mapping[str, Any]) -> str | None:
    for c in status.get("conditions") or ():
        if c.get("type") == "Ready":
            return str(c.get("reason"))
    return None


def invalid_pool_status(
    message: str, previous: Mapping[str, Any], *, generation: int, now: datetime
) -> dict[str, Any]:
    """A pool whose spec cannot be used: Ready=False and Stalled, as the other
    kinds' invalid specs; its last live counters stay as they were."""
    invalid = invalid_status(message, previous=previous, generation=generation, now=now)
    return {**previous, **invalid, "conditions": ordered_pool_conditions(invalid["conditions"])}


def pool_status(
    config: PoolConfig,
    load: Load,
    scale: Scale | None,
    decision: Decision | None,
    *,
    ready: tuple[bool, str, str],
    previous: Mapping[str, Any],
    generation: int,
    last_scale: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A pool's status; conditions keep their transition times while their status
    holds, and their messages carry no live counts, so an unchanged pool gives
    an unchanged status. A pool that is not Ready (its target is missing or
    cannot be scaled) is also Stalled: it needs a person, and GitOps tools say
    it failed (docs/observability.md)."""
    conditions = ready_conditions(
        previous.get("conditions"),
        ready=ready[0],
        stalled=not ready[0],
        reason=ready[1],
        message=ready[2],
        generation=generation,
        now=now,
    )
    if decision is not None:
        spec = config.scaling
        if decision.active:
            active = ("TasksWaiting", "tasks are due or running")
        elif scale is not None and scale.replicas == 0 and load.due > 0:
            below = f"fewer than activationTasks ({spec.activation_tasks}) tasks are due"
            active = ("BelowActivation", below)
        else:
            active = ("QueueEmpty", "no task is due or running")
        conditions = condition(
            conditions,
            type_="Active",
            status=decision.active,
            reason=active[0],
            message=active[1],
            generation=generation,
            now=now,
        )
        conditions = condition(
            conditions,
            type_="ScalingLimited",
            status=decision.limit is not None,
            reason=str(decision.limit or "DesiredWithinRange"),
            message="; ".join(decision.reasons[1:]) or "the replicas are what the load wants",
            generation=generation,
            now=now,
        )
    desired = decision.replicas if decision is not None else previous.get("desiredReplicas")
    return {
        "observedGeneration": generation,
        "queueDepth": load.due,
        "running": load.running,
        "busyWorkers": load.busy_workers,
        "desiredReplicas": desired,
        "currentReplicas": scale.current if scale is not None else None,
        "lastScaleTime": last_scale,
        "conditions": ordered_pool_conditions(conditions),
    }


# -- EventixQueue -------------------------------------------------------------------


def queue_status(
    queue: Queue, *, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """An EventixQueue's status from its settings row and the queue's figures.

    A row exists only for a spec the operator accepted (a refused one has none), so
    a row means Ready; a paused queue is Ready too (it does what its spec says).
    The oldest due age is in whole seconds, so that a waiting task does not rewrite
    the status at every pass. ``observedGeneration`` is the generation of the spec the
    row holds (the operator stores it with the settings), as a schedule's or a
    trigger's row keeps theirs."""
    oldest = None if queue.oldest_due_seconds is None else int(queue.oldest_due_seconds)
    limits = []
    if queue.concurrency_limit is not None:
        limits.append(f"at most {queue.concurrency_limit} running")
    if queue.rate_count is not None:
        limits.append(f"at most {queue.rate_count} starts per {queue.rate_per_seconds:g} s")
    message = f"queue {queue.name} " + ("paused" if queue.paused else "claimed")
    if limits:
        message += ", " + " and ".join(limits)
    status: dict[str, Any] = {
        "phase": "Paused" if queue.paused else "Active",
        "queue": queue.name,
        "depth": queue.due,
        "running": queue.running,
        "oldestDueAgeSeconds": oldest,
    }
    generation = queue.k8s_generation
    if generation is not None:  # None: a row from before migration 0013, until it is applied
        status["observedGeneration"] = generation
    status["conditions"] = ready_conditions(
        (previous or {}).get("conditions"),
        ready=True,
        stalled=False,
        reason="Paused" if queue.paused else "Applied",
        message=message,
        generation=generation,
        now=now,
    )
    return status
