"""What the web dashboard reads and does, for any front end that shows the queue.

Everything here is bounded at any table size: the task list is a keyset page
(newest first, never an offset nor a total), counts stop at a cap (with the
planner's estimate beyond it), throughput is read from per-minute rows counted
once a minute has closed, and bulk actions take a batch of uids at a time. The
statements are in :mod:`.statements` (section "Dashboard").
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from eventix_operator.db import queues as queue_db
from eventix_operator.db import statements
from eventix_operator.db.errors import sqlstate
from eventix_operator.db.schedules import ScheduleRecord
from eventix_operator.db.schema import TASK_SOURCES, TASK_STATUSES
from eventix_operator.db.triggers import TriggerRecord

__all__ = [
    "TASK_SOURCES",
    "TASK_STATUSES",
    "BulkOutcome",
    "Cursor",
    "LiveWorker",
    "PoolRecord",
    "PoolSample",
    "QueueControl",
    "QueueOverview",
    "RunningTask",
    "ScheduleRun",
    "TaskFilter",
    "TaskSummary",
    "Throughput",
    "bulk_action",
    "find_by_uid_prefix",
    "list_pools",
    "list_schedules",
    "list_tasks",
    "list_triggers",
    "live_workers",
    "pool_samples",
    "queue_controls",
    "queue_overview",
    "queues",
    "recent_schedule_runs",
    "roll_up_throughput",
    "set_paused",
    "throughput",
]

#: SQLSTATE of a unique violation.
UNIQUE_VIOLATION = "23505"
#: Advisory lock key of the throughput roll-up ("evx" + 3): one process counts a minute.
ROLL_UP_LOCK = 0x65767803
#: Minutes of throughput kept (the chart shows the last hour).
THROUGHPUT_KEEP_MINUTES = 24 * 60
#: Most minutes one roll-up statement counts (a process back after a long pause
#: catches up in steps, each statement bounded by ten minutes of finished tasks).
ROLL_UP_SPAN_MINUTES = 10
#: How far back a roll-up starts when nothing was counted before (or long ago).
ROLL_UP_BACK_MINUTES = 60
#: Seconds after its end a minute is counted: transactions that set a finished_at
#: in it have committed by then.
ROLL_UP_SETTLE_SECONDS = 10
#: Most finished rows counted live after the last rolled-up minute.
LIVE_THROUGHPUT_CAP = 20_000


# -- the task list --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task as a list shows it: no args, kwargs, result or traceback."""

    uid: str
    task: str
    namespace: str
    status: str
    priority: int
    eta: datetime
    created_at: datetime
    updated_at: datetime
    attempts: int
    max_retries: int | None
    source: str
    unique_key: str | None
    worker_id: str | None
    worker_expires: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    k8s_namespace: str | None
    k8s_name: str | None
    schedule_uid: str | None
    error_type: str | None
    error_message: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TaskSummary:
        return cls(*row)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the next page starts after this row."""

    created_at: datetime
    uid: str

    def encode(self) -> str:
        return f"{self.created_at.isoformat()}_{self.uid}"

    @classmethod
    def decode(cls, value: str) -> Cursor | None:
        """The cursor a page link carries, or None for one that is not (a URL
        edited by hand starts from the newest)."""
        stamp, _, uid = value.rpartition("_")
        try:
            created = datetime.fromisoformat(stamp)
            parsed = uuid.UUID(uid)
        except ValueError:
            return None
        if created.tzinfo is None:
            return None
        return cls(created, str(parsed))


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What the task list is narrowed to; empty fields filter nothing."""

    queue: str | None = None
    statuses: tuple[str, ...] = ()
    task: str | None = None
    unique_key: str | None = None
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.statuses if s not in TASK_STATUSES]
        unknown += [s for s in self.sources if s not in TASK_SOURCES]
        if unknown:
            raise ValueError(f"unknown status or origin: {', '.join(unknown)}")


def queues(conn: Connection) -> list[str]:
    """Every queue that has tasks (one index probe per queue)."""
    return [str(n) for n in conn.execute(statements.NAMESPACES).scalars()]


def _listing(
    conn: Connection,
    where: TaskFilter,
    after: Cursor | None,
    limit: int,
    *,
    keys_only: bool,
) -> list[Any]:
    params: dict[str, Any] = {
        "statuses": list(where.statuses or TASK_STATUSES),
        "sources": list(where.sources or TASK_SOURCES),
        "limit": limit,
        "queue": where.queue,
        "task": where.task,
        "unique_key": where.unique_key,
        "since": where.since,
        "until": where.until,
    }
    if not where.task and not where.unique_key:
        params["queues"] = [where.queue] if where.queue else queues(conn)
    if after is not None:
        params["after_created"], params["after_uid"] = after.created_at, after.uid
    query = statements.task_listing(
        by_task=bool(where.task),
        by_queue=bool(where.queue),
        by_unique_key=bool(where.unique_key),
        since=where.since is not None,
        until=where.until is not None,
        after=after is not None,
        keys_only=keys_only,
    )
    return list(conn.execute(query, params).all())


def list_tasks(
    conn: Connection, where: TaskFilter, *, after: Cursor | None = None, limit: int = 50
) -> tuple[list[TaskSummary], Cursor | None]:
    """A page of the newest tasks matching ``where`` after ``after``, and the cursor
    of the next page (None: this was the last). One row more than the page is read
    to know whether there is a next page: never a count."""
    rows = _listing(conn, where, after, limit + 1, keys_only=False)
    found = [TaskSummary.from_row(r) for r in rows[:limit]]
    more = len(rows) > limit and found
    return found, Cursor(found[-1].created_at, found[-1].uid) if more else None


def find_by_uid_prefix(conn: Connection, prefix: str, *, limit: int = 20) -> list[TaskSummary]:
    """Tasks whose uid starts with ``prefix`` (hex digits, dashes ignored), found by
    a range of the primary key; [] for a prefix that is not hex."""
    digits = prefix.replace("-", "").lower()
    if not digits or len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
        return []
    low = int(digits.ljust(32, "0"), 16)
    high = (int(digits, 16) + 1) << (4 * (32 - len(digits)))
    # An all-f prefix has no upper neighbour: its range ends at the largest uid, which
    # is left out (no generator makes it).
    high = min(high, (1 << 128) - 1)
    params = {"low": str(uuid.UUID(int=low)), "high": str(uuid.UUID(int=high)), "limit": limit}
    rows = conn.execute(statements.TASKS_BY_UID_RANGE, params).all()
    return [TaskSummary.from_row(r) for r in rows[:limit]]


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What a bulk action did: rows changed, rows it did not apply to (another
    state, or owned by a resource), and where to go on when it stopped early."""

    changed: int
    skipped: int
    resume: Cursor | None = None
    uids: tuple[str, ...] = field(default=())


BULK_ACTIONS = ("retry", "cancel", "delete")


def bulk_action(conn: Connection, action: str, uids: Sequence[str]) -> BulkOutcome:
    """Retry (requeue), cancel (pending ones at once, running ones through their
    worker) or delete (not rows a resource owns) the tasks ``uids``, in the caller's
    transaction; uids that are not UUIDs are skipped."""
    wanted = sorted({str(u) for u in (_uuid(v) for v in uids) if u is not None})
    statement = {
        "retry": statements.REQUEUE_TASKS,
        "cancel": statements.CANCEL_RUNNING_TASKS,
        "delete": statements.DELETE_TASKS,
    }.get(action)
    if statement is None:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(BULK_ACTIONS)}")
    if not wanted:
        return BulkOutcome(0, len(uids))
    for attempt in itertools.count(1):
        try:
            with conn.begin_nested():
                params = {"uids": wanted, "by": "dashboard"}
                changed = [str(r.uid) for r in conn.execute(statement, params)]
            break
        except IntegrityError as exc:
            # A retried task's unique key was taken by a task enqueued since the
            # statement's snapshot: the next statement sees that task and leaves it.
            if attempt == 3 or sqlstate(exc) != UNIQUE_VIOLATION:
                raise
    return BulkOutcome(len(changed), len(uids) - len(changed), None, tuple(changed))


def matching_uids(
    conn: Connection, where: TaskFilter, *, after: Cursor | None, limit: int
) -> tuple[list[str], Cursor | None]:
    """The uids of a page of the filter's matches (for an action on everything the
    filter matches, a batch at a time), and the cursor after them."""
    rows = _listing(conn, where, after, limit, keys_only=True)
    uids = [str(r[0]) for r in rows]
    return uids, Cursor(rows[-1][1], uids[-1]) if len(rows) == limit else None


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# -- the overview ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueOverview:
    """One queue on the overview. A count equal to ``cap`` was capped: the true
    number is at least that, and ``estimates`` holds the planner's figure."""

    queue: str
    counts: dict[str, int]
    cap: int
    estimates: dict[str, int]
    due: int
    oldest_due_seconds: float | None
    done_last_hour: int = 0
    failed_last_hour: int = 0
    paused: bool = False

    def capped(self, status: str) -> bool:
        return self.counts.get(status, 0) >= self.cap

    @property
    def running(self) -> int:
        return self.counts.get("processing", 0)


def queue_overview(conn: Connection, *, cap: int) -> list[QueueOverview]:
    """Every queue with its tasks per state (up to ``cap`` each), due tasks and the
    age of the oldest; the last hour's throughput comes from :func:`throughput`."""
    names = queues(conn)
    if not names:
        return []
    params = {"queues": names, "statuses": list(TASK_STATUSES), "cap": cap}
    counts: dict[str, dict[str, int]] = {n: {} for n in names}
    for r in conn.execute(statements.QUEUE_COUNTS, params):
        counts[r.queue][r.status] = int(r.n)
    estimates: dict[str, dict[str, int]] = {n: {} for n in names}
    if any(c >= cap for per in counts.values() for c in per.values()):
        for r in conn.execute(statements.QUEUE_STATUS_ESTIMATES):
            if r.queue in estimates:
                estimates[r.queue][r.status] = int(r.estimate)
    due = {
        r.queue: (int(r.due), None if r.oldest_due_seconds is None else float(r.oldest_due_seconds))
        for r in conn.execute(statements.QUEUE_DUE, {"queues": names, "cap": cap})
    }
    paused = {r.name for r in conn.execute(statements.QUEUE_SETTINGS_ROWS) if r.paused}
    return [
        QueueOverview(n, counts[n], cap, estimates[n], due[n][0], due[n][1], paused=n in paused)
        for n in names
    ]


# -- queue settings ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueControl:
    """A queue as the Queues page shows it: its settings (the defaults, unpaused and
    unlimited, when it has none: ``updated_at`` is then None) and its figures, each
    counted up to ``cap`` as the overview counts them."""

    name: str
    paused: bool
    concurrency_limit: int | None
    rate_count: int | None
    rate_per_seconds: float | None
    retain_succeeded_seconds: int | None
    retain_failed_seconds: int | None
    k8s_namespace: str | None
    k8s_name: str | None
    k8s_uid: str | None
    updated_at: datetime | None
    due: int
    running: int
    oldest_due_seconds: float | None
    cap: int

    @property
    def configured_by(self) -> str | None:
        """``namespace/name`` of the EventixQueue that configures the queue, if one."""
        return f"{self.k8s_namespace}/{self.k8s_name}" if self.k8s_name else None


#: What a queue without a settings row has: unpaused, unlimited, its tasks' retention.
NO_SETTINGS: dict[str, Any] = {
    "paused": False,
    **dict.fromkeys(statements.QUEUE_SETTINGS[1:]),
    **dict.fromkeys(("k8s_namespace", "k8s_name", "k8s_uid", "updated_at")),
}


def queue_controls(conn: Connection, *, cap: int) -> list[QueueControl]:
    """Every queue that has tasks or settings, by name, with its settings and its due
    and running tasks (up to ``cap`` each) and the age of the oldest due one."""
    settings = {str(r.name): r for r in conn.execute(statements.QUEUE_SETTINGS_ROWS)}
    names = sorted(set(queues(conn)) | set(settings))
    if not names:
        return []
    params = {"queues": names, "statuses": ["processing"], "cap": cap}
    running = {str(r.queue): int(r.n) for r in conn.execute(statements.QUEUE_COUNTS, params)}
    due = {
        str(r.queue): (
            int(r.due),
            None if r.oldest_due_seconds is None else float(r.oldest_due_seconds),
        )
        for r in conn.execute(statements.QUEUE_DUE, {"queues": names, "cap": cap})
    }
    found: list[QueueControl] = []
    for name in names:
        row = settings.get(name)
        values = dict(row._mapping) if row is not None else {"name": name, **NO_SETTINGS}
        count, oldest = due.get(name, (0, None))
        found.append(
            QueueControl(
                **values,
                due=count,
                running=running.get(name, 0),
                oldest_due_seconds=oldest,
                cap=cap,
            )
        )
    return found


def set_paused(conn: Connection, name: str, paused: bool) -> str | None:
    """Pause or resume ``name`` (:func:`.queues.pause`, :func:`.queues.resume`) unless
    an EventixQueue configures it; then nothing changes and the answer is that
    resource, ``namespace/name``.

    The CLI and the REST API change such a queue anyway (an emergency override, until
    the resource's spec applies again); the dashboard leaves what Git declares to Git,
    as it leaves a schedule's ``suspend``. The row stays locked until the commit, so an
    operator applying a resource meanwhile applies after this change, not under it
    (a queue without a row yet has nothing to lock: a resource created in the same
    instant may find it paused, as after ``eventix queue pause``)."""
    owner = conn.execute(statements.LOCK_QUEUE_OWNER, {"name": name}).first()
    if owner is not None and owner.k8s_name:
        return f"{owner.k8s_namespace}/{owner.k8s_name}"
    (queue_db.pause if paused else queue_db.resume)(conn, name)
    return None


@dataclass(frozen=True, slots=True)
class RunningTask:
    uid: str
    task: str
    queue: str
    attempts: int
    started_at: datetime | None
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class LiveWorker:
    """A worker that holds a live lease: its id, how many tasks it runs, the first
    of them (oldest first) and when its last lease runs out."""

    worker_id: str
    running: list[RunningTask]
    count: int
    lease_until: datetime


#: Running tasks the overview reads at most to list live workers.
LIVE_TASKS_READ = 10_000


def live_workers(
    conn: Connection, *, per_worker: int = 10, limit: int = LIVE_TASKS_READ
) -> tuple[list[LiveWorker], bool]:
    """Workers with a live lease (the only trace a worker leaves in the database;
    heartbeats renew it), each with its count of running tasks and the first
    ``per_worker`` of them; True when the ``limit`` of running tasks read was
    reached (the counts are then lower bounds)."""
    rows = conn.execute(statements.LIVE_LEASES, {"limit": limit, "per_worker": per_worker}).all()
    workers: dict[str, LiveWorker] = {}
    for r in rows:
        worker = workers.get(r.worker_id)
        if worker is None:
            worker = LiveWorker(r.worker_id, [], r.tasks_running, r.lease_until)
            workers[r.worker_id] = worker
        worker.running.append(
            RunningTask(r.uid, r.task, r.namespace, r.attempts, r.started_at, r.worker_expires)
        )
    return list(workers.values()), bool(rows) and rows[0].tasks_read >= limit


# -- throughput ----------------------------------------------------------------------------


def roll_up_throughput(conn: Connection, *, lock_key: int = ROLL_UP_LOCK) -> int:
    """Count finished tasks of the closed minutes not counted yet into
    ``eventix_throughput`` (one statement per ten minutes, in the caller's
    transaction; commit between calls to keep each short) and drop minutes past
    the day kept. Returns the minutes counted; 0 when none was left or another
    process holds the roll-up lock."""
    rows = conn.execute(
        statements.ROLL_UP_THROUGHPUT,
        {
            "lock_key": lock_key,
            "span": ROLL_UP_SPAN_MINUTES,
            "back": ROLL_UP_BACK_MINUTES,
            "settle": ROLL_UP_SETTLE_SECONDS,
        },
    )
    minutes = len({r.minute for r in rows})
    if minutes:
        conn.execute(statements.PURGE_THROUGHPUT, {"keep": THROUGHPUT_KEEP_MINUTES})
    return minutes


@dataclass
class Throughput:
    """Done and failed tasks per minute, per queue (``''``: all of them), oldest
    minute first. ``partial``: the newest minutes were counted live and stopped at
    a cap, so they are lower than the truth."""

    minutes: list[datetime]
    done: dict[str, list[int]]
    failed: dict[str, list[int]]
    partial: bool = False

    def total(self, queue: str = "") -> tuple[int, int]:
        return sum(self.done.get(queue, ())), sum(self.failed.get(queue, ()))


def throughput(conn: Connection, *, minutes: int = 60) -> Throughput:
    """The last ``minutes`` minutes, the current one included: rolled-up minutes
    from ``eventix_throughput``, the rest counted live from the finished-time
    index (up to a cap)."""
    now: datetime = conn.execute(statements.DATABASE_NOW).scalar_one()
    current = now.replace(second=0, microsecond=0)
    first = current - timedelta(minutes=minutes - 1)
    slots = [first + timedelta(minutes=i) for i in range(minutes)]
    index = {m: i for i, m in enumerate(slots)}
    done: dict[str, list[int]] = {"": [0] * minutes}
    failed: dict[str, list[int]] = {"": [0] * minutes}

    def add(minute: datetime, queue: str, d: int, f: int) -> None:
        i = index.get(minute)
        if i is None:
            return
        done.setdefault(queue, [0] * minutes)[i] += d
        failed.setdefault(queue, [0] * minutes)[i] += f

    rolled_until = first
    for r in conn.execute(statements.THROUGHPUT, {"since": first}):
        add(r.minute, r.namespace, int(r.done), int(r.failed))
        if r.namespace == "":
            rolled_until = max(rolled_until, r.minute + timedelta(minutes=1))
    partial = False
    params = {"since": rolled_until, "cap": LIVE_THROUGHPUT_CAP}
    for r in conn.execute(statements.THROUGHPUT_AFTER, params):
        add(r.minute, r.namespace, int(r.done), int(r.failed))
        add(r.minute, "", int(r.done), int(r.failed))
        partial = partial or bool(r.capped)
    return Throughput(slots, done, failed, partial)


# -- schedules, triggers, pools --------------------------------------------------------------


def list_schedules(conn: Connection, *, limit: int = 1000) -> list[ScheduleRecord]:
    rows = conn.execute(statements.LIST_SCHEDULES, {"limit": limit}).mappings()
    return [ScheduleRecord.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """A run of a schedule, as its history shows it. ``manual``: made with "run
    now", not by a tick (its time is not on a whole second, as ticks are)."""

    uid: str
    status: str
    attempts: int
    time: datetime
    started_at: datetime | None
    finished_at: datetime | None
    operator: str | None
    error_message: str | None

    @property
    def manual(self) -> bool:
        return self.time.microsecond != 0

    @property
    def lateness_seconds(self) -> float | None:
        """How long after its tick (or its request) the run started."""
        if self.started_at is None:
            return None
        return (self.started_at - self.time).total_seconds()


def recent_schedule_runs(
    conn: Connection, uids: Sequence[str], *, limit: int = 10
) -> dict[str, list[ScheduleRun]]:
    """The newest ``limit`` runs of each schedule, newest first."""
    found: dict[str, list[ScheduleRun]] = {u: [] for u in uids}
    if not uids:
        return found
    params = {"uids": list(uids), "limit": limit}
    for r in conn.execute(statements.RECENT_SCHEDULE_RUNS, params):
        found[r.schedule_uid].append(
            ScheduleRun(
                r.uid,
                r.status,
                r.attempts,
                r.schedule_time,
                r.started_at,
                r.finished_at,
                r.operator,
                r.error_message,
            )
        )
    return found


def list_triggers(conn: Connection, *, limit: int = 1000) -> list[TriggerRecord]:
    rows = conn.execute(statements.LIST_TRIGGERS, {"limit": limit})
    return [TriggerRecord.from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """A worker pool as the operator's scaler last saw it (``eventix_pool``)."""

    uid: str
    k8s_namespace: str
    k8s_name: str
    target_kind: str
    target_name: str
    queues: list[str]
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
    updated_at: datetime

    @property
    def wanted_by_rule(self) -> int:
        """What the rule alone asks for: ceil((due + running) / tasksPerReplica),
        within min and max (the scaler also honours cooldown and activation)."""
        load = self.queue_depth + self.running
        wanted = -(-load // max(1, self.tasks_per_replica))
        return max(self.min_replicas, min(self.max_replicas, wanted))


@dataclass(frozen=True, slots=True)
class PoolSample:
    minute: datetime
    desired_replicas: int | None
    current_replicas: int | None
    queue_depth: int
    running: int


def list_pools(conn: Connection, *, limit: int = 1000) -> list[PoolRecord]:
    rows = conn.execute(statements.LIST_POOLS, {"limit": limit}).mappings()
    return [PoolRecord(**r) for r in rows]


def pool_samples(
    conn: Connection, uids: Sequence[str], since: datetime
) -> dict[str, list[PoolSample]]:
    """Each pool's per-minute samples since ``since``, oldest first."""
    found: dict[str, list[PoolSample]] = {u: [] for u in uids}
    if not uids:
        return found
    for r in conn.execute(statements.POOL_SAMPLES, {"uids": list(uids), "since": since}):
        found[r.pool_uid].append(
            PoolSample(r.minute, r.desired_replicas, r.current_replicas, r.queue_depth, r.running)
        )
    return found
