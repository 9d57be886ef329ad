"""Schedule rows and the task rows their ticks create: run queries, map rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from eventix_operator.db import statements


@dataclass(frozen=True, slots=True)
class ScheduleDefinition:
    """A schedule as its resource declares it (the operator's reconcile input)."""

    uid: str
    k8s_namespace: str
    k8s_name: str
    generation: int
    expression: str
    time_zone: str
    suspend: bool
    concurrency_policy: str
    starting_deadline_seconds: int | None
    catch_up: str
    max_catch_up_runs: int
    successful_runs_history_limit: int
    failed_runs_history_limit: int
    template: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleRecord(ScheduleDefinition):
    """One row of ``eventix_schedule``: the definition and its firing state."""

    error: str | None
    updated_at: datetime
    last_tick: datetime | None
    next_tick: datetime | None
    #: The Ready reason of ``error`` (None: InvalidSchedule).
    error_reason: str | None = None

    @classmethod
    def from_row(cls, row: RowMapping) -> ScheduleRecord:
        return cls(**row)


def upsert_schedule(
    conn: Connection,
    definition: ScheduleDefinition,
    *,
    error: str | None,
    next_tick: datetime | None,
    error_reason: str | None = None,
) -> ScheduleRecord:
    """Store a schedule from its resource; ``error`` (with ``error_reason``, the Ready
    reason when not InvalidSchedule) stops it firing until a spec without one."""
    params = {
        **{f.name: getattr(definition, f.name) for f in fields(ScheduleDefinition)},
        "template": json.dumps(definition.template),
        "error": error,
        "error_reason": error_reason,
        "next_tick": next_tick,
    }
    row = conn.execute(statements.UPSERT_SCHEDULE, params).mappings().one()
    conn.execute(statements.NOTIFY_SCHEDULES, {"uid": definition.uid})
    return ScheduleRecord.from_row(row)


def get_schedule(conn: Connection, uid: str) -> ScheduleRecord | None:
    row = conn.execute(statements.GET_SCHEDULE, {"uid": uid}).mappings().first()
    return ScheduleRecord.from_row(row) if row else None


def find_schedules(conn: Connection, name: str, namespace: str | None) -> list[ScheduleRecord]:
    rows = conn.execute(statements.GET_SCHEDULE_BY_NAME, {"name": name, "namespace": namespace})
    return [ScheduleRecord.from_row(r) for r in rows.mappings()]


def lock_due_schedules(conn: Connection, now: datetime, limit: int = 100) -> list[ScheduleRecord]:
    rows = conn.execute(statements.LOCK_DUE_SCHEDULES, {"now": now, "limit": limit}).mappings()
    return [ScheduleRecord.from_row(r) for r in rows]


def next_schedule_wake(conn: Connection) -> datetime | None:
    value: datetime | None = conn.execute(statements.NEXT_SCHEDULE_WAKE).scalar()
    return value


def advance_schedule(
    conn: Connection, uid: str, *, last_tick: datetime | None, next_tick: datetime | None
) -> None:
    conn.execute(
        statements.ADVANCE_SCHEDULE, {"uid": uid, "last_tick": last_tick, "next_tick": next_tick}
    )


def stop_schedule(conn: Connection, uid: str, error: str) -> None:
    """Stop firing a schedule that cannot fire, with the reason in its status; a
    new generation of its spec clears it (:func:`upsert_schedule`)."""
    conn.execute(statements.STOP_SCHEDULE, {"uid": uid, "error": error})


def active_runs(conn: Connection, schedule_uid: str) -> list[tuple[str, str]]:
    rows = conn.execute(statements.ACTIVE_RUNS, {"schedule_uid": schedule_uid})
    return [(str(r.uid), r.status) for r in rows]


def cancel_pending_runs(conn: Connection, schedule_uid: str, tick: datetime) -> list[str]:
    params = {"schedule_uid": schedule_uid, "tick": tick.isoformat()}
    return [str(r.uid) for r in conn.execute(statements.CANCEL_PENDING_RUNS, params)]


def trim_run_history(conn: Connection, schedule: ScheduleRecord) -> int:
    params = {
        "schedule_uid": schedule.uid,
        "keep_ok": schedule.successful_runs_history_limit,
        "keep_failed": schedule.failed_runs_history_limit,
    }
    return conn.execute(statements.TRIM_RUN_HISTORY, params).rowcount


def delete_schedule(conn: Connection, uid: str) -> int:
    """Remove a schedule and all its runs; returns how many runs went with it."""
    runs = conn.execute(statements.DELETE_SCHEDULE_RUNS, {"uid": uid}).rowcount
    conn.execute(statements.DELETE_SCHEDULE, {"uid": uid})
    return runs


@dataclass(frozen=True, slots=True)
class Run:
    task_uid: str
    status: str
    attempts: int
    time: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class ScheduleHistory:
    runs: list[Run]
    last_success: datetime | None
    last_failure: datetime | None


def schedule_history(
    conn: Connection, uids: Sequence[str], limit: int = 10
) -> dict[str, ScheduleHistory]:
    """Recent runs and last outcome times of each schedule, for resource status."""
    history = {uid: ScheduleHistory([], None, None) for uid in uids}
    params = {"uids": list(uids), "limit": limit}
    for r in conn.execute(statements.SCHEDULE_RUNS, params):
        history[r.schedule_uid].runs.append(
            Run(str(r.uid), r.status, r.attempts, r.schedule_time, r.finished_at)
        )
    for r in conn.execute(statements.SCHEDULE_OUTCOMES, {"uids": list(uids)}):
        history[r.schedule_uid] = ScheduleHistory(
            history[r.schedule_uid].runs, r.last_success, r.last_failure
        )
    return history


def changed_schedules(conn: Connection, since: datetime) -> list[ScheduleRecord]:
    rows = conn.execute(statements.CHANGED_SCHEDULES, {"since": since}).mappings()
    return [ScheduleRecord.from_row(r) for r in rows]
