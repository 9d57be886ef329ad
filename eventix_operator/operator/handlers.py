"""Kopf handlers: thin, typed, each a call into reconcile.py.

Kopf keeps its progress in annotations (``eventix.io/…``), never in ``status``,
so the status schema stays ours. Sync handlers run in kopf's thread pool,
where blocking database calls belong.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from eventix_operator.db.errors import DATABASE_ERRORS, database_unavailable, first_line
from eventix_operator.operator import queues, reconcile, triggers
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.reconcile import Reconciled
from eventix_operator.operator.runtime import Runtime
from eventix_operator.operator.status import FINISHED_PHASES
from eventix_operator.resources import GROUP, VERSION
from eventix_operator.settings import get_settings

TASKS = "eventixtasks"
SCHEDULES = "eventixschedules"


def runtime_of(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    return rt


def now() -> datetime:
    return datetime.now(UTC)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING  # our own events say what a person needs
    settings.execution.max_workers = 20
    settings.watching.server_timeout = 300
    rt = await asyncio.to_thread(Runtime.create, get_settings())
    rt.launch()
    memo["runtime"] = rt


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        await runtime_of(memo).stop()


def _publish(rt: Runtime, ref: ResourceRef, result: Reconciled, patch: kopf.Patch) -> None:
    patch.status.update(result.status)
    rt.sync.remember(ref.uid, result.status)
    for type_, reason, message in result.events:
        rt.kube.event(ref, type_=type_, reason=reason, message=message)


def _ref(plural: str, meta: kopf.Meta) -> ResourceRef:
    return ResourceRef(plural, str(meta.namespace), str(meta.name), str(meta.uid))


def _reconcile(
    rt: Runtime, ref: ResourceRef, patch: kopf.Patch, action: Callable[[], Reconciled]
) -> None:
    """Run a reconcile function and publish its result; a database outage
    becomes a retry in a few seconds, a value the database refuses a permanent
    failure of this generation (retrying it cannot help; kopf reports it)."""
    try:
        result = action()
    except DATABASE_ERRORS as exc:
        raise _database_error(exc) from exc
    _publish(rt, ref, result, patch)


def _database_error(exc: BaseException) -> kopf.TemporaryError | kopf.PermanentError:
    if database_unavailable(exc):
        return kopf.TemporaryError(f"database unavailable: {first_line(exc)}", delay=5)
    return kopf.PermanentError(f"the database refused the change: {first_line(exc)}")


# -- EventixTask ------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, TASKS, id="enqueue")
@kopf.on.create(GROUP, VERSION, TASKS, id="enqueue")
def enqueue(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    ref = _ref(TASKS, meta)
    _reconcile(
        rt,
        ref,
        patch,
        lambda: reconcile.enqueue_task(
            rt.engine,
            ref,
            spec,
            generation=int(meta.get("generation", 1)),
            previous=status,
            payload_limit=rt.settings.max_payload_bytes,
            now=now(),
            tenancy=rt.tenancy,
        ),
    )


@kopf.on.update(GROUP, VERSION, TASKS, id="update", field="spec")
def update(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    ref = _ref(TASKS, meta)
    _reconcile(
        rt,
        ref,
        patch,
        lambda: reconcile.update_task(
            rt.engine,
            ref,
            spec,
            generation=int(meta.get("generation", 1)),
            previous=status,
            payload_limit=rt.settings.max_payload_bytes,
            now=now(),
            tenancy=rt.tenancy,
        ),
    )


@kopf.on.delete(GROUP, VERSION, TASKS, id="remove")
def remove(meta: kopf.Meta, memo: kopf.Memo, runtime: timedelta, **_: Any) -> None:
    rt = runtime_of(memo)
    ref = _ref(TASKS, meta)
    _delete(rt, ref, runtime, lambda: reconcile.delete_task(rt.engine, ref))
    rt.sync.forget(ref.uid)


def _delete(rt: Runtime, ref: ResourceRef, elapsed: timedelta, action: Any) -> None:
    """Run a deletion; while the database is down retry, but never hold the
    resource longer than ``EVENTIX_OPERATOR_DELETE_TIMEOUT``."""
    try:
        action()
    except DATABASE_ERRORS as exc:
        if not database_unavailable(exc):
            raise _database_error(exc) from exc
        limit = rt.settings.operator_delete_timeout
        if elapsed.total_seconds() < limit:
            raise _database_error(exc) from exc
        rt.kube.event(
            ref,
            type_="Warning",
            reason="CleanupAbandoned",
            message=f"the database was unreachable for {limit:.0f}s; the resource is released "
            "and what it created in the database may remain",
        )


def _finished_with_ttl(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and (
        status.get("phase") in FINISHED_PHASES and bool(status.get("finishedAt"))
    )


@kopf.timer(GROUP, VERSION, TASKS, id="expire", interval=5, when=_finished_with_ttl)
async def expire(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    """Delete a finished task ``ttlSecondsAfterFinished`` after it finished, as Jobs do.

    The deletion is sent after this timer has returned: kopf does not release the
    finalizer of an object whose timer is still running when the deletion arrives,
    and would then wait for an unrelated later event.
    """
    finished = datetime.fromisoformat(str(status["finishedAt"]).replace("Z", "+00:00"))
    if now() >= finished + timedelta(seconds=int(spec["ttlSecondsAfterFinished"])):
        ref = _ref(TASKS, meta)
        rt = runtime_of(memo)
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, functools.partial(loop.run_in_executor, None, rt.kube.delete, ref))


# -- EventixSchedule -----------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, SCHEDULES, id="apply")
@kopf.on.create(GROUP, VERSION, SCHEDULES, id="apply")
@kopf.on.update(GROUP, VERSION, SCHEDULES, id="apply", field="spec")
def apply(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    ref = _ref(SCHEDULES, meta)
    created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
    _reconcile(
        rt,
        ref,
        patch,
        lambda: reconcile.apply_schedule_resource(
            rt.engine,
            ref,
            spec,
            generation=int(meta.get("generation", 1)),
            created_at=created,
            previous=status,
            now=now(),
            tenancy=rt.tenancy,
        ),
    )
    if rt.loop is not None:
        rt.loop.call_soon_threadsafe(rt.scheduler.poke)


@kopf.on.delete(GROUP, VERSION, SCHEDULES, id="remove")
def remove_schedule(meta: kopf.Meta, memo: kopf.Memo, runtime: timedelta, **_: Any) -> None:
    rt = runtime_of(memo)
    ref = _ref(SCHEDULES, meta)
    _delete(rt, ref, runtime, lambda: reconcile.delete_schedule_resource(rt.engine, ref))
    rt.sync.forget(ref.uid)


# -- EventixWorkerPool ---------------------------------------------------------
# Async handlers: they only touch the scaler's in-memory pools (event-loop owned);
# the scaler loop does the database and /scale work (see operator/pools.py).

POOLS = "eventixworkerpools"


def _pool_ref(meta: kopf.Meta) -> ResourceRef:
    return _ref(POOLS, meta)


@kopf.on.resume(GROUP, VERSION, POOLS, id="configure")
@kopf.on.create(GROUP, VERSION, POOLS, id="configure")
@kopf.on.update(GROUP, VERSION, POOLS, id="configure", field="spec")
async def configure_pool(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    ref = _pool_ref(meta)
    result = rt.pools.configure(
        ref,
        reconcile.pool_spec(spec, ref.namespace, rt.tenancy),
        generation=int(meta.get("generation", 1)),
        status=status,
        now=now(),
    )
    if result.status is not None:
        patch.status.update(result.status)
    for type_, reason, message in result.events:
        await asyncio.to_thread(rt.kube.event, ref, type_=type_, reason=reason, message=message)


@kopf.daemon(GROUP, VERSION, POOLS, id="hold", cancellation_timeout=10)
async def hold_pool(
    stopped: kopf.DaemonStopped,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Keep the pool in this replica's scaler while kopf lets this replica act.

    Kopf stops daemons when peering pauses a replica (and resumes them after),
    which handlers never learn: without this, a paused replica would keep
    scaling pools from a stale spec.
    """
    rt = runtime_of(memo)
    ref = _pool_ref(meta)
    generation = int(meta.get("generation", 1))
    pool = reconcile.pool_spec(spec, ref.namespace, rt.tenancy)
    rt.pools.configure(ref, pool, generation=generation, status=status, now=now())
    try:
        await stopped.wait()
    finally:
        rt.pools.forget(ref.uid)


@kopf.on.delete(GROUP, VERSION, POOLS, id="remove", optional=True)
async def remove_pool(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """Stop scaling; the target keeps the replicas it has (as after deleting an HPA).
    The dashboard's record of the pool goes too (best effort: the handler is
    optional, and a record left behind shows as not reported)."""
    await runtime_of(memo).pools.remove(str(meta.uid))


# -- EventixTrigger ------------------------------------------------------------

TRIGGERS = "eventixtriggers"


@kopf.on.resume(GROUP, VERSION, TRIGGERS, id="register")
@kopf.on.create(GROUP, VERSION, TRIGGERS, id="register")
@kopf.on.update(GROUP, VERSION, TRIGGERS, id="register", field="spec")
def register_trigger(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    ref = _ref(TRIGGERS, meta)
    _reconcile(
        rt,
        ref,
        patch,
        lambda: triggers.apply_trigger(
            rt.engine,
            ref,
            spec,
            generation=int(meta.get("generation", 1)),
            previous=status,
            now=now(),
            tenancy=rt.tenancy,
        ),
    )


@kopf.on.delete(GROUP, VERSION, TRIGGERS, id="remove")
def remove_trigger(meta: kopf.Meta, memo: kopf.Memo, runtime: timedelta, **_: Any) -> None:
    rt = runtime_of(memo)
    ref = _ref(TRIGGERS, meta)
    _delete(rt, ref, runtime, lambda: triggers.delete_trigger_resource(rt.engine, ref))
    rt.sync.forget(ref.uid)


# -- EventixQueue ----------------------------------------------------------------

QUEUES = "eventixqueues"


@kopf.on.resume(GROUP, VERSION, QUEUES, id="apply")
@kopf.on.create(GROUP, VERSION, QUEUES, id="apply")
@kopf.on.update(GROUP, VERSION, QUEUES, id="apply", field="spec")
def apply_queue(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    ref = _ref(QUEUES, meta)
    _reconcile(
        rt,
        ref,
        patch,
        lambda: queues.apply_queue(
            rt.engine,
            ref,
            spec,
            generation=int(meta.get("generation", 1)),
            previous=status,
            now=now(),
            tenancy=rt.tenancy,
        ),
    )


@kopf.on.delete(GROUP, VERSION, QUEUES, id="remove")
def remove_queue(meta: kopf.Meta, memo: kopf.Memo, runtime: timedelta, **_: Any) -> None:
    rt = runtime_of(memo)
    ref = _ref(QUEUES, meta)
    _delete(rt, ref, runtime, lambda: queues.delete_queue_resource(rt.engine, ref))
    rt.sync.forget(ref.uid)
