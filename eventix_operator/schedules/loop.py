"""The scheduler loop: sleep until the next tick of any schedule, fire, repeat.

It runs in the operator (every replica: the row locks and the tick key make
that safe) and in `eventix local`. Database work runs in a thread, so the
event loop it shares with kopf or the worker never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram
from sqlalchemy import Engine

from eventix_operator.db import schedules as schedule_db
from eventix_operator.db.errors import database_unavailable, log_failure
from eventix_operator.logs import get_logger
from eventix_operator.metrics import one_per_process, registry
from eventix_operator.schedules.scheduler import ScheduleFiring, fire_due

log = get_logger("eventix.scheduler")

#: How late a schedule tick was enqueued; the scheduler aims at well under a second.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)

#: Longest sleep between passes: bounds how late the first tick of a schedule
#: created on another replica can be, and how long an outage goes unnoticed.
MAX_SLEEP = 0.5


@one_per_process
def schedule_lateness() -> Histogram:
    """Seconds between a tick and the moment its task was enqueued."""
    return Histogram(
        "eventix_schedule_lateness_seconds",
        "How late schedule ticks were enqueued, from the tick instant.",
        buckets=LATENESS_BUCKETS,
        registry=registry(),
    )


@one_per_process
def schedule_missed_runs() -> Counter:
    """Due ticks a schedule did not run, by schedule ("namespace/name") and reason."""
    return Counter(
        "eventix_schedule_missed_runs",
        "Due ticks a schedule did not run: forbid (a run was still active; one per tick), "
        "catch_up (ticks lost to downtime beyond catchUp, startingDeadlineSeconds or "
        "maxCatchUpRuns; one per catch-up).",
        ["schedule", "reason"],
        registry=registry(),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class SchedulerLoop:
    def __init__(
        self,
        engine: Engine,
        *,
        payload_limit: int,
        on_firing: Callable[[ScheduleFiring], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.payload_limit = payload_limit
        self.on_firing = on_firing
        self.clock = clock
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()

    def poke(self) -> None:
        """A schedule changed in this process: look again now."""
        self.wakeup.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def fire_once(self) -> tuple[list[ScheduleFiring], datetime | None]:
        """One pass in one transaction; returns the firings and the next wake time.

        A pass that fails for any reason but an outage is done again with each
        schedule on its own, so that the one at fault stops and the others fire.
        """
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                firings = fire_due(conn, now, payload_limit=self.payload_limit)
        except Exception as exc:
            if database_unavailable(exc):
                raise
            with self.engine.begin() as conn:
                firings = fire_due(conn, now, payload_limit=self.payload_limit, isolated=True)
        with self.engine.connect() as conn:
            return firings, schedule_db.next_schedule_wake(conn)

    async def run(self) -> None:
        while not self.stopping.is_set():
            self.wakeup.clear()
            delay = MAX_SLEEP
            try:
                firings, wake = await asyncio.to_thread(self.fire_once)
            except Exception as exc:
                log_failure(log, "scheduler pass failed", exc)
            else:
                for firing in firings:
                    self._report(firing)
                if wake is not None:
                    delay = min(MAX_SLEEP, max(0.0, (wake - self.clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), delay)

    def _report(self, firing: ScheduleFiring) -> None:
        s = firing.schedule
        for tick, uid in firing.fired:
            lateness = (self.clock() - tick).total_seconds()
            schedule_lateness().observe(max(0.0, lateness))
            log.info(
                "schedule fired",
                schedule=f"{s.k8s_namespace}/{s.k8s_name}",
                tick=tick.isoformat(),
                task_uid=uid,
                lateness=round(lateness, 3),
            )
        name = f"{s.k8s_namespace}/{s.k8s_name}"
        if firing.skipped_forbid:
            schedule_missed_runs().labels(name, "forbid").inc(len(firing.skipped_forbid))
        if firing.missed:
            schedule_missed_runs().labels(name, "catch_up").inc()
        if firing.skipped_forbid:
            log.info(
                "schedule tick skipped: a run is still active (Forbid)",
                schedule=s.k8s_name,
                ticks=[t.isoformat() for t in firing.skipped_forbid],
            )
        if firing.dropped_beyond_bound:
            log.warning(
                "schedule missed more ticks than maxCatchUpRuns",
                schedule=s.k8s_name,
                max_catch_up_runs=s.max_catch_up_runs,
            )
        if self.on_firing is not None:
            self.on_firing(firing)
