"""The pure parts of cancelling a running task: the flag a task sees, a hand-off
that skips what was cancelled before its turn, and what the worker records of a
task that stopped (or did not stop in time)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import eventix_operator
from eventix_operator.db.leases import Cancelled, Failure, Success
from eventix_operator.db.rows import ClaimedTask
from eventix_operator.registry import TaskFunction
from eventix_operator.running import TaskContext, current_task
from eventix_operator.worker.execute import run_one, run_sync
from eventix_operator.worker.worker import _cancelled


def job(uid: str, task: str = "t") -> ClaimedTask:
    return ClaimedTask(uid, task, "default", "processing", [], {}, 1, True, 5, 15, 300,
                       None, True, None)  # fmt: skip


def test_outside_a_worker_the_flag_is_never_set() -> None:
    assert eventix_operator.current_task() is current_task()
    assert current_task().cancelled is False
    assert current_task().uid is None


def test_a_hand_off_skips_tasks_cancelled_before_their_turn() -> None:
    contexts = [TaskContext("a"), TaskContext("b"), TaskContext("c")]
    seen: list[Any] = []

    def first() -> str:
        seen.append(current_task().uid)
        contexts[1].cancelled = True  # its cancel arrives while "a" runs
        contexts[1].requested_at = 1.0
        return "a"

    def other() -> str:
        seen.append(current_task().uid)
        return "other"

    pairs = [(job("a"), TaskFunction("first", first)), (job("b"), TaskFunction("o", other)),
             (job("c"), TaskFunction("o", other))]  # fmt: skip
    outcomes = run_sync(pairs, 1000, None, contexts)
    assert seen == ["a", "c"]  # "b" never started
    assert outcomes[1] == Cancelled("b")
    assert isinstance(outcomes[0], Success)
    assert isinstance(outcomes[2], Success)
    assert current_task().uid is None  # the thread's context is back to none


def test_a_task_that_stops_on_the_flag_ends_cancelled_whatever_it_returns() -> None:
    context = TaskContext("a")
    started = threading.Event()

    def cooperative() -> int:
        started.set()
        while not current_task().cancelled:
            pass
        raise RuntimeError("stopped")  # raising: still a cancel, not a failure to retry

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_sync, [(job("a"), TaskFunction("c", cooperative))], 1000,
                             None, [context])  # fmt: skip
        assert started.wait(10)
        context.requested_at = 1.0
        context.cancelled = True
        assert future.result(10) == [Cancelled("a")]


def test_an_async_task_sees_its_own_context() -> None:
    async def which() -> Any:
        await asyncio.sleep(0)
        return current_task().uid

    context = TaskContext("x")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        outcome = asyncio.run(
            run_one(job("x"), TaskFunction("w", which), pool, 1000, None, context)
        )
    assert outcome == Success("x", '"x"')


def test_what_is_recorded_of_tasks_that_ran_when_their_cancel_came() -> None:
    jobs = [job("done"), job("stopped"), job("late"), job("failed")]
    failed = Failure("failed", {"type": "E"}, 15.0)
    outcomes: list[Any] = [
        Success("done", "1"),
        Success("stopped", "2"),
        Success("late", "3"),
        failed,
    ]
    contexts = [TaskContext(j.uid) for j in jobs]
    for c in contexts[1:]:
        c.requested_at, c.cancelled = 1.0, True
    contexts[2].abandoned = True  # recorded cancelled already, at the end of its grace
    kept_jobs, kept = _cancelled(jobs, outcomes, contexts)
    assert [j.uid for j in kept_jobs] == ["done", "stopped", "failed"]
    assert kept == [Success("done", "1"), Cancelled("stopped"), Cancelled("failed")]


def test_a_resource_task_cancelled_says_by_whom_in_its_event() -> None:
    from eventix_operator.operator.sync import phase_event

    error = {"type": "Cancelled", "message": "cancelled by cli"}
    running = {"phase": "Cancelled", "attempts": 1, "error": error}
    assert phase_event(running) == ("Normal", "Cancelled", "cancelled by cli after 1 attempt(s)")
    pending = {"phase": "Cancelled", "attempts": 0, "error": error}
    assert phase_event(pending) == ("Normal", "Cancelled", "cancelled by cli before it started")
    assert phase_event({"phase": "Cancelled"})[2] == "cancelled before it started"  # type: ignore[index]
