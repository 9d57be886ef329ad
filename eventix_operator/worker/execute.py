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

from eventix_operator.db.leases import Failure, Outcome, Success
from eventix_operator.db.payload import NotStorable, PayloadTooLarge, dump_json
from eventix_operator.db.rows import ClaimedTask
from eventix_operator.registry import Registry, TaskFunction
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
) -> list[Outcome]:
    """Run sync tasks one after another in the calling (pool) thread."""
    if spans is not None:
        return [_traced_sync(spans, pair, payload_limit) for pair in jobs]
    outcomes: list[Outcome] = []
    for job, fn in jobs:
        try:
            result = fn.func(*job.args, **job.kwargs)
        except Exception as exc:
            outcomes.append(failure(job, exc))
        else:
            outcomes.append(success(job, result, payload_limit))
    return outcomes


async def run_one(
    job: ClaimedTask,
    fn: TaskFunction,
    pool: concurrent.futures.Executor,
    payload_limit: int,
    spans: Attempts | None = None,
) -> Outcome:
    """Run one task with its timeout. A sync task that times out keeps its thread
    until it returns (Python cannot stop a thread); its result is discarded."""
    if spans is None:
        return await _run_one(job, fn, pool, payload_limit, traced=False)
    attempt = start_attempt(spans, job)
    try:
        outcome = await _run_one(job, fn, pool, payload_limit, traced=True)
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
    *,
    traced: bool,
) -> Outcome:
    started = time.monotonic()
    try:
        if fn.is_async:
            coro = fn.func(*job.args, **job.kwargs)
            result = await asyncio.wait_for(coro, job.timeout_seconds)
        else:
            call: Callable[[], Any] = functools.partial(fn.func, *job.args, **job.kwargs)
            if traced:  # the thread runs in the attempt's context, its span current
                call = functools.partial(contextvars.copy_context().run, call)
            future = asyncio.get_running_loop().run_in_executor(pool, call)
            result = await asyncio.wait_for(future, job.timeout_seconds)
    except TimeoutError:
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
    else:
        attempt.end("error" if outcome.retry_in is None else "retry", outcome.error)


def _traced_sync(
    spans: Attempts, pair: tuple[ClaimedTask, TaskFunction], payload_limit: int
) -> Outcome:
    """One sync task, run by :func:`run_sync` inside its attempt's span."""
    attempt = start_attempt(spans, pair[0])
    try:
        [outcome] = run_sync([pair], payload_limit)
    except BaseException:  # SystemExit, KeyboardInterrupt: not an outcome of the task
        attempt.end("interrupted")
        raise
    end_attempt(attempt, outcome)
    return outcome
