"""The worker: claim due tasks, run them, record what happened.

The main loop only claims; ``concurrency`` slot coroutines run what it claimed;
side tasks record outcomes in batches, renew leases, listen for new work and
clean up. A database outage pauses claiming and recording and resumes them;
outcomes wait in memory meanwhile, and leases keep other workers off the tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from eventix_operator.db.errors import database_unavailable, first_line, log_failure
from eventix_operator.db.leases import PURGE_BATCH, Cancelled, Failure, LeaseStore
from eventix_operator.db.notify import (
    CANCEL_CHANNEL,
    READY_CHANNEL,
    Listener,
    due_queues,
    due_queues_and_rate_window,
    jittered,
    wait_for_work,
)
from eventix_operator.db.rows import ClaimedTask
from eventix_operator.logs import get_logger
from eventix_operator.registry import Registry, TaskFunction
from eventix_operator.running import TaskContext
from eventix_operator.tracing import attempts
from eventix_operator.worker.execute import Outcome, lookup, run_one, run_sync
from eventix_operator.worker.metrics import worker_metrics

LOGGER = "eventix.worker"
log = get_logger(LOGGER)

#: Prefetch covers this many seconds of work per slot, so fast tasks are claimed
#: in batches while slow tasks are never hoarded away from other workers.
PREFETCH_SECONDS = 0.1

#: One thread hand-off carries about this many seconds of quick sync tasks.
HANDOFF_SECONDS = 0.02

#: Seconds after a full rate window frees that a held-back worker claims: the
#: database's clock and ours tick apart by a little.
RATE_WINDOW_MARGIN = 0.003


#: The context of a job that never ran (no such task registered).
_IDLE = TaskContext(None)


def _cancelled(
    jobs: list[ClaimedTask], outcomes: list[Outcome], contexts: list[TaskContext]
) -> tuple[list[ClaimedTask], list[Outcome]]:
    """What to record of tasks that ran when their cancel came: ``cancelled``,
    whatever they returned or raised (they most likely stopped because of it); and
    nothing of those already recorded cancelled when the grace period ran out."""
    kept_jobs: list[ClaimedTask] = []
    kept: list[Outcome] = []
    for job, outcome, context in zip(jobs, outcomes, contexts, strict=True):
        if context.abandoned:
            log.info("a task cancelled past its grace period returned; dropped", uid=job.uid)
            continue
        if context.requested_at is not None and not isinstance(outcome, Cancelled):
            outcome = Cancelled(job.uid)
        kept_jobs.append(job)
        kept.append(outcome)
    return kept_jobs, kept


def make_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerConfig:
    queues: Sequence[str] = ("default",)
    concurrency: int = 10
    batch_size: int = 200
    lease_seconds: float = 30.0
    poll_interval: float = 2.0
    poll_only_interval: float = 0.2
    shutdown_grace: float = 25.0
    #: Seconds a cancelled task has to stop before it is recorded cancelled anyway.
    cancel_grace: float = 5.0
    #: Seconds between looks for cancels while the worker cannot LISTEN.
    cancel_poll_interval: float = 1.0
    purge_interval: float = 60.0
    payload_limit: int = 1_000_000
    burst: bool = False
    #: Seconds between the INFO lines that sum up what was run since the last one.
    progress_interval: float = 10.0
    #: One INFO line per finished task (``eventix local``, where a person watches each
    #: run); otherwise successes are DEBUG lines, and failures always WARNING lines.
    announce_tasks: bool = False


class Worker:
    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        config: WorkerConfig,
        *,
        listener: Listener | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.worker_id = worker_id or make_worker_id()
        self.store = LeaseStore(
            engine, self.worker_id, config.lease_seconds, on_refused=self._refused
        )
        self.engine = engine
        self.listener = listener  # None: never listen, poll
        self.stopping = asyncio.Event()
        self.wakeup = asyncio.Event()
        self.buffer: asyncio.Queue[ClaimedTask | None] = asyncio.Queue()
        self.running: dict[str, ClaimedTask] = {}
        # What each running task sees as current_task(); its cancel flag and state.
        self.contexts: dict[str, TaskContext] = {}
        self.runs: dict[str, asyncio.Task[Outcome]] = {}  # running async tasks
        # Cancels heard for uids not running here (yet): claimed and still buffered,
        # or (most) another worker's. Kept a while, then forgotten.
        self.early: dict[str, float] = {}
        self.outcomes: list[Outcome] = []
        self.retries = 0  # failures to be retried, counted: a burst must not miss one
        self.outcomes_ready = asyncio.Event()
        self.record_lock = asyncio.Lock()
        self.reserved = 0  # room promised to claims in flight, so that two never share it
        self.settling: set[asyncio.Task[None]] = set()  # write-backs that claim again
        self.claim_more = False
        self.held_back = False  # the last claim got nothing while tasks were due: a limit
        self.rate_frees_in: float | None = None  # then, when a full rate window lets one in
        # A limit held a claim back since the last full claim: a slot freed here is
        # claimed in the write-back that frees it (see _settle).
        self.limited = False
        self.task_seconds = math.inf  # running average of one task's duration
        self.pool = concurrent.futures.ThreadPoolExecutor(
            config.concurrency, thread_name_prefix="eventix-task"
        )
        self.stats = {"claimed": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        # Checked once: structlog would build every "task succeeded" event before
        # the level check drops it, a cost per task at tens of thousands a second.
        self.log_success = (
            log.info
            if config.announce_tasks
            else log.debug
            if logging.getLogger(LOGGER).isEnabledFor(logging.DEBUG)
            else None
        )
        self.metrics = worker_metrics()  # added to per batch, never per task
        self.metrics.track_running(lambda: len(self.running))
        self.spans = attempts()  # None unless this process traces: then a span per attempt

    def stop(self) -> None:
        """Stop claiming and drain (called from a SIGTERM/SIGINT handler)."""
        if not self.stopping.is_set():
            log.info("worker stopping", worker_id=self.worker_id, running=len(self.running))
        self.stopping.set()
        self.wakeup.set()

    async def run(self) -> None:
        cfg = self.config
        log.info(
            "worker started",
            worker_id=self.worker_id,
            queues=list(cfg.queues),
            concurrency=cfg.concurrency,
            tasks=len(self.registry),
        )
        side = [
            self._side_task("record", self._record_loop),
            self._side_task("heartbeat", self._heartbeat_loop),
            self._side_task("listen", self._listen_loop),
            self._side_task("cancels", self._cancel_loop),
            self._side_task("maintenance", self._maintenance_loop),
            self._side_task("progress", self._progress_loop),
        ]
        slots = [asyncio.create_task(self._slot()) for _ in range(cfg.concurrency)]
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()  # a reason to claim from now on is kept for _idle
                retries = self.retries
                claimed, wanted = await self._claim()
                self.claim_more = bool(claimed) and claimed == wanted
                self.limited = self.limited and not self.claim_more  # no limit held this one
                # None: the database did not answer, which says nothing about the queue
                if cfg.burst and claimed == 0 and self._held() == 0:
                    if self.outcomes or self.record_lock.locked() or self.retries != retries:
                        # A failure recorded while we claimed (or still being recorded)
                        # may be due again at once: look again once it is written.
                        await self._record_pending()
                        continue
                    log.info("queue empty, burst done", **self.stats)
                    break
                if self.claim_more and self._held() < self._capacity():
                    continue
                looked = claimed == 0 and wanted > 0 and not cfg.burst
                self.held_back = looked and await self._held_back()
                self.limited = self.limited or self.held_back
                await self._idle()
        finally:
            await self._drain(slots)
            for t in side:
                t.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            self.pool.shutdown(wait=False, cancel_futures=True)
            log.info("worker stopped", worker_id=self.worker_id, **self.stats)

    # -- claiming -----------------------------------------------------------

    def _held(self) -> int:
        return self.buffer.qsize() + len(self.running)

    def _capacity(self) -> int:
        slots = self.config.concurrency
        per_slot = int(PREFETCH_SECONDS / self.task_seconds) if self.task_seconds > 0 else 0
        return min(slots * (1 + per_slot), slots + self.config.batch_size)

    def _room(self) -> int:
        free = self._capacity() - self._held() - self.reserved
        return max(0, min(free, self.config.batch_size))

    async def _claim(self) -> tuple[int | None, int]:
        """How many tasks were claimed (None when the database could not be asked),
        of how many there was room for."""
        wanted = self._room()
        if wanted == 0:
            return 0, 0
        self.reserved += wanted
        try:
            jobs = await self.store.claim(self.config.queues, wanted)
        except Exception as exc:
            if not database_unavailable(exc):
                raise  # our claim itself is wrong (a queue name the database refuses)
            jobs, error = None, first_line(exc)
        finally:
            self.reserved -= wanted
        if jobs is None:
            log.warning("claim failed, database unavailable", error=error)
            await self._sleep(min(self.config.poll_interval, 1.0))
            return None, wanted
        self._take(jobs)
        return len(jobs), wanted

    def _take(self, jobs: list[ClaimedTask]) -> None:
        for job in jobs:
            self.buffer.put_nowait(job)
        self.stats["claimed"] += len(jobs)
        if jobs:
            self.metrics.claimed.inc(len(jobs))

    # -- running --------------------------------------------------------------

    async def _slot(self) -> None:
        """Run buffered tasks until stopped."""
        while (job := await self.buffer.get()) is not None:
            fn = lookup(job, self.registry, self.spans)
            if isinstance(fn, Failure):
                self._finish([job], [fn], 0.0)
                continue
            started = time.monotonic()
            context = self._begin(job)
            if fn.is_async or job.timeout_seconds is not None:
                batch = [job]
                outcomes = [await self._run_one(job, fn, context)]
            else:
                pairs = [(job, fn), *self._more_sync_jobs()]
                batch = [j for j, _ in pairs]
                contexts = [self.contexts[j.uid] for j in batch]
                outcomes = await asyncio.get_running_loop().run_in_executor(
                    self.pool, run_sync, pairs, self.config.payload_limit, self.spans, contexts
                )
            for j in batch:
                self.running.pop(j.uid, None)
            self._finish(batch, outcomes, (time.monotonic() - started) / len(batch))

    def _more_sync_jobs(self) -> list[tuple[ClaimedTask, TaskFunction]]:
        """Quick sync tasks to run in the same thread hand-off, when the buffer holds
        more than the slots can take: one hand-off costs as much as a no-op task.

        Tasks that take microseconds go in hand-offs of :data:`HANDOFF_SECONDS` of work,
        so that one thread runs them while the others wait: ten threads taking turns
        at the GIL for them would also keep the event loop waiting for it, each claim
        and write-back a millisecond late (profiled: a quarter of the worker's CPU).
        Slower tasks, which wait on I/O, still spread over every slot."""
        pairs: list[tuple[ClaimedTask, TaskFunction]] = []
        waiting = self.buffer.qsize()
        if math.isinf(self.task_seconds):  # nothing measured yet
            extra = min(32, waiting // self.config.concurrency)
        else:
            extra = min(waiting, int(HANDOFF_SECONDS / max(self.task_seconds, 1e-6)))
        while len(pairs) < extra and not self.buffer.empty():
            job = self.buffer.get_nowait()
            if job is None:
                self.buffer.put_nowait(None)  # a stop marker: leave it for the loop
                break
            fn = lookup(job, self.registry, self.spans)
            if isinstance(fn, Failure):
                self._finish([job], [fn], 0.0)
                continue
            if fn.is_async or job.timeout_seconds is not None:
                self.buffer.put_nowait(job)  # runs on its own in a later turn
                break
            self._begin(job)
            pairs.append((job, fn))
        return pairs

    def _begin(self, job: ClaimedTask) -> TaskContext:
        """The task is running from now on: its context, cancelled already if its
        cancel was heard while it waited in the buffer."""
        context = TaskContext(job.uid)
        self.running[job.uid] = job
        self.contexts[job.uid] = context
        if self.early and self.early.pop(job.uid, None) is not None:
            self._cancel(job.uid)
        return context

    async def _run_one(self, job: ClaimedTask, fn: TaskFunction, context: TaskContext) -> Outcome:
        """:func:`run_one`; an async task in an asyncio task of its own, which a
        cancel cancels (the slot itself stays: its cancellation means shutdown)."""
        if context.cancelled:
            return Cancelled(job.uid)  # cancelled before it started
        limit = self.config.payload_limit
        if not fn.is_async:
            return await run_one(job, fn, self.pool, limit, self.spans, context)
        run = asyncio.create_task(run_one(job, fn, self.pool, limit, self.spans, context))
        self.runs[job.uid] = run
        try:
            return await run
        except asyncio.CancelledError:
            slot = asyncio.current_task()
            if context.requested_at is not None and slot is not None and not slot.cancelling():
                return Cancelled(job.uid)
            raise
        finally:
            self.runs.pop(job.uid, None)

    def _finish(self, jobs: list[ClaimedTask], outcomes: list[Outcome], seconds: float) -> None:
        contexts = [self.contexts.pop(j.uid, _IDLE) for j in jobs]
        if any(c.requested_at is not None for c in contexts):
            jobs, outcomes = _cancelled(jobs, outcomes, contexts)
        if self.limited and not self.stopping.is_set():
            settle = asyncio.create_task(self._settle(outcomes))
            self.settling.add(settle)
            settle.add_done_callback(self.settling.discard)
        else:
            self.outcomes.extend(outcomes)
            self.outcomes_ready.set()
        self.metrics.durations.observe(seconds, len(outcomes))
        for job, o in zip(jobs, outcomes, strict=True):
            if isinstance(o, Cancelled):
                log.info("task cancelled", uid=o.uid, task=job.task, attempt=job.attempts)
            elif isinstance(o, Failure):
                log.warning("task failed", uid=o.uid, task=job.task, error=o.error["message"][:500],
                            error_type=o.error["type"], attempt=job.attempts,
                            retry_in=o.retry_in)  # fmt: skip
                if o.retry_in is not None:
                    self.retries += 1
                    # Our own retries are due at a known time: claim then, not at the next poll.
                    asyncio.get_running_loop().call_later(o.retry_in + 0.01, self.wakeup.set)
            elif self.log_success is not None and not isinstance(o, Cancelled):
                self.log_success("task succeeded", uid=o.uid, task=job.task,
                                 seconds=round(seconds, 4))  # fmt: skip
        if seconds > 0:
            self.task_seconds = (
                seconds
                if math.isinf(self.task_seconds)
                else 0.8 * self.task_seconds + 0.2 * seconds
            )
        held = self._held()
        if self.limited:
            return  # the write-back claims: before it, the slot is not free yet
        if held == 0 or (self.claim_more and held <= self._capacity() // 2):
            self.wakeup.set()  # room to claim, or (in burst mode) maybe nothing left

    # -- cancelling -----------------------------------------------------------

    def _cancel(self, uid: str) -> None:
        """Stop a running task whose cancel was asked for: cancel an async one, flag
        a sync one (it sees current_task().cancelled, and does not start if it waits
        its turn in a hand-off), and record it cancelled when the grace period is over
        whether it stopped or not. A uid not running here may be a task still in the
        buffer: it is cancelled as it starts."""
        context = self.contexts.get(uid)
        if context is None:
            self._remember(uid)
            return
        if context.requested_at is not None:
            return
        context.requested_at = time.monotonic()
        context.cancelled = True
        job = self.running.get(uid)
        log.info("cancel heard, stopping task", uid=uid, task=job.task if job else None)
        run = self.runs.get(uid)
        if run is not None:
            run.cancel()
        grace = self.config.cancel_grace
        asyncio.get_running_loop().call_later(grace, self._give_up, uid, context)

    def _give_up(self, uid: str, context: TaskContext) -> None:
        """The grace period is over and the task still runs: record it cancelled now;
        whatever its thread returns later is dropped (Python cannot stop a thread)."""
        if self.contexts.get(uid) is not context:
            return  # it stopped in time
        context.abandoned = True
        grace = self.config.cancel_grace
        note = f" (it did not stop within the {grace:g}s grace period; its result is dropped)"
        self.outcomes.append(Cancelled(uid, note))
        self.outcomes_ready.set()
        log.warning("cancelled task did not stop within the grace period; recorded "
                    "cancelled, its thread runs on", uid=uid, grace=grace)  # fmt: skip

    def _remember(self, uid: str) -> None:
        now = time.monotonic()
        if len(self.early) >= 1000:  # mostly other workers' tasks: forget old ones
            kept = [(u, t) for u, t in self.early.items() if now - t < 10.0]
            self.early = dict(kept[-500:])
        self.early[uid] = now

    async def _cancel_loop(self) -> None:
        """While the worker cannot LISTEN, look every ``cancel_poll_interval``
        (jittered) for cancels of the tasks it runs, or rows gone from under them
        (the heartbeat reports cancels too, at its own pace)."""
        while True:
            await asyncio.sleep(jittered(self.config.cancel_poll_interval))
            listening = self.listener is not None and self.listener.listening.is_set()
            if listening or not self.contexts:
                continue
            await self._look_for_cancels()

    async def _look_for_cancels(self) -> None:
        try:
            stop = await self.store.to_stop(list(self.contexts))
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return
        for uid in stop:
            if uid in self.contexts:
                self._cancel(uid)

    # -- side tasks ---------------------------------------------------------

    def _side_task(self, name: str, loop: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("worker side task crashed, stopping", side_task=name)
                self.stop()

        return asyncio.create_task(guarded(), name=f"eventix-{name}")

    async def _record_loop(self) -> None:
        while True:
            await self.outcomes_ready.wait()
            await self._record_pending()

    async def _record_pending(self) -> bool:
        """Write every pending outcome; on a database error keep them and retry."""
        async with self.record_lock:
            return await self._record_locked()

    async def _record_locked(self) -> bool:
        self.outcomes_ready.clear()
        batch, self.outcomes = self.outcomes, []
        if not batch:
            return True
        try:
            done, failed = await self.store.record(batch)
        except Exception as exc:
            if not database_unavailable(exc):
                raise  # record() isolates refused outcomes: this is a bug, stop the worker
            self.outcomes[:0] = batch
            log.warning(
                "recording results failed, database unavailable, will retry",
                pending=len(self.outcomes),
                error=first_line(exc),
            )
            await self._sleep(0.5)
            self.outcomes_ready.set()
            return False
        self._recorded(batch, done, failed)
        return True

    def _recorded(self, batch: list[Outcome], done: int, failed: int) -> None:
        cancels = sum(1 for o in batch if isinstance(o, Cancelled))
        self.stats["succeeded"] += done
        self.stats["failed"] += failed - min(cancels, failed)
        self.stats["cancelled"] += min(cancels, failed)
        self.metrics.recorded(done, failed)
        if done + failed < len(batch):
            log.warning(
                "some results were not recorded: their lease had passed to another worker",
                lost=len(batch) - done - failed,
            )

    async def _settle(self, batch: list[Outcome]) -> None:
        """Record what one slot ran and, in the same transaction, claim what the starts
        it frees let in (LeaseStore.record_and_claim): held back by a queue's limit,
        a freed start is this worker's again with no wake-up between. Each slot
        settles on its own, not after the others' write-backs. Tasks claimed as the
        worker stops go back at once; in an outage the record loop takes over."""
        wanted = self._room()
        self.reserved += wanted
        try:
            if wanted == 0:
                (done, failed), jobs = await self.store.record(batch), None
            else:
                done, failed, jobs = await self.store.record_and_claim(
                    batch, self.config.queues, wanted
                )
        except Exception as exc:
            if not database_unavailable(exc):
                log.exception("recording results failed, stopping")
                self.stop()
            self.outcomes.extend(batch)  # retried by the record loop, claimed by the main
            self.outcomes_ready.set()
            self.wakeup.set()
            return
        finally:
            self.reserved -= wanted
        if self.stopping.is_set():
            await self._release(jobs or [], started=False)
        else:
            self._take(jobs or [])
        if jobs is None or len(jobs) == wanted:
            self.wakeup.set()  # not claimed here, or there may be more: the loop claims
        self._recorded(batch, done, failed)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            if self._held() or self.outcomes:
                try:
                    _, cancelled = await self.store.renew()
                    for uid in cancelled:
                        self._cancel(uid)
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    log.warning("heartbeat failed", error=first_line(exc))

    async def _progress_loop(self) -> None:
        """An INFO line per interval in which something ran: a person sees the worker
        at work and its failures (their own WARNING lines) without a line per task."""
        last = dict(self.stats)
        since = time.monotonic()
        while True:
            await asyncio.sleep(self.config.progress_interval)
            now, stats = time.monotonic(), dict(self.stats)
            done = {k: stats[k] - last[k] for k in stats}
            if any(done.values()):
                rate = (done["succeeded"] + done["failed"]) / (now - since)
                log.info("progress", **done, per_second=round(rate, 1), running=len(self.running))
            last, since = stats, now

    async def _listen_loop(self) -> None:
        """Turn NOTIFY on the ready channel into an immediate claim, and on the
        cancel channel into stopping the task (if it runs here)."""
        if self.listener is None:
            return
        queues = set(self.config.queues)

        def ready(queue: str) -> None:
            if queue in queues:
                self.wakeup.set()

        looks: set[asyncio.Task[None]] = set()

        def relisten() -> None:  # a cancel may have come while nobody listened
            if self.contexts:
                look = asyncio.get_running_loop().create_task(self._look_for_cancels())
                looks.add(look)
                look.add_done_callback(looks.discard)

        unsubscribe = self.listener.subscribe(READY_CHANNEL, ready, self.wakeup.set)
        unsubscribe_cancels = self.listener.subscribe(CANCEL_CHANNEL, self._cancel, relisten)
        try:
            await self.stopping.wait()
        finally:
            unsubscribe()
            unsubscribe_cancels()

    async def _idle(self) -> None:
        """Wait for a notification, a local reason to claim, or (while nothing
        listens) for a cheap look to find due tasks. Held back by a queue's limit,
        claim again after a short, jittered wait: a rate limit's window frees with
        no notification (docs/queues.md)."""
        if self.held_back:
            interval = jittered(self.config.poll_only_interval)
            if self.rate_frees_in is not None:  # a rate window frees first: claim then
                interval = min(interval, self.rate_frees_in + RATE_WINDOW_MARGIN)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), interval)
            return
        await wait_for_work(
            self.wakeup,
            listener=self.listener,
            poll_interval=self.config.poll_interval,
            poll_only_interval=self.config.poll_only_interval,
            look=self._due,
        )

    async def _held_back(self) -> bool:
        """Whether tasks are due though the claim got none (a limit held them back),
        and when a full rate window of theirs frees (:attr:`rate_frees_in`)."""
        try:
            due, self.rate_frees_in = await due_queues_and_rate_window(
                self.engine, self.config.queues
            )
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return True  # let the claim meet the outage, and wait it out
        return bool(due)

    async def _due(self) -> bool:
        try:
            return bool(await due_queues(self.engine, self.config.queues))
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return True  # let the claim meet the outage, and wait it out

    async def _maintenance_loop(self) -> None:
        recover_every = min(self.config.lease_seconds / 2, 10.0)
        last_purge = 0.0
        while True:
            try:
                recovered = await self.store.recover_expired_leases()
                if recovered:
                    log.warning(
                        "requeued tasks of workers whose lease expired",
                        count=len(recovered),
                        uids=[u for u, _ in recovered][:20],
                    )
                    self.wakeup.set()
                if time.monotonic() - last_purge >= self.config.purge_interval:
                    purged = await self.store.purge_expired()
                    # A full batch or more: a backlog may be left; go on at the next turn.
                    last_purge = -math.inf if purged >= PURGE_BATCH else time.monotonic()
                    if purged:
                        log.info("removed expired tasks", count=purged)
            except Exception as exc:
                log_failure(log, "maintenance failed", exc)
            await asyncio.sleep(recover_every)

    # -- shutdown -----------------------------------------------------------

    async def _drain(self, slots: list[asyncio.Task[None]]) -> None:
        """Release what has not started, let running tasks finish within the
        grace period, release what is still running, and record everything."""
        waiting: list[ClaimedTask] = []
        while not self.buffer.empty():
            job = self.buffer.get_nowait()
            if job is not None:
                waiting.append(job)
        for _ in slots:
            self.buffer.put_nowait(None)  # each idle slot takes one and returns
        await self._release(waiting, started=False)
        await asyncio.wait(slots, timeout=self.config.shutdown_grace)
        for slot in slots:
            slot.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
        if self.running:
            log.warning("grace period over, releasing running tasks", count=len(self.running))
            await self._release(list(self.running.values()), started=True)
        await asyncio.gather(*self.settling, return_exceptions=True)
        for _ in range(20):
            if await self._record_pending():
                break

    async def _release(self, jobs: list[ClaimedTask], *, started: bool) -> None:
        if not jobs:
            return
        try:
            released = await self.store.release([j.uid for j in jobs], [started] * len(jobs))
            log.info("released tasks for other workers", count=released, started=started)
        except Exception as exc:
            log.warning(
                "could not release tasks; they return when their lease expires",
                count=len(jobs),
                error=first_line(exc),
            )

    def _refused(self, uid: str, reason: str) -> None:
        log.warning("outcome refused by the database, recorded as a failure", uid=uid, error=reason)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
