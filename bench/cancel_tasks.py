"""Tasks bench/cancel.py cancels while they run: one of each kind the worker stops
differently (docs/cancelling.md)."""

from __future__ import annotations

import asyncio
import time

import eventix_operator
from eventix_operator.registry import task

ASYNC = "bench.cancel_async"
COOPERATIVE = "bench.cancel_cooperative"
STUBBORN = "bench.cancel_stubborn"


@task(name=ASYNC)
async def wait_async(seconds: float) -> None:
    """Cancelled by asyncio at its await."""
    await asyncio.sleep(seconds)


@task(name=COOPERATIVE)
def wait_cooperative(seconds: float) -> None:
    """Checks its flag every millisecond, as docs/cancelling.md shows."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if eventix_operator.current_task().cancelled:
            return
        time.sleep(0.001)


@task(name=STUBBORN)
def wait_stubborn(seconds: float) -> None:
    """Ignores its flag: recorded cancelled at the end of the grace period."""
    time.sleep(seconds)
