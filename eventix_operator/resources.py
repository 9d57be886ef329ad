"""From custom-resource specs to queue rows: the mapping shared by the operator
and by `eventix local --manifests`, so a manifest means the same thing in both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from eventix_operator.client import new_task
from eventix_operator.db import queues as queue_db
from eventix_operator.db.enqueue import NewTask
from eventix_operator.db.schedules import ScheduleDefinition

GROUP = "eventix.io"
VERSION = "v1alpha1"


def task_from_spec(
    spec: Mapping[str, Any],
    *,
    source: str,
    k8s_namespace: str | None = None,
    k8s_name: str | None = None,
    k8s_uid: str | None = None,
    schedule_uid: str | None = None,
    schedule_time: datetime | None = None,
) -> NewTask:
    """A :class:`NewTask` for an ``EventixTask`` spec or a schedule's ``template``.

    Field names follow the CRD (camelCase); validation errors name the field.
    """
    retry = spec.get("retry") or {}
    eta = spec.get("eta")
    if isinstance(eta, str):
        eta = datetime.fromisoformat(eta.replace("Z", "+00:00"))
    task = new_task(
        spec["task"],
        spec.get("args") or (),
        spec.get("kwargs") or {},
        queue=spec.get("queue", "default"),
        priority=int(spec.get("priority", 0)),
        eta=eta,
        delay=spec.get("delaySeconds"),
        unique_key=spec.get("uniqueKey"),
        max_retries=retry.get("maxRetries"),
        backoff_seconds=int(retry.get("backoffSeconds", 15)),
        max_backoff_seconds=int(retry.get("maxBackoffSeconds", 300)),
        timeout_seconds=spec.get("timeoutSeconds"),
        store_result=bool(spec.get("storeResult", True)),
        result_ttl_seconds=spec.get("resultTTLSeconds", 604_800),
        source=source,
    )
    return replace(
        task,
        k8s_namespace=k8s_namespace,
        k8s_name=k8s_name,
        k8s_uid=k8s_uid,
        schedule_uid=schedule_uid,
        schedule_time=schedule_time,
    )


def schedule_definition(
    spec: Mapping[str, Any],
    *,
    uid: str,
    namespace: str,
    name: str,
    generation: int,
    created_at: datetime,
) -> ScheduleDefinition:
    """The stored form of an ``EventixSchedule`` spec; defaults as the CRD's."""
    template = dict(spec.get("template") or {})
    if not template.get("task"):
        raise ValueError("spec.template.task is required")
    deadline = spec.get("startingDeadlineSeconds")
    return ScheduleDefinition(
        uid=uid,
        k8s_namespace=namespace,
        k8s_name=name,
        generation=generation,
        expression=str(spec["schedule"]),
        time_zone=str(spec.get("timeZone") or "UTC"),
        suspend=bool(spec.get("suspend", False)),
        concurrency_policy=str(spec.get("concurrencyPolicy", "Allow")),
        starting_deadline_seconds=None if deadline is None else int(deadline),
        catch_up=str(spec.get("catchUp", "Latest")),
        max_catch_up_runs=int(spec.get("maxCatchUpRuns", 100)),
        successful_runs_history_limit=int(spec.get("successfulRunsHistoryLimit", 3)),
        failed_runs_history_limit=int(spec.get("failedRunsHistoryLimit", 1)),
        template=template,
        created_at=created_at,
    )


def queue_name(name: str, spec: Mapping[str, Any]) -> str:
    """The queue an ``EventixQueue`` named ``name`` configures: ``spec.queue``, else
    the resource's name."""
    queue = spec.get("queue")
    return queue if isinstance(queue, str) and queue else name


def queue_settings(spec: Mapping[str, Any]) -> queue_db.QueueSettings:
    """Every setting of an ``EventixQueue`` spec (one left out is cleared: the
    resource says all)."""
    rate = spec.get("rateLimit") or {}
    kept = spec.get("retention") or {}
    return queue_db.everything(
        paused=bool(spec.get("paused", False)),
        concurrency_limit=spec.get("concurrencyLimit"),
        rate_count=rate.get("count"),
        rate_per_seconds=None if rate.get("perSeconds") is None else float(rate["perSeconds"]),
        retain_succeeded_seconds=kept.get("succeededSeconds"),
        retain_failed_seconds=kept.get("failedSeconds"),
    )
