"""Queue load for worker pools and /metrics, and what the scaler saw of each pool
for the dashboard: run the statements, map rows to values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from eventix_operator.db import statements


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """One queue as a pool's scaler sees it."""

    queue: str
    due: int  # pending with eta <= now, counted up to the cap asked for
    running: int
    holders: frozenset[str]  # worker ids holding leases of running tasks
    next_due_in: float | None  # nothing due: seconds until the next pending task is


def queue_loads(conn: Connection, queues: Sequence[str], *, cap: int) -> dict[str, QueueLoad]:
    """Load of each queue (queues without tasks included, at zero)."""
    if not queues:
        return {}
    rows = conn.execute(statements.QUEUE_LOAD, {"queues": list(queues), "cap": cap}).mappings()
    return {
        r["queue"]: QueueLoad(
            queue=r["queue"],
            due=int(r["due"]),
            running=int(r["running"]),
            holders=frozenset(r["holders"] or ()),
            next_due_in=None if r["next_due_in"] is None else float(r["next_due_in"]),
        )
        for r in rows
    }


def due_queues(conn: Connection, queues: Sequence[str]) -> list[str]:
    """Which of ``queues`` hold a due task (a cheap look, for processes that cannot
    LISTEN; see :func:`eventix_operator.db.notify.due_queues`)."""
    if not queues:
        return []
    return [q for (q,) in conn.execute(statements.DUE_QUEUES, {"queues": list(queues)})]


def combined(loads: Iterable[QueueLoad]) -> tuple[int, int, int, float | None]:
    """(due, running, distinct lease holders, next due in) over a pool's queues: a
    worker serving several of them counts once."""
    due = running = 0
    holders: set[str] = set()
    next_due: float | None = None
    for load in loads:
        due += load.due
        running += load.running
        holders |= load.holders
        if load.next_due_in is not None:
            next_due = load.next_due_in if next_due is None else min(next_due, load.next_due_in)
    return due, running, len(holders), next_due


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    queue: str
    due: int
    pending: int
    running: int
    oldest_due_seconds: float | None
    done: int | None = None  # finished rows kept; None: not counted this time
    failed: int | None = None


def queue_metrics(conn: Connection, *, finished: bool) -> list[QueueMetrics]:
    """Per-queue figures for /metrics; with ``finished``, also the done and error
    rows still kept (a heavier count, so callers ask for it less often)."""
    found: dict[str, QueueMetrics] = {}
    for r in conn.execute(statements.QUEUE_METRICS).mappings():
        oldest = r["oldest_due_seconds"]
        found[r["queue"]] = QueueMetrics(
            queue=r["queue"],
            due=int(r["due"]),
            pending=int(r["pending"]),
            running=int(r["running"]),
            oldest_due_seconds=None if oldest is None else float(oldest),
        )
    if not finished:
        return list(found.values())
    counts: dict[tuple[str, str], int] = {
        (r["queue"], r["status"]): int(r["count"])
        for r in conn.execute(statements.FINISHED_COUNTS).mappings()
    }
    queues = sorted(set(found) | {q for q, _ in counts})
    return [
        QueueMetrics(
            queue=q,
            due=found[q].due if q in found else 0,
            pending=found[q].pending if q in found else 0,
            running=found[q].running if q in found else 0,
            oldest_due_seconds=found[q].oldest_due_seconds if q in found else None,
            done=counts.get((q, "done"), 0),
            failed=counts.get((q, "error"), 0),
        )
        for q in queues
    ]


# -- what the scaler saw and decided, for the dashboard ---------------------------------

#: Minutes of per-minute samples kept for each pool.
SAMPLE_KEEP_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class PoolState:
    """One pool as the scaler last looked at it (a row of ``eventix_pool``)."""

    uid: str
    k8s_namespace: str
    k8s_name: str
    target_kind: str
    target_name: str
    queues: tuple[str, ...]
    min_replicas: int
    max_replicas: int
    tasks_per_replica: int
    activation_tasks: int
    cooldown_seconds: float
    desired_replicas: int | None
    current_replicas: int | None
    queue_depth: int
    running: int
    busy_workers: int
    ready: bool
    reason: str
    message: str
    last_scale_time: datetime | None


def record_pools(conn: Connection, states: Sequence[PoolState]) -> None:
    """Store what the scaler saw of each pool and add it to the minute's sample, in
    one statement (the API process, which has no Kubernetes access, reads these)."""
    if not states:
        return
    params: dict[str, object] = {
        name: [getattr(s, name) for s in states] for name in statements.POOL_COLUMNS
    }
    params["queues"] = [",".join(s.queues) for s in states]
    params["keep_minutes"] = SAMPLE_KEEP_MINUTES
    conn.execute(statements.RECORD_POOLS, params)


def delete_pool(conn: Connection, uid: str) -> bool:
    """Forget a deleted pool's state and samples; False when there were none."""
    return conn.execute(statements.DELETE_POOL, {"uid": uid}).first() is not None
