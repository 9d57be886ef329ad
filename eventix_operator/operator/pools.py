"""EventixWorkerPool: worker Deployments sized on queue depth, down to zero and back.

**Who acts.** Kopf tells this replica which pools exist: handlers on create,
resume and update, and a daemon per pool whose end (deletion, exit, or a
peering pause) forgets it, so a replica that kopf paused holds no pools. Each
pool's scaler is a leadership lease (``pool-scaler:<namespace>/<name>``, see
:mod:`eventix_operator.operator.leadership`): this replica wants the leases of
the pools it knows, looks only at those it holds and checks the lease again
before it patches anything, so two replicas (peering in transition, or two
standalone ones) never both scale one pool; when the holder dies, the other
takes the pool over once the lease expires.

**When.** Each pool every ``pollingIntervalSeconds``, and at once (at most every
:data:`NOTIFY_DEBOUNCE`) when the enqueue notification names one of its queues;
a pool whose queues hold only future tasks is looked at when the first falls
due. So a pool at zero gets its first worker within a second of its first task,
where a polling autoscaler (KEDA: 30 s by default) takes up to its interval.
Where the process cannot LISTEN (a pooler, no listen URL), a cheap look for due
tasks in the held pools' queues every ``EVENTIX_POLL_ONLY_INTERVAL`` stands in
for the notification.

**What.** One query for the load of every queue due for a look, each target
read (its labels and replicas) and, when the decision (:mod:`eventix_operator.scaling`)
differs, its ``/scale`` patched; status patched when it changed, its live counters
at most every :data:`STATUS_REFRESH` seconds. What it saw and decided also goes to
the ``eventix_pool`` table (when the status changed, else at most every
:data:`RECORD_REFRESH` seconds), with a sample per minute: the dashboard reads
pools there, since the API process has no Kubernetes access.

**Whom.** Only targets that opt in, never eventix's own workloads
(:mod:`eventix_operator.scaling.targets`; refused: ``TargetNotScalable``), and never
more replicas than the operator's ceiling (``EVENTIX_OPERATOR_MAX_REPLICAS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine

from eventix_operator.db import pools as pool_db
from eventix_operator.db.errors import DATABASE_ERRORS, log_failure
from eventix_operator.db.notify import READY_CHANNEL, Listener, jittered
from eventix_operator.logs import get_logger
from eventix_operator.operator.kube import Kube, ResourceRef, Scale
from eventix_operator.operator.leadership import Leadership, pool_lease
from eventix_operator.operator.metrics import operator_metrics
from eventix_operator.operator.status import (
    invalid_pool_status,
    pool_status,
    ready_reason,
    rfc3339,
)
from eventix_operator.scaling import Decision, Load, PoolConfig, ScalerState, decide, pool_config
from eventix_operator.scaling.targets import check_target

log = get_logger("eventix.pools")

POOLS = "eventixworkerpools"
KIND = "EventixWorkerPool"
#: Shortest time between two looks at one pool when notifications keep coming.
NOTIFY_DEBOUNCE = 0.25
#: Shortest time between two status writes that change only the live counters.
STATUS_REFRESH = 2.0
#: Due tasks are counted up to this (or what the largest pool can use, if more).
DEPTH_CAP = 100_000
#: Pause before looking again after a lost database connection.
RETRY_PAUSE = 2.0
#: Shortest time between two records of an unchanged pool for the dashboard.
RECORD_REFRESH = 10.0
#: Status fields that move with every enqueue; the rest changes with decisions.
LIVE_FIELDS = frozenset({"queueDepth", "running", "busyWorkers", "currentReplicas"})

Event = tuple[str, str, str]  # (type, reason, message)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class PoolEntry:
    """A pool as this replica knows it; touched only on the event loop."""

    ref: ResourceRef
    lease: str
    generation: int
    config: PoolConfig | None
    status: dict[str, Any]  # as last written (or as found on the resource)
    state: ScalerState = field(default_factory=ScalerState)
    next_at: float = 0.0
    last_look: float = -math.inf
    written_at: float = -math.inf
    recorded_at: float = -math.inf


@dataclass(frozen=True)
class Configured:
    """What a handler writes: a status (None: nothing to write) and events."""

    status: dict[str, Any] | None
    events: list[Event]


@dataclass(frozen=True)
class Looked:
    """The outcome of one look at one pool (computed in a worker thread)."""

    uid: str
    state: ScalerState
    status: dict[str, Any]
    written: bool
    gone: bool
    next_due_in: float | None
    record: pool_db.PoolState | None = None  # what to store for the dashboard, if due


class PoolScaler:
    """``leadership`` None: this scaler acts on every pool it knows (one replica
    alone, tests); ``listener`` None: it never listens, and polls."""

    def __init__(
        self,
        engine: Engine,
        kube: Kube,
        *,
        leadership: Leadership | None = None,
        listener: Listener | None = None,
        poll_only_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
        max_replicas: int | None = None,
    ) -> None:
        self.engine = engine
        self.max_replicas = max_replicas  # the cluster-wide ceiling of every pool
        self.kube = kube
        self.leadership = leadership
        self.listener = listener
        self.poll_only_interval = poll_only_interval
        self.clock = clock
        self.wall = wall
        self.pools: dict[str, PoolEntry] = {}
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        if leadership is not None:
            leadership.on_change(self._lease_changed)

    # -- membership (from the handlers, on the event loop) ----------------------

    def configure(
        self,
        ref: ResourceRef,
        spec: Mapping[str, Any],
        *,
        generation: int,
        status: Mapping[str, Any] | None,
        now: datetime,
    ) -> Configured:
        """Add or update a pool and look at it now; an unusable spec is reported
        (the CRD rejects these already; see :mod:`eventix_operator.scaling.spec`)."""
        try:
            config: PoolConfig | None = pool_config(spec, ceiling=self.max_replicas)
            error = None
        except ValueError as exc:
            config, error = None, str(exc)
        entry = self.pools.get(ref.uid)
        if entry is None:
            lease = pool_lease(ref.namespace, ref.name)
            entry = PoolEntry(ref, lease, generation, config, dict(status or {}))
            self.pools[ref.uid] = entry
            if self.leadership is not None:
                self.leadership.want(lease)
        else:
            entry.generation, entry.config = generation, config
        entry.next_at = self.clock() if config is not None else math.inf
        self.wakeup.set()
        if error is None:
            capped = config.capped if config is not None else None
            return Configured(None, [("Warning", "ReplicasCapped", capped)] if capped else [])
        message = f"spec cannot be used: {error}"
        entry.status = invalid_pool_status(message, entry.status, generation=generation, now=now)
        return Configured(entry.status, [("Warning", "InvalidSpec", message)])

    def forget(self, uid: str) -> None:
        entry = self.pools.pop(uid, None)
        if entry is not None:
            if self.leadership is not None:
                self.leadership.unwant(entry.lease)
            operator_metrics().forget_pool(entry.ref.namespace, entry.ref.name)
            self.wakeup.set()

    async def remove(self, uid: str) -> None:
        """A deleted pool: forget it, and its record for the dashboard (best effort:
        a record left behind shows there as not reported)."""
        self.forget(uid)

        def delete() -> None:
            with self.engine.begin() as conn:
                pool_db.delete_pool(conn, uid)

        try:
            await asyncio.to_thread(delete)
        except Exception as exc:
            log_failure(log, "pool record not removed", exc)

    def poke(self, queue: str) -> None:
        """Tasks became ready in ``queue``: look at its pools now, or as soon as
        the debounce allows."""
        now = self.clock()
        for entry in self.pools.values():
            if entry.config is not None and queue in entry.config.queues:
                entry.next_at = min(entry.next_at, max(now, entry.last_look + NOTIFY_DEBOUNCE))
                self.wakeup.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    @property
    def _holder(self) -> str | None:
        return None if self.leadership is None else self.leadership.holder

    def holds(self, entry: PoolEntry) -> bool:
        """Whether this replica may scale the pool now."""
        return self.leadership is None or self.leadership.holds(entry.lease)

    def _lease_changed(self, name: str, held: bool) -> None:
        for entry in self.pools.values():
            if entry.lease == name and held and entry.config is not None:
                entry.next_at = self.clock()  # a pool just taken over: look now
                self.wakeup.set()

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Look at each pool this replica holds when it is due; listen for enqueue
        notifications (or poll for due tasks) while it holds any."""
        unsubscribe: Callable[[], None] | None = None
        poller: asyncio.Task[None] | None = None
        try:
            while not self.stopping.is_set():
                held = [e for e in self.pools.values() if self.holds(e)]
                if held and unsubscribe is None and self.listener is not None:
                    unsubscribe = self.listener.subscribe(READY_CHANNEL, self.poke, self._listening)
                elif not held and unsubscribe is not None:
                    unsubscribe()
                    unsubscribe = None
                if held and poller is None:
                    poller = asyncio.create_task(self._poll(), name="eventix-pool-poll")
                elif not held and poller is not None:
                    poller.cancel()
                    await asyncio.gather(poller, return_exceptions=True)
                    poller = None
                self.wakeup.clear()
                now = self.clock()
                due = [e for e in held if e.next_at <= now]
                if due:
                    await self._look_now(due, now)
                    continue
                nearest = min((e.next_at for e in held), default=math.inf)
                # Leases change without a wake-up when they lapse: look again soon.
                wait = nearest - self.clock()
                if self.leadership is not None:
                    wait = min(wait, self.leadership.interval)
                await self._wait(None if math.isinf(wait) else max(0.0, wait))
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if poller is not None:
                poller.cancel()
                await asyncio.gather(poller, return_exceptions=True)

    async def _look_now(self, due: list[PoolEntry], now: float) -> None:
        views = [dataclasses.replace(e) for e in due]
        for e in due:
            e.last_look, e.next_at = now, math.inf  # set again in _apply
        try:
            looked = await asyncio.to_thread(self._look, views, now)
        except Exception as exc:
            for e in due:  # look again once the database is back
                e.next_at = min(e.next_at, now + RETRY_PAUSE)
            if not log_failure(log, "pool scaler look failed; trying again", exc):
                operator_metrics().reconcile_errors.labels(KIND).inc()
            await self._wait(RETRY_PAUSE)
            return
        self._apply(looked, now)

    def _listening(self) -> None:
        """(Re)connected: what came while nobody listened is looked at now."""
        for entry in self.pools.values():
            if entry.config is not None:
                entry.next_at = min(entry.next_at, self.clock())
        self.wakeup.set()

    async def _poll(self) -> None:
        """While nothing listens: look for due tasks in the held pools' queues every
        poll-only interval, and poke those queues' pools."""
        while True:
            await asyncio.sleep(jittered(self.poll_only_interval))
            if self.listener is not None and self.listener.listening.is_set():
                continue
            held = [e.config for e in self.pools.values() if e.config and self.holds(e)]
            queues = sorted({q for config in held for q in config.queues})
            if not queues:
                continue
            try:
                due = await asyncio.to_thread(self._due_queues, queues)
            except DATABASE_ERRORS:
                continue  # the looks meet the outage and wait it out
            for queue in due:
                self.poke(queue)

    def _due_queues(self, queues: list[str]) -> list[str]:
        with self.engine.connect() as conn:
            return pool_db.due_queues(conn, queues)

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), seconds)
        self.wakeup.clear()

    def _apply(self, looked: list[Looked], now: float) -> None:
        for result in looked:
            entry = self.pools.get(result.uid)
            if entry is None:
                continue
            if result.gone:
                self.forget(result.uid)
                continue
            entry.state = result.state
            if result.written:
                entry.status, entry.written_at = result.status, now
            if result.record is not None:
                entry.recorded_at = now
            if entry.config is None:
                continue
            next_at = now + entry.config.scaling.polling_interval
            if result.next_due_in is not None:
                next_at = min(next_at, now + max(0.0, result.next_due_in) + 0.05)
            if not result.written and _differs(entry.status, result.status):
                next_at = min(next_at, entry.written_at + STATUS_REFRESH)
            entry.next_at = min(entry.next_at, next_at)

    # -- one look (in a worker thread: blocking database and API calls) ----------

    def _look(self, views: list[PoolEntry], now: float) -> list[Looked]:
        configs = [(v, v.config) for v in views if v.config is not None]
        queues = sorted({q for _, c in configs for q in c.queues})
        cap = max(
            [DEPTH_CAP]
            + [c.scaling.max_replicas * c.scaling.tasks_per_replica + 1 for _, c in configs]
        )
        try:
            with self.engine.begin() as conn:  # one transaction: now() is this look's time
                loads = pool_db.queue_loads(conn, queues, cap=cap)
        except DATABASE_ERRORS:
            operator_metrics().reconcile_errors.labels(KIND).inc()
            raise
        wall = self.wall()
        looked = [self._look_at(v, c, loads, now, wall) for v, c in configs]
        records = [r.record for r in looked if r.record is not None]
        if records:
            try:
                with conn.begin():
                    pool_db.record_pools(conn, records)
            except Exception as exc:  # the dashboard's view lags; scaling goes on
                log_failure(log, "pool state not recorded", exc)
                looked = [dataclasses.replace(r, record=None) for r in looked]
        return looked

    def _look_at(
        self,
        view: PoolEntry,
        config: PoolConfig,
        loads: dict[str, pool_db.QueueLoad],
        now: float,
        wall: datetime,
    ) -> Looked:
        ref, kind, name = view.ref, config.target_kind, config.target_name
        due, running, busy, next_due_in = pool_db.combined(
            loads[q] for q in config.queues if q in loads
        )
        # The lease is checked again before each write: one that lapsed during the
        # look leaves the pool to the replica that holds it now.
        untouched = Looked(ref.uid, view.state, view.status, False, False, next_due_in)
        if not self.holds(view):
            return untouched
        load = Load(due=due, running=running, busy_workers=busy)
        state, decision, scale = view.state, None, None
        last_scale = view.status.get("lastScaleTime")
        events: list[Event] = []
        metrics = operator_metrics()
        try:
            target = self.kube.get_target(ref.namespace, kind, name)
            refused = None if target is None else check_target(kind, name, target.labels)
            scale = None if target is None or refused else target.scale
            if scale is not None:
                decision, state = decide(config.scaling, load, scale.replicas, view.state, now)
                if decision.replicas != scale.replicas:
                    if not self.holds(view):
                        return untouched
                    if self.kube.patch_scale(ref.namespace, kind, name, decision.replicas):
                        log.info(
                            "scaled worker pool", pool=f"{ref.namespace}/{ref.name}",
                            target=f"{kind}/{name}", replicas=decision.replicas,
                            previous=scale.replicas, holder=self._holder,
                        )  # fmt: skip
                        last_scale = rfc3339(wall)
                        up = decision.replicas > scale.replicas
                        direction = "up" if up else "down"
                        metrics.scalings.labels(ref.namespace, ref.name, direction).inc()
                        events.append(_scaled(config, scale, decision))
                    else:
                        scale, decision, state = None, None, view.state
            if scale is not None:
                metrics.current_replicas.labels(ref.namespace, ref.name).set(scale.current)
            if decision is not None:
                metrics.desired_replicas.labels(ref.namespace, ref.name).set(decision.replicas)
                note = f"; {config.capped}" if config.capped else ""
                ready = (True, "Scaling", f"{kind} {name} is scaled on queue depth{note}")
            elif refused is not None:
                ready = (False, "TargetNotScalable", refused)
            else:
                message = f"{kind} {name} does not exist in namespace {ref.namespace}"
                ready = (False, "TargetNotFound", message)
        except ApiException as exc:
            metrics.reconcile_errors.labels(KIND).inc()
            state, decision = view.state, None
            ready = (False, "ScaleFailed", f"cannot scale {kind} {name}: {exc.status} {exc.reason}")
        status = pool_status(
            config,
            load,
            scale,
            decision,
            ready=ready,
            previous=view.status,
            generation=view.generation,
            last_scale=last_scale,
            now=wall,
        )
        if not ready[0] and ready_reason(view.status) != ready[1]:
            events.append(("Warning", ready[1], ready[2]))
        written, gone = False, False
        if not self.holds(view):
            return dataclasses.replace(untouched, state=state)
        if _differs(view.status, status) and (
            _differs(view.status, status, ignore=LIVE_FIELDS)
            or now - view.written_at >= STATUS_REFRESH
        ):
            gone = not self.kube.patch_status(ref, status)
            written = not gone
        for type_, reason, message in [] if gone else events:
            self.kube.event(ref, type_=type_, reason=reason, message=message)
        record = None
        if not gone and (written or now - view.recorded_at >= RECORD_REFRESH):
            record = _pool_state(view, config, load, status, ready)
        return Looked(ref.uid, state, status, written, gone, next_due_in, record)


def _pool_state(
    view: PoolEntry,
    config: PoolConfig,
    load: Load,
    status: Mapping[str, Any],
    ready: tuple[bool, str, str],
) -> pool_db.PoolState:
    """The row the dashboard reads: the spec's rule, and the status just computed."""
    spec = config.scaling
    last = status.get("lastScaleTime")
    return pool_db.PoolState(
        uid=view.ref.uid,
        k8s_namespace=view.ref.namespace,
        k8s_name=view.ref.name,
        target_kind=config.target_kind,
        target_name=config.target_name,
        queues=config.queues,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        tasks_per_replica=spec.tasks_per_replica,
        activation_tasks=spec.activation_tasks,
        cooldown_seconds=spec.cooldown,
        desired_replicas=status.get("desiredReplicas"),
        current_replicas=status.get("currentReplicas"),
        queue_depth=load.due,
        running=load.running,
        busy_workers=load.busy_workers,
        ready=ready[0],
        reason=ready[1],
        message=ready[2],
        last_scale_time=None if not last else datetime.fromisoformat(last.replace("Z", "+00:00")),
    )


def _scaled(config: PoolConfig, scale: Scale, decision: Decision) -> Event:
    return (
        "Normal",
        "Scaled",
        f"{config.target_kind} {config.target_name} scaled from {scale.replicas} to "
        f"{decision.replicas}: {'; '.join(decision.reasons)}",
    )


def _differs(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: frozenset[str] = frozenset()
) -> bool:
    return any(old.get(k) != v for k, v in new.items() if k not in ignore)
