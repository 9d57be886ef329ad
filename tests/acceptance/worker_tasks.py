"""Tasks the acceptance tests run in real worker processes. Each records what it
did in a per-process file under $EVENTIX_TEST_RECORD_DIR, so a test can count
executions across processes (and across a worker killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from eventix_operator import current_task, task


def _note(line: str) -> None:
    path = Path(os.environ["EVENTIX_TEST_RECORD_DIR"]) / f"{os.getpid()}.log"
    with path.open("a") as f:
        f.write(line + "\n")


@task(name="tests.record")
def record(n: int) -> int:
    _note(f"run {n}")
    return n


@task(name="tests.sleep")
def sleep(n: int, seconds: float) -> int:
    _note(f"start {n}")
    time.sleep(seconds)
    _note(f"end {n}")
    return n


@task(name="tests.async_sleep")
async def async_sleep(n: int, seconds: float) -> int:
    _note(f"start {n}")
    await asyncio.sleep(seconds)
    _note(f"end {n}")
    return n


@task(name="tests.cooperative")
def cooperative(n: int, seconds: float) -> int:
    """A sync task that checks its cancel flag (docs/cancelling.md), the way the
    documentation shows."""
    _note(f"start {n}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if current_task().cancelled:
            _note(f"stopped {n}")
            return n
        time.sleep(0.01)
    _note(f"end {n}")
    return n


@task(name="tests.fail")
def fail(message: str = "boom") -> None:
    _note("fail")
    raise ValueError(message)


@task(name="tests.fail_once")
def fail_once(key: str) -> str:
    """Fails the first time it runs for ``key`` (in this record directory), then works:
    a task that a retry makes succeed."""
    marker = Path(os.environ["EVENTIX_TEST_RECORD_DIR"]) / f"failed-once-{key}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"first run of {key} fails")
    return f"{key} made it"


@task(name="tests.unserialisable")
def unserialisable() -> object:
    return object()


#: What tests.bad returns or raises, by kind: outcomes PostgreSQL or JSON cannot
#: hold as they are.
BAD_RESULTS = {
    "nul": lambda: {"a": [1, 2, "a\x00b"]},
    "nul_key": lambda: {"k\x00": 1},
    "nan": lambda: [1.0, float("nan")],
    "inf": lambda: {"x": float("inf")},
    "object": lambda: object(),
    "large": lambda: "x" * 20_000,
    "poison": lambda: "poison",  # refused by a CHECK constraint the test adds
}


@task(name="tests.bad")
def bad(kind: str) -> object:
    if kind == "raise_nul":
        raise ValueError("a\x00b")
    if kind == "raise_nul_note":
        exc = ValueError("plain")
        exc.add_note("a note with \x00 in it")
        raise exc
    return BAD_RESULTS[kind]()


@task(name="tests.span")
def span(n: int, seconds: float) -> int:
    """Records its start and end times on one line: ``span N START END``."""
    start = time.time()
    time.sleep(seconds)
    _note(f"span {n} {start:.6f} {time.time():.6f}")
    return n
