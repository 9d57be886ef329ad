"""The running task's own view of itself: :func:`current_task`.

A sync task cannot be interrupted (Python cannot stop a thread), so a cancel
reaches it as a flag it checks (docs/cancelling.md)::

    @task
    def export(rows: int) -> int:
        for n in range(rows):
            if eventix_operator.current_task().cancelled:
                return n  # or raise: either way the task is recorded cancelled
            write_row(n)
        return rows

Async tasks are cancelled by asyncio as well (``CancelledError`` at their next
``await``); the flag is set for them too.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["TaskContext", "current_task"]

T = TypeVar("T")


class TaskContext:
    """What a running task may ask about its run. Written by the worker's event
    loop, read by the task's thread: a plain attribute, set once."""

    __slots__ = ("abandoned", "cancelled", "requested_at", "uid")

    def __init__(self, uid: str | None) -> None:
        self.uid = uid
        #: True once the task's cancel was asked for (or it ran past its timeout):
        #: stop soon, by returning or raising.
        self.cancelled = False
        #: time.monotonic() of the cancel, for the worker's grace period.
        self.requested_at: float | None = None
        #: The worker recorded the task cancelled without waiting for it any longer
        #: (grace period over): whatever it returns now is dropped.
        self.abandoned = False

    def __repr__(self) -> str:
        return f"TaskContext(uid={self.uid!r}, cancelled={self.cancelled})"


_CURRENT: contextvars.ContextVar[TaskContext] = contextvars.ContextVar("eventix_task")
_OUTSIDE = TaskContext(None)


def current_task() -> TaskContext:
    """The running task's context, in the thread or asyncio task that runs it.
    Outside a worker (a task function called directly, in a unit test) a context
    that is never cancelled, so the same code runs there unchanged."""
    return _CURRENT.get(_OUTSIDE)


def run_as(context: TaskContext, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func`` with ``context`` current (in this thread or task)."""
    token = _CURRENT.set(context)
    try:
        return func(*args, **kwargs)
    finally:
        _CURRENT.reset(token)


async def run_async_as(context: TaskContext, coro: Awaitable[T]) -> T:
    """Await ``coro`` with ``context`` current."""
    token = _CURRENT.set(context)
    try:
        return await coro
    finally:
        _CURRENT.reset(token)
