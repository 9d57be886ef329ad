"""Running a claimed task and turning what happened into an outcome to record.

Whatever a task does (raise, time out, return something JSON cannot hold, not
exist) ends as a :class:`Failure` of that task; nothing here raises into the
worker loop.

When the worker traces, each attempt runs inside its span (``spans``, from
:func:`eventix_operator.tracing.attempts`), which ends with the outcome: this is
the one place where attempts meet OpenTelemetry, and a worker that does not trace
passes None and runs the very code it runs without the extra.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from eventix_operator.db.leases import Cancelled, Failure, Outcome, Success
from eventix_operator.db.payload import NotStorable, PayloadTooLarge, dump_json
from eventix_operator.db.rows import ClaimedTask
from eventix_operator.registry import Registry, TaskFunction
from eventix_operator.running import Current, TaskContext, run_as, run_async_as
from eventix_operator.tracing import Attempt, Attempts

__all__ = ["Outcome", "failure", "lookup", "run_one", "run_sync", "success"]


def failure(job: ClaimedTask, exc: BaseException, *, retryable: bool = True) -> Failure:
    """A failure with Eventix's backoff, or final when retries are spent or
    retrying cannot help (``retryable=False``)."""
    delay = job.policy.after_failure(job.attempts) if retryable else None
    error = {
        "type": type(exc).__name__,
        "message": str(exc) or type(exc).__name__,
        "attempt": job.attempts,
        "traceback": "".join(traceback.format_exception(exc, limit=20))[-8000:],
    }
    return Failure(job.uid, error, delay)


class TaskNotRegistered(LookupError):
    pass


class ResultNotStorable(TypeError):
    pass


def success(job: ClaimedTask, result: Any, payload_limit: int) -> Outcome:
    try:
        text = dump_json(
            result if job.store_result else None,
            what=f"the result of {job.task}",
            root="result",
            limit=payload_limit,
        )
    except (NotStorable, PayloadTooLarge) as exc:
        # Running it again gives the same result: do not retry.
        return failure(job, ResultNotStorable(str(exc)), retryable=False)
    return Success(job.uid, text)


def run_sync(
    jobs: Sequence[tuple[ClaimedTask, TaskFunction]],
    payload_limit: int,
    spans: Attempts | None = None,
    contexts: Sequence[TaskContext] | None = None,
) -> list[Outcome]:
    """Run sync tasks one after another in the calling (pool) thread, each with its
    context current (:func:`eventix_operator.current_task`). A task cancelled before
    its turn does not start; one cancelled while it ran ends cancelled, whatever it
    returned or raised (it most likely stopped because of the cancel)."""
    if contexts is None:
        contexts = [TaskContext(job.uid) for job, _ in jobs]
    if spans is not None:
        return [
            _traced_sync(spans, pair, context, payload_limit)
            for pair, context in zip(jobs, contexts, strict=True)
        ]
    outcomes: list[Outcome] = []
    with Current() as current:
        for (job, fn), context in zip(jobs, contexts, strict=True):
            if context.cancelled:
                outcomes.append(Cancelled(job.uid))
                continue
            current.context = context
            try:
                result = fn.func(*job.args, **job.kwargs)
            except Exception as exc:
                outcomes.append(failure(job, exc))
            else:
                outcomes.append(success(job, result, payload_limit))
            if context.requested_at is not None:
                outcomes[-1] = Cancelled(job.uid)
    return outcomes


async def run_one(
    job: ClaimedTask,
    fn: TaskFunction,
    pool: concurrent.futures.Executor,
    payload_limit: int,
    spans: Attempts | None = None,
    context: TaskContext | None = None,
) -> Outcome:
    """Run one task with its timeout. A sync task that times out keeps its thread
    until it returns (Python cannot stop a thread); its result is discarded, and its
    context says ``cancelled``, so that a task that checks stops. An async task runs
    with ``context`` current; a sync one has it current in its thread."""
    context = context or TaskContext(job.uid)
    if spans is None:
        return await _run_one(job, fn, pool, payload_limit, context, traced=False)
    attempt = start_attempt(spans, job)
    try:
        outcome = await _run_one(job, fn, pool, payload_limit, context, traced=True)
    except BaseException:
        attempt.end("interrupted")  # cancelled: released or recorded by the worker
        raise
    end_attempt(attempt, outcome)
    return outcome


async def _run_one(
    job: ClaimedTask,
    fn: TaskFunction,
    pool: concurrent.futures.Executor,
    payload_limit: int,
    context: TaskContext,
    *,
    traced: bool,
) -> Outcome:
    started = time.monotonic()
    try:
        if fn.is_async:
            coro = run_async_as(context, fn.func(*job.args, **job.kwargs))
            result = await asyncio.wait_for(coro, job.timeout_seconds)
        else:
            call: Callable[[], Any] = functools.partial(
                run_as, context, fn.func, *job.args, **job.kwargs
            )
            if traced:  # the thread runs in the attempt's context, its span current
                call = functools.partial(contextvars.copy_context().run, call)
            future = asyncio.get_running_loop().run_in_executor(pool, call)
            result = await asyncio.wait_for(future, job.timeout_seconds)
    except TimeoutError:
        context.cancelled = True  # a sync task that checks stops; its thread is freed
        elapsed = time.monotonic() - started
        return failure(
            job,
            TimeoutError(
                f"{job.task} ran past its {job.timeout_seconds}s timeout ({elapsed:.1f}s)"
            ),
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        return failure(job, exc)
    return success(job, result, payload_limit)


def lookup(
    job: ClaimedTask, registry: Registry, spans: Attempts | None = None
) -> TaskFunction | Failure:
    fn = registry.get(job.task)
    if fn is None:
        known = ", ".join(registry.names()[:20]) or "none"
        exc = TaskNotRegistered(
            f"no task named {job.task!r} is registered in this worker (known: {known})"
        )
        outcome = failure(job, exc, retryable=False)
        if spans is not None:
            end_attempt(start_attempt(spans, job), outcome)
        return outcome
    return fn


# -- traces ---------------------------------------------------------------------------


def start_attempt(spans: Attempts, job: ClaimedTask) -> Attempt:
    return spans.start(job.task, job.namespace, job.uid, job.attempts, job.trace_context)


def end_attempt(attempt: Attempt, outcome: Outcome) -> None:
    if isinstance(outcome, Success):
        attempt.end("done")
    elif isinstance(outcome, Cancelled):
        attempt.end("cancelled")
    else:
        attempt.end("error" if outcome.retry_in is None else "retry", outcome.error)


def _traced_sync(
    spans: Attempts,
    pair: tuple[ClaimedTask, TaskFunction],
    context: TaskContext,
    payload_limit: int,
) -> Outcome:
    """One sync task, run by :func:`run_sync` inside its attempt's span."""
    attempt = start_attempt(spans, pair[0])
    try:
        [outcome] = run_sync([pair], payload_limit, None, [context])
    except BaseException:  # SystemExit, KeyboardInterrupt: not an outcome of the task
        attempt.end("interrupted")
        raise
    end_attempt(attempt, outcome)
    return outcome
