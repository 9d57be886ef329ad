"""Example tasks for `eventix local` and the README demo."""

from __future__ import annotations

import asyncio
import random

from eventix_operator import task


@task(name="examples.add")
def add(a: int, b: int) -> int:
    return a + b


@task(name="examples.greet")
async def greet(name: str) -> str:
    await asyncio.sleep(0.1)
    return f"hello, {name}"


@task(name="examples.flaky")
def flaky(chance: float = 0.5) -> str:
    """Fails now and then, to show retries with backoff."""
    if random.random() < chance:
        raise RuntimeError("the flaky task failed this time")
    return "made it"


@task(name="examples.report")
def report(scope: str = "daily") -> dict[str, object]:
    return {"scope": scope, "rows": random.randint(1, 100)}
