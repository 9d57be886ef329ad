"""Running a claimed task and turning what happened into an outcome to record.

Whatever a task does (raise, time out, return something JSON cannot hold, not
exist) ends as a :class:`Failure` of that task; nothing here raises into the
worker loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import traceback
from collections.abc import Sequence
from typing import Any

from eventix_operator.db.leases import Failure, Outcome, Success
from eventix_operator.db.payload import NotStorable, PayloadTooLarge, dump_json
from eventix_operator.db.rows import ClaimedTask
from eventix_operator.registry import Registry, TaskFunction

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


def run_sync(jobs: Sequence[tuple[ClaimedTask, TaskFunction]], payload_limit: int) -> list[Outcome]:
    """Run sync tasks one after another in the calling (pool) thread."""
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
) -> Outcome:
    """Run one task with its timeout. A sync task that times out keeps its thread
    until it returns (Python cannot stop a thread); its result is discarded."""
    started = time.monotonic()
    try:
        if fn.is_async:
            coro = fn.func(*job.args, **job.kwargs)
            result = await asyncio.wait_for(coro, job.timeout_seconds)
        else:
            future = asyncio.get_running_loop().run_in_executor(
                pool, lambda: fn.func(*job.args, **job.kwargs)
            )
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


def lookup(job: ClaimedTask, registry: Registry) -> TaskFunction | Failure:
    fn = registry.get(job.task)
    if fn is None:
        known = ", ".join(registry.names()[:20]) or "none"
        exc = TaskNotRegistered(
            f"no task named {job.task!r} is registered in this worker (known: {known})"
        )
        return failure(job, exc, retryable=False)
    return fn
