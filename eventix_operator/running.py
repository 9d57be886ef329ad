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


_OUTSIDE = TaskContext(None)


class Current:
    """Which task this thread (or asyncio task) runs, while the block lasts: entered
    once per hand-off, its :attr:`context` set per task (an attribute write; setting
    the context variable per task cost a third of a microsecond each, at tens of
    thousands of tasks a second)."""

    __slots__ = ("_token", "context")

    def __init__(self, context: TaskContext = _OUTSIDE) -> None:
        self.context = context

    def __enter__(self) -> Current:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _CURRENT.reset(self._token)


_CURRENT: contextvars.ContextVar[Current | None] = contextvars.ContextVar(
    "eventix_task", default=None
)


def current_task() -> TaskContext:
    """The running task's context, in the thread or asyncio task that runs it.
    Outside a worker (a task function called directly, in a unit test) a context
    that is never cancelled, so the same code runs there unchanged."""
    current = _CURRENT.get()
    return _OUTSIDE if current is None else current.context


def run_as(context: TaskContext, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func`` with ``context`` current (in this thread or task)."""
    with Current(context):
        return func(*args, **kwargs)


async def run_async_as(context: TaskContext, coro: Awaitable[T]) -> T:
    """Await ``coro`` with ``context`` current."""
    with Current(context):
        return await coro
