"""Status sync: what the database knows flows back into resource status.

One pass a second reads the resource-backed rows changed since the last pass
(one query each for tasks, schedules and triggers), computes each resource's status,
and patches only those whose status differs from what was last written. Phase
changes become events. Only the replica holding the leader lease runs it
(:mod:`eventix_operator.operator.leadership`), and it checks the lease before
every write: two replicas never write the same status twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from eventix_operator.db import admin
from eventix_operator.db import queues as queue_db
from eventix_operator.db import schedules as schedule_db
from eventix_operator.db import triggers as trigger_db
from eventix_operator.db.errors import log_failure
from eventix_operator.db.triggers import TriggerRecord
from eventix_operator.logs import get_logger
from eventix_operator.operator.kube import Kube, ResourceRef
from eventix_operator.operator.status import (
    queue_status,
    schedule_status,
    task_status,
    trigger_status,
)

log = get_logger("eventix.sync")

#: Rows are stamped with their transaction's start time, and a transaction can
#: commit after a pass has read past that time; re-reading this far back (and
#: skipping statuses that did not change) catches them.
OVERLAP = timedelta(seconds=10)
#: EventixQueue figures (due, running, oldest due age) change with every task, not
#: with a row: they are read every this many seconds, not at every pass.
QUEUE_FIGURES_EVERY = timedelta(seconds=5)


class StatusSync:
    def __init__(
        self,
        engine: Engine,
        kube: Kube,
        *,
        interval: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        patch_threads: int = 8,
        may_write: Callable[[], bool] = lambda: True,
    ) -> None:
        self.engine = engine
        self.may_write = may_write  # False once this replica no longer leads
        self.kube = kube
        self.interval = interval
        self.clock = clock
        self.written: dict[str, dict[str, Any]] = {}  # resource uid -> last status written
        self.cursor: datetime | None = None
        self.queues_read: datetime | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(patch_threads, "eventix-status")
        self.stopping = asyncio.Event()

    def remember(self, uid: str, status: dict[str, Any]) -> None:
        """A handler wrote these fields; the next pass writes what differs from them."""
        self.written[uid] = status

    def forget(self, uid: str) -> None:
        self.written.pop(uid, None)

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.to_thread(self.sync_once)
            except Exception as exc:
                log_failure(log, "status sync pass failed", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.interval)

    def stop(self) -> None:
        self.stopping.set()

    def sync_once(self) -> int:
        """One pass; returns how many statuses were written."""
        with self.engine.connect() as conn:
            started = admin.database_now(conn)
            since = (self.cursor - OVERLAP) if self.cursor else datetime(1970, 1, 1, tzinfo=UTC)
            tasks = admin.changed_resource_tasks(conn, since)
            schedules = schedule_db.changed_schedules(conn, since)
            history = schedule_db.schedule_history(conn, [s.uid for s in schedules])
            triggers = trigger_db.changed_resource_triggers(conn, since)
            now = self.clock()
            queues = None
            if self.queues_read is None or now - self.queues_read >= QUEUE_FIGURES_EVERY:
                queues = [q for q in queue_db.list_queues(conn) if q.k8s_uid and q.k8s_name]
                self.queues_read = now
        jobs: list[concurrent.futures.Future[bool]] = []
        for t in tasks:
            if t.source != "k8s" or not (t.k8s_namespace and t.k8s_name and t.k8s_uid):
                continue
            ref = ResourceRef("eventixtasks", t.k8s_namespace, t.k8s_name, t.k8s_uid)
            previous = self.written.get(ref.uid)
            status = task_status(t, previous=previous, generation=None, now=now)
            if previous is None or _differs(previous, status):
                # After a restart, announce only what just happened, not every old outcome.
                announce = previous is not None or t.updated_at >= started - OVERLAP
                jobs.append(self.pool.submit(self._write_task, ref, status, previous, announce))
        for s in schedules:
            ref = ResourceRef("eventixschedules", s.k8s_namespace, s.k8s_name, s.uid)
            previous = self.written.get(ref.uid)
            status = schedule_status(s, history[s.uid], previous=previous, now=now)
            if previous is None or _differs(previous, status):
                jobs.append(self.pool.submit(self._write, ref, status))
        jobs += self._trigger_jobs(triggers, now)
        for q in queues or ():
            ref = ResourceRef(
                "eventixqueues", q.k8s_namespace or "", q.k8s_name or "", q.k8s_uid or ""
            )
            previous = self.written.get(ref.uid)
            status = queue_status(q, previous=previous, now=now)
            if previous is None or _differs(previous, status):
                jobs.append(self.pool.submit(self._write, ref, status))
        written = sum(1 for j in concurrent.futures.as_completed(jobs) if j.result())
        # A full page leaves rows unread: go on from the last one read, not from now.
        full = len(tasks) == admin.CHANGED_LIMIT
        self.cursor = min(started, tasks[-1].updated_at + OVERLAP) if full else started
        return written

    def _write(self, ref: ResourceRef, status: dict[str, Any]) -> bool:
        if not self.may_write():
            return False  # another replica leads now; this pass's writes are its
        if self.kube.patch_status(ref, status):
            self.written[ref.uid] = status
            return True
        self.forget(ref.uid)  # the resource is gone
        return False

    def _write_task(
        self,
        ref: ResourceRef,
        status: dict[str, Any],
        previous: dict[str, Any] | None,
        announce: bool,
    ) -> bool:
        if not self._write(ref, status):
            return False
        if announce and (previous or {}).get("phase") != status["phase"]:
            event = phase_event(status)
            if event is not None:
                self.kube.event(ref, type_=event[0], reason=event[1], message=event[2])
        return True

    # -- EventixTrigger -------------------------------------------------------------

    def _trigger_jobs(
        self, triggers: list[TriggerRecord], now: datetime
    ) -> list[concurrent.futures.Future[bool]]:
        jobs: list[concurrent.futures.Future[bool]] = []
        for tr in triggers:
            if not (tr.k8s_namespace and tr.k8s_name):
                continue
            ref = ResourceRef("eventixtriggers", tr.k8s_namespace, tr.k8s_name, tr.uid)
            previous = self.written.get(ref.uid)
            status = trigger_status(tr, previous=previous, now=now)
            if previous is None or _differs(previous, status):
                jobs.append(self.pool.submit(self._write_trigger, ref, status, previous))
        return jobs

    def _write_trigger(
        self, ref: ResourceRef, status: dict[str, Any], previous: dict[str, Any] | None
    ) -> bool:
        """Write a trigger's status, unless a handler wrote since this pass read the row:
        a handler that found the spec invalid has removed the row, and no later pass
        would correct a Ready=True written from the row as it was."""
        if self.written.get(ref.uid) is not previous:
            return False
        if not self._write(ref, status):
            return False
        failed = status["failedCount"] - int((previous or {}).get("failedCount") or 0)
        # Only failures this operator saw happen (not old ones, after a restart).
        if previous is not None and "failedCount" in previous and failed > 0:
            message = (status.get("lastError") or {}).get("message", "")
            self.kube.event(
                ref,
                type_="Warning",
                reason="FiringFailed",
                message=f"{failed} event(s) could not enqueue a task: {message}",
            )
        return True


def _differs(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether writing ``new`` changes anything; fields the handler owns (like
    observedGeneration) are not the sync's to compare."""
    return any(old.get(k) != v for k, v in new.items())


def phase_event(status: dict[str, Any]) -> tuple[str, str, str] | None:
    phase = status["phase"]
    attempt = status.get("attempts", 0)
    error = status.get("error") or {}
    if phase == "Running":
        return ("Normal", "Started", f"attempt {attempt} started")
    if phase == "Succeeded":
        return ("Normal", "Succeeded", f"succeeded on attempt {attempt}")
    if phase == "Retrying":
        return (
            "Warning",
            "Retrying",
            f"attempt {attempt} failed ({error.get('type')}: "
            f"{error.get('message')}); next attempt at {status.get('nextAttemptAt')}",
        )
    if phase == "Failed":
        return (
            "Warning",
            "Failed",
            f"failed after {attempt} attempt(s), no retry left: "
            f"{error.get('type')}: {error.get('message')}",
        )
    if phase == "Cancelled":
        who = str(error.get("message") or "cancelled")  # "cancelled by cli", …
        return ("Normal", "Cancelled", f"{who} after {attempt} attempt(s)" if attempt else
                f"{who} before it started")  # fmt: skip
    return None
