"""What the operator process holds besides kopf: the engine, the Kubernetes
client, the scheduler loop, the status sync, the worker-pool scaler and the
metrics endpoint, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from sqlalchemy import Engine

from eventix_operator.db import pools as pool_db
from eventix_operator.db.engine import make_engine, make_read_engine
from eventix_operator.db.errors import log_failure
from eventix_operator.db.migrate import upgrade
from eventix_operator.db.notify import Listener
from eventix_operator.logs import get_logger
from eventix_operator.metrics import serve
from eventix_operator.operator.kube import Kube, ResourceRef, load_config
from eventix_operator.operator.leadership import LEADER, Leadership, make_holder_id
from eventix_operator.operator.metrics import operator_metrics
from eventix_operator.operator.pools import PoolScaler
from eventix_operator.operator.sync import StatusSync
from eventix_operator.schedules.loop import SchedulerLoop
from eventix_operator.schedules.scheduler import ScheduleFiring
from eventix_operator.settings import Settings
from eventix_operator.tenancy import TenancyPolicy
from eventix_operator.tracing import enabled as tracing_enabled

log = get_logger("eventix.operator")

#: Seconds between two reads of the queue figures for /metrics (leader only);
#: the finished-row counts, a heavier read, every FINISHED_EVERY-th time.
QUEUE_METRICS_INTERVAL = 15.0
FINISHED_EVERY = 4


class Runtime:
    def __init__(
        self, settings: Settings, engine: Engine, kube: Kube, *, holder: str | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.read_engine = make_read_engine(settings, engine)
        self.kube = kube
        self.leadership = Leadership(engine, seconds=settings.operator_lease_seconds, holder=holder)
        self.listener = Listener(settings)
        # Which queues each namespace's resources may use (docs/tenancy.md).
        self.tenancy = TenancyPolicy.from_settings(settings)
        self.scheduler = SchedulerLoop(
            engine, payload_limit=settings.max_payload_bytes, on_firing=self._on_firing
        )
        self.sync = StatusSync(engine, kube, may_write=self.leading)
        self.pools = PoolScaler(
            engine,
            kube,
            leadership=self.leadership,
            listener=self.listener,
            poll_only_interval=settings.poll_only_interval,
            max_replicas=settings.operator_max_replicas,
        )
        self.stopping = asyncio.Event()
        self.lead_changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.metrics_server: WSGIServer | None = None
        self._uncount_errors: Callable[[], None] | None = None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        """Blocking set-up (migrations, cluster config): run it in a thread."""
        engine = make_engine(settings)
        before, after = upgrade(engine)
        if before != after:
            log.info("schema upgraded", before=before, after=after)
        load_config()
        tracing_enabled()  # OpenTelemetry set up (or not) now, before any handler enqueues
        holder = make_holder_id()
        return cls(settings, engine, Kube(instance=holder), holder=holder)

    def leading(self) -> bool:
        """Whether this replica holds the leader lease (status sync, queue metrics)."""
        return self.leadership.holds(LEADER)

    def launch(self) -> None:
        log.info("tenancy", mode=self.tenancy.mode, allow=dict(self.tenancy.allow))
        self.loop = asyncio.get_running_loop()
        self._uncount_errors = operator_metrics().count_kopf_errors()
        self.metrics_server = serve(self.settings.metrics_port)
        self.leadership.on_change(lambda name, held: self.lead_changed.set())
        self.leadership.want(LEADER)
        self.tasks = [
            asyncio.create_task(self.leadership.run(), name="eventix-leadership"),
            asyncio.create_task(self.scheduler.run(), name="eventix-scheduler"),
            asyncio.create_task(self._lead(), name="eventix-status-sync"),
            asyncio.create_task(self.pools.run(), name="eventix-pool-scaler"),
            asyncio.create_task(self._queue_metrics(), name="eventix-queue-metrics"),
        ]

    async def stop(self) -> None:
        self.stopping.set()
        self.lead_changed.set()
        self.scheduler.stop()
        self.sync.stop()
        self.pools.stop()
        await asyncio.gather(*self.tasks[1:], return_exceptions=True)
        self.leadership.stop()  # last: it gives the leases back for another replica
        await self.tasks[0]
        await self.listener.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        if self._uncount_errors is not None:
            self._uncount_errors()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        self.engine.dispose()

    async def _lead(self) -> None:
        """Run status sync while this replica holds the leader lease; another
        replica takes over within about 1¼ leases when this one dies or loses its
        database, at once when it stops cleanly (it gives the lease back)."""
        while not self.stopping.is_set():
            self.lead_changed.clear()
            if not self.leading():
                await self.lead_changed.wait()
                continue
            log.info("leading status sync", holder=self.leadership.holder)
            self.sync.stopping.clear()
            syncing = asyncio.create_task(self.sync.run(), name="eventix-status-sync-passes")
            operator_metrics().leader.set(1)
            try:
                while self.leading() and not self.stopping.is_set():
                    await self.lead_changed.wait()
                    self.lead_changed.clear()
            finally:
                operator_metrics().leader.set(0)
                self.sync.stop()
                await syncing
                log.info("stopped leading status sync", holder=self.leadership.holder)

    async def _queue_metrics(self) -> None:
        """Queue figures for /metrics, read by the leader only: they describe the
        database, and one replica exporting them keeps sums across replicas true."""
        passes = 0
        while not self.stopping.is_set():
            figures: list[pool_db.QueueMetrics] | None = None
            leading = self.leading()
            if leading:
                finished = passes % FINISHED_EVERY == 0
                try:
                    figures = await asyncio.to_thread(self._read_queue_metrics, finished)
                    passes += 1
                except Exception as exc:
                    log_failure(log, "queue metrics not read", exc)
            else:
                passes = 0
            if figures is not None or not leading:
                operator_metrics().queues.update(figures)
            await self._pause(QUEUE_METRICS_INTERVAL if leading else 1.0)

    def _read_queue_metrics(self, finished: bool) -> list[pool_db.QueueMetrics]:
        with self.read_engine.connect() as conn:  # lag-tolerant: the read URL if set
            return pool_db.queue_metrics(conn, finished=finished)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _on_firing(self, firing: ScheduleFiring) -> None:
        s = firing.schedule
        ref = ResourceRef("eventixschedules", s.k8s_namespace, s.k8s_name, s.uid)
        events: list[tuple[str, str, str]] = []
        for tick, uid in firing.fired:
            events.append(("Normal", "Scheduled", f"run {uid} for {tick.isoformat()}"))
        if firing.skipped_forbid:
            events.append(
                (
                    "Normal",
                    "SkippedRun",
                    f"{len(firing.skipped_forbid)} tick(s) "
                    "skipped: a run is still active (concurrencyPolicy Forbid)",
                )
            )
        if firing.replaced:
            events.append(
                (
                    "Normal",
                    "ReplacedRun",
                    f"cancelled pending run(s) "
                    f"{', '.join(firing.replaced)} (concurrencyPolicy Replace)",
                )
            )
        if firing.dropped_beyond_bound:
            events.append(
                (
                    "Warning",
                    "MissedRuns",
                    "more ticks were missed than "
                    f"maxCatchUpRuns ({s.max_catch_up_runs}); the oldest were dropped",
                )
            )
        if firing.error:
            events.append(("Warning", "InvalidSchedule", firing.error))
        loop = asyncio.get_running_loop()
        for type_, reason, message in events:
            post = functools.partial(
                self.kube.event, ref, type_=type_, reason=reason, message=message
            )
            loop.run_in_executor(None, post)
