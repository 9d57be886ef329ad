"""What the operator process holds besides kopf: the engine, the Kubernetes
client, the scheduler loop and the status sync, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from eventix_operator.db.engine import make_engine
from eventix_operator.db.migrate import upgrade
from eventix_operator.logs import get_logger
from eventix_operator.operator.kube import Kube, ResourceRef, load_config
from eventix_operator.operator.sync import StatusSync
from eventix_operator.schedules.loop import SchedulerLoop
from eventix_operator.schedules.scheduler import ScheduleFiring
from eventix_operator.settings import Settings

log = get_logger("eventix.operator")

#: pg_advisory_lock key of the replica that syncs status ("evx" + 1).
LEADER_LOCK = 0x65767801


class Runtime:
    def __init__(self, settings: Settings, engine: Engine, kube: Kube) -> None:
        self.settings = settings
        self.engine = engine
        self.kube = kube
        self.scheduler = SchedulerLoop(
            engine, payload_limit=settings.max_payload_bytes, on_firing=self._on_firing
        )
        self.sync = StatusSync(engine, kube)
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
        """Blocking set-up (migrations, cluster config): run it in a thread."""
        engine = make_engine(settings)
        before, after = upgrade(engine)
        if before != after:
            log.info("schema upgraded", before=before, after=after)
        load_config()
        return cls(settings, engine, Kube())

    def launch(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tasks = [
            asyncio.create_task(self.scheduler.run(), name="eventix-scheduler"),
            asyncio.create_task(self._lead(), name="eventix-status-sync"),
        ]

    async def stop(self) -> None:
        self.stopping.set()
        self.scheduler.stop()
        self.sync.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.engine.dispose()

    async def _lead(self) -> None:
        """Run status sync while holding the leader lock; another replica takes
        over within seconds when this one stops or loses its database connection."""
        while not self.stopping.is_set():
            conn: Connection | None = None
            try:
                conn = await asyncio.to_thread(self.engine.connect)
                if await asyncio.to_thread(_try_lock, conn):
                    await self._sync_while_leader(conn)
            except DBAPIError as exc:
                log.warning("leader lock connection failed", error=str(exc).splitlines()[0])
            finally:
                if conn is not None:
                    with contextlib.suppress(DBAPIError):
                        await asyncio.to_thread(conn.close)
            await self._pause(3.0)

    async def _sync_while_leader(self, conn: Connection) -> None:
        log.info("leading status sync")
        self.sync.stopping.clear()
        syncing = asyncio.create_task(self.sync.run())
        try:
            while not self.stopping.is_set():
                await self._pause(3.0)
                await asyncio.to_thread(conn.execute, text("SELECT 1"))
        finally:
            self.sync.stop()
            await syncing

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


def _try_lock(conn: Connection) -> bool:
    held: bool = conn.execute(
        text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK}
    ).scalar_one()
    return held
