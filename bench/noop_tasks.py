"""Tasks the benchmark workers run: they do nothing, so the queue's own cost shows."""

from __future__ import annotations

import time

from eventix_operator.registry import task

NOOP = "bench.noop"
NOOP_ASYNC = "bench.noop_async"
STAMP = "bench.stamp"


@task(name=NOOP)
def noop() -> None:
    """A synchronous task that returns at once (run in the worker's thread pool)."""


@task(name=NOOP_ASYNC)
async def noop_async() -> None:
    """A coroutine task that returns at once (run on the worker's event loop)."""


@task(name=STAMP)
def stamp() -> float:
    """Return the wall-clock time at which the task started, stored as its result."""
    return time.time()


SLEEP = "bench.sleep"


@task(name=SLEEP)
def sleep(seconds: float) -> list[float]:
    """Sleep (a task that holds its slot, for the queue-limit runs); returns the times it
    started and ended, as the task saw them."""
    started = time.time()
    time.sleep(seconds)
    return [started, time.time()]
