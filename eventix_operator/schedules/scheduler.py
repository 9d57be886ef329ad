"""Firing schedules: from due schedule rows to task rows, exactly once per tick.

Each tick becomes a task keyed by (schedule uid, tick instant in UTC) under a
unique index, and due schedules are locked with SKIP LOCKED, so any number of
scheduler loops (operator replicas, restarts, `eventix local`) agree: a tick is
inserted at most once, and whoever holds the lock makes sure it is inserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection

from eventix_operator.db import schedules as schedule_db
from eventix_operator.db.enqueue import insert_tasks_once
from eventix_operator.db.errors import database_unavailable, first_line
from eventix_operator.db.schedules import ScheduleDefinition, ScheduleRecord
from eventix_operator.resources import task_from_spec
from eventix_operator.schedules.catchup import plan_catch_up
from eventix_operator.schedules.ticks import CronSchedule, ScheduleError, parse_schedule
from eventix_operator.tracing import enqueuing

#: The ``operator`` of a manual run, so that a person reading the row sees where it
#: came from (its key, off the whole second, is what tells the code).
MANUAL_OPERATOR = "run now"


@dataclass
class ScheduleFiring:
    """What happened to one schedule in one pass, for events and metrics."""

    schedule: ScheduleRecord
    fired: list[tuple[datetime, str]] = field(default_factory=list)  # (tick, task uid)
    skipped_forbid: list[datetime] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    missed: bool = False
    dropped_beyond_bound: bool = False
    error: str | None = None


def apply_schedule(
    conn: Connection,
    definition: ScheduleDefinition,
    now: datetime,
    *,
    refusal: tuple[str, str] | None = None,
) -> tuple[ScheduleRecord, str | None]:
    """Store a schedule from its resource; the second value is why it cannot fire
    (an expression or time zone only the operator can judge), or None.

    ``refusal`` (reason, message): the operator refuses the schedule as a whole (a
    queue its namespace may not use): it is stored stopped, with that reason in its
    status, and fires nothing until a spec without one arrives; its history and
    last tick stay, so catchUp then applies as after a suspension.
    """
    existing = schedule_db.get_schedule(conn, definition.uid)
    if refusal is not None:
        reason, message = refusal
        record = schedule_db.upsert_schedule(
            conn, definition, error=message, error_reason=reason, next_tick=None
        )
        return record, message
    try:
        cron = parse_schedule(definition.expression, definition.time_zone)
    except ScheduleError as exc:
        record = schedule_db.upsert_schedule(conn, definition, error=str(exc), next_tick=None)
        return record, str(exc)
    since = existing.last_tick if existing and existing.last_tick else definition.created_at
    # A tick due while the operator was away is due now; the catch-up policy decides.
    next_tick = cron.next_after(since)
    return schedule_db.upsert_schedule(conn, definition, error=None, next_tick=next_tick), None


def fire_due(
    conn: Connection, now: datetime, *, payload_limit: int, isolated: bool = False
) -> list[ScheduleFiring]:
    """Fire every due tick of every schedule this caller can lock, in the caller's
    transaction; commit to make them visible (and to release the locks).

    ``isolated``: each schedule fires in a savepoint of its own, and one whose
    tick cannot be enqueued (a template the database refuses, or any error but
    an outage) is stopped with that error in its status while the others still
    fire. Two more round trips per schedule, so :meth:`SchedulerLoop.fire_once
    <eventix_operator.schedules.loop.SchedulerLoop.fire_once>` asks for it only
    to redo a pass that failed.
    """
    firings: list[ScheduleFiring] = []
    for schedule in schedule_db.lock_due_schedules(conn, now):
        if not isolated:
            firings.append(fire_schedule(conn, schedule, now, payload_limit=payload_limit))
            continue
        try:
            with conn.begin_nested():
                firings.append(fire_schedule(conn, schedule, now, payload_limit=payload_limit))
        except Exception as exc:
            if database_unavailable(exc):
                raise
            error = f"cannot fire: {first_line(exc)}"
            schedule_db.stop_schedule(conn, schedule.uid, error)
            firings.append(ScheduleFiring(schedule, error=error))
    return firings


def fire_schedule(
    conn: Connection, schedule: ScheduleRecord, now: datetime, *, payload_limit: int
) -> ScheduleFiring:
    report = ScheduleFiring(schedule)
    try:
        cron = parse_schedule(schedule.expression, schedule.time_zone)
    except ScheduleError as exc:  # stored before this version judged it bad
        report.error = str(exc)
        schedule_db.advance_schedule(conn, schedule.uid, last_tick=None, next_tick=None)
        return report
    plan = plan_catch_up(
        cron,
        last_tick=schedule.last_tick,
        created_at=schedule.created_at,
        now=now,
        policy=schedule.catch_up,
        starting_deadline_seconds=schedule.starting_deadline_seconds,
        max_catch_up_runs=schedule.max_catch_up_runs,
    )
    report.missed = plan.missed
    report.dropped_beyond_bound = plan.dropped_beyond_bound
    for tick in plan.fire:
        if schedule.concurrency_policy != "Allow" and schedule_db.active_runs(conn, schedule.uid):
            if schedule.concurrency_policy == "Forbid":
                report.skipped_forbid.append(tick)
                continue
            report.replaced.extend(schedule_db.cancel_pending_runs(conn, schedule.uid, tick))
        uid = _insert_tick(conn, schedule, tick, payload_limit)
        if uid is not None:
            report.fired.append((tick, uid))
    schedule_db.advance_schedule(
        conn, schedule.uid, last_tick=cron.latest_until(now), next_tick=plan.next_tick
    )
    schedule_db.trim_run_history(conn, schedule)
    return report


def _insert_tick(
    conn: Connection,
    schedule: ScheduleRecord,
    tick: datetime,
    payload_limit: int,
    *,
    operator: str | None = None,
) -> str | None:
    """Insert the run of one tick. With traces on, the enqueue is a span of its own
    and the run's attempts start traces of their own linked to it: a tick belongs
    to no caller's trace, and a schedule's runs are not one long trace."""
    task = task_from_spec(
        schedule.template,
        source="schedule",
        k8s_namespace=schedule.k8s_namespace,
        k8s_name=schedule.k8s_name,
        schedule_uid=schedule.uid,
        schedule_time=tick,
    )
    if operator is not None:
        task = replace(task, operator=operator)
    tick_attributes = {
        "k8s.namespace.name": schedule.k8s_namespace,
        "eventix.resource": f"EventixSchedule/{schedule.k8s_name}",
        "eventix.schedule.tick": tick.isoformat(),
        "messaging.destination.name": task.queue,
    }
    with enqueuing(task.task, link=True, attributes=tick_attributes) as context:
        task.trace_context = context
        inserted = insert_tasks_once(conn, [task], payload_limit=payload_limit)
    return task.uid if inserted else None


def backfill(
    conn: Connection,
    schedule: ScheduleRecord,
    start: datetime,
    end: datetime,
    *,
    payload_limit: int,
    limit: int = 10_000,
) -> tuple[list[datetime], list[datetime]]:
    """Create the runs of every tick in [start, end]; ticks that ran already are
    left alone through the same unique key. Returns (created, existing). A schedule
    that does not fire (its status says why) is refused: fix it first."""
    if schedule.error:
        raise ValueError(f"schedule {schedule.k8s_name} does not fire: {schedule.error}")
    cron = parse_schedule(schedule.expression, schedule.time_zone)
    created: list[datetime] = []
    existing: list[datetime] = []
    for i, tick in enumerate(_ticks_between(cron, start, end)):
        if i >= limit:
            raise ValueError(f"more than {limit} ticks in that range; narrow it")
        if _insert_tick(conn, schedule, tick, payload_limit) is None:
            existing.append(tick)
        else:
            created.append(tick)
    return created, existing


def run_now(
    conn: Connection, schedule: ScheduleRecord, now: datetime, *, payload_limit: int
) -> tuple[str, datetime]:
    """A manual run of ``schedule`` ("run now"), whatever its expression, suspension
    or concurrency policy say, as ``kubectl create job --from=cronjob/…`` does.

    It is a run like a tick's (the same template, source and schedule uid, so its
    history, history limits and status count it) keyed on the moment it was asked
    for. Ticks are whole seconds; this key never is (a microsecond is added if need
    be), so a manual run can never take a tick's place under the (schedule, tick)
    unique key, nor a tick its. Returns its task uid and key.
    """
    key = now.astimezone(UTC)
    if key.microsecond == 0:
        key += timedelta(microseconds=1)
    uid = _insert_tick(conn, schedule, key, payload_limit, operator=MANUAL_OPERATOR)
    if uid is None:  # the same microsecond twice: the run exists already
        raise ValueError(f"a manual run of {schedule.k8s_name} at {key.isoformat()} exists")
    schedule_db.trim_run_history(conn, schedule)
    return uid, key


def _ticks_between(cron: CronSchedule, start: datetime, end: datetime) -> Iterator[datetime]:
    for tick in cron.ticks_after(start - timedelta(microseconds=1)):
        if tick > end:
            return
        yield tick
