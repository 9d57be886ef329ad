"""Schedules firing on a real PostgreSQL, with an explicit clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text

from eventix_operator.db import schedules as schedule_db
from eventix_operator.resources import schedule_definition
from eventix_operator.schedules.loop import SchedulerLoop
from eventix_operator.schedules.scheduler import apply_schedule, backfill, fire_due

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
LIMIT = 1_000_000


def define(engine: Engine, name: str = "s", created: datetime = T0, **spec: Any) -> str:
    spec.setdefault("schedule", "*/2 * * * * *")
    spec.setdefault("template", {"task": "tick", "kwargs": {"from": name}})
    definition = schedule_definition(
        spec, uid=f"uid-{name}", namespace="ns", name=name, generation=1, created_at=created
    )
    with engine.begin() as conn:
        _, error = apply_schedule(conn, definition, created)
    assert error is None
    return definition.uid


def fire(engine: Engine, now: datetime) -> list[Any]:
    with engine.begin() as conn:
        return fire_due(conn, now, payload_limit=LIMIT)


def runs(engine: Engine, uid: str) -> list[tuple[datetime, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT schedule_time, status FROM eventix_task WHERE schedule_uid = :u "
                 "ORDER BY schedule_time"), {"u": uid}
        )  # fmt: skip
        return [(r[0], r[1]) for r in rows]


def test_every_tick_once_with_two_schedulers_racing(engine: Engine) -> None:
    uid = define(engine)
    errors: list[BaseException] = []

    # One clock, as real schedulers share: both fire at each step. Left to run free on
    # a loaded machine, one thread's "now" ran seconds ahead of the other's, and a
    # tick it saw late was skipped as its catch-up policy says, not lost to a race.
    step = threading.Barrier(2)

    def scheduler() -> None:
        try:
            for ms in range(0, 60_000, 250):  # a minute in quarter seconds
                step.wait(timeout=60)
                fire(engine, T0 + timedelta(milliseconds=ms))
        except BaseException as exc:
            errors.append(exc)
            step.abort()

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ticks = [t for t, _ in runs(engine, uid)]
    assert ticks == [T0 + timedelta(seconds=s) for s in range(2, 60, 2)]


def test_latest_fires_only_the_newest_missed_tick(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *")  # every minute
    fire(engine, T0 + timedelta(hours=2, seconds=30))  # operator was down for two hours
    assert [t for t, _ in runs(engine, uid)] == [T0 + timedelta(hours=2)]
    with engine.connect() as conn:
        record = schedule_db.get_schedule(conn, uid)
    assert record is not None
    assert record.next_tick == T0 + timedelta(hours=2, minutes=1)


def test_skip_fires_nothing_missed(engine: Engine) -> None:
    uid = define(engine, schedule="*/10 * * * *", catchUp="Skip")
    fire(engine, T0 + timedelta(hours=2, minutes=5))  # the 14:00 tick is 5 minutes late
    assert runs(engine, uid) == []
    fire(engine, T0 + timedelta(hours=2, minutes=10))  # back to normal: on time
    assert [t for t, _ in runs(engine, uid)] == [T0 + timedelta(hours=2, minutes=10)]


def test_all_fires_every_missed_tick_up_to_the_bound(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *", catchUp="All", maxCatchUpRuns=5,
                 successfulRunsHistoryLimit=100)  # fmt: skip
    firings = fire(engine, T0 + timedelta(minutes=3, seconds=10))
    assert [t for t, _ in runs(engine, uid)] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    assert not firings[0].dropped_beyond_bound
    firings = fire(engine, T0 + timedelta(minutes=20, seconds=10))
    assert firings[0].dropped_beyond_bound
    assert [t for t, _ in runs(engine, uid)][3:] == [
        T0 + timedelta(minutes=m) for m in range(16, 21)
    ]


def test_forbid_skips_while_a_run_is_active(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *", concurrencyPolicy="Forbid")
    fire(engine, T0 + timedelta(minutes=1))
    [report] = fire(engine, T0 + timedelta(minutes=2))
    assert report.skipped_forbid == [T0 + timedelta(minutes=2)]
    assert len(runs(engine, uid)) == 1
    with engine.begin() as conn:
        conn.execute(text("UPDATE eventix_task SET status = 'done' WHERE schedule_uid = :u"),
                     {"u": uid})  # fmt: skip
    fire(engine, T0 + timedelta(minutes=3))
    assert [s for _, s in runs(engine, uid)] == ["done", "scheduled"]


def test_replace_cancels_the_pending_run(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *", concurrencyPolicy="Replace",
                 failedRunsHistoryLimit=5)  # fmt: skip
    fire(engine, T0 + timedelta(minutes=1))
    [report] = fire(engine, T0 + timedelta(minutes=2))
    assert len(report.replaced) == 1
    assert [s for _, s in runs(engine, uid)] == ["cancelled", "scheduled"]


def test_suspended_schedule_does_not_fire_and_catches_up_on_resume(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *", suspend=True)
    assert fire(engine, T0 + timedelta(minutes=10)) == []
    define(engine, schedule="* * * * *", suspend=False)
    fire(engine, T0 + timedelta(minutes=10, seconds=5))
    assert [t for t, _ in runs(engine, uid)] == [T0 + timedelta(minutes=10)]  # Latest


def test_bad_expression_is_reported_and_never_fires(engine: Engine) -> None:
    definition = schedule_definition(
        {"schedule": "61 * * * *", "template": {"task": "t"}},
        uid="bad", namespace="ns", name="bad", generation=1, created_at=T0,
    )  # fmt: skip
    with engine.begin() as conn:
        record, error = apply_schedule(conn, definition, T0)
    assert error is not None
    assert "61" in error
    assert record.error == error
    assert fire(engine, T0 + timedelta(days=1)) == []


def test_unknown_time_zone_is_reported(engine: Engine) -> None:
    definition = schedule_definition(
        {"schedule": "@daily", "timeZone": "Mars/Olympus_Mons", "template": {"task": "t"}},
        uid="tz", namespace="ns", name="tz", generation=1, created_at=T0,
    )  # fmt: skip
    with engine.begin() as conn:
        _, error = apply_schedule(conn, definition, T0)
    assert error is not None
    assert "Mars/Olympus_Mons" in error


def test_daily_in_berlin_fires_once_on_the_autumn_change(engine: Engine) -> None:
    created = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    uid = define(engine, schedule="0 2 * * *", timeZone="Europe/Berlin", created=created,
                 catchUp="All", successfulRunsHistoryLimit=10)  # fmt: skip
    now = created
    while now < datetime(2026, 10, 26, 12, 0, tzinfo=UTC):
        now += timedelta(minutes=10)
        fire(engine, now)
    # 02:00 CEST on the 25th is 00:00 UTC; the repeated 02:00 CET (01:00 UTC) does not fire
    assert [t for t, _ in runs(engine, uid)] == [
        datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 0, tzinfo=UTC),
    ]


def test_backfill_creates_each_tick_once(engine: Engine) -> None:
    uid = define(engine, schedule="*/10 * * * *", successfulRunsHistoryLimit=100)
    with engine.connect() as conn:
        schedule = schedule_db.get_schedule(conn, uid)
    assert schedule is not None
    with engine.begin() as conn:
        created, existing = backfill(conn, schedule, T0, T0 + timedelta(hours=1),
                                     payload_limit=LIMIT)  # fmt: skip
    assert len(created) == 7  # 12:00 .. 13:00 inclusive
    assert existing == []
    with engine.begin() as conn:
        created, existing = backfill(conn, schedule, T0 + timedelta(minutes=30),
                                     T0 + timedelta(hours=2), payload_limit=LIMIT)  # fmt: skip
    assert len(existing) == 4  # 12:30 .. 13:00 ran already
    assert len(created) == 6
    assert len(runs(engine, uid)) == 13


def test_history_is_trimmed_to_the_limits(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *", successfulRunsHistoryLimit=2)
    for m in range(1, 6):
        fire(engine, T0 + timedelta(minutes=m))
        with engine.begin() as conn:
            conn.execute(text("UPDATE eventix_task SET status = 'done' WHERE schedule_uid = :u"),
                         {"u": uid})  # fmt: skip
    fire(engine, T0 + timedelta(minutes=6))
    assert [s for _, s in runs(engine, uid)] == ["done", "done", "scheduled"]


def test_deleting_a_schedule_removes_its_runs(engine: Engine) -> None:
    uid = define(engine, schedule="* * * * *")
    fire(engine, T0 + timedelta(minutes=1))
    with engine.begin() as conn:
        assert schedule_db.delete_schedule(conn, uid) == 1
        assert schedule_db.get_schedule(conn, uid) is None
    assert runs(engine, uid) == []


def test_a_template_that_cannot_be_enqueued_stops_only_its_schedule(engine: Engine) -> None:
    good = define(engine, "good")
    bad = define(engine, "bad", template={"task": "tick", "kwargs": {"text": "x" * LIMIT}})
    loop = SchedulerLoop(engine, payload_limit=LIMIT, clock=lambda: T0 + timedelta(seconds=2))
    firings, _ = loop.fire_once()
    assert [t for t, _ in runs(engine, good)] == [T0 + timedelta(seconds=2)]
    assert runs(engine, bad) == []
    [failed] = [f for f in firings if f.schedule.uid == bad]
    assert failed.error is not None
    assert "cannot fire" in failed.error
    assert "over the 1000000 byte limit" in failed.error
    with engine.connect() as conn:
        record = schedule_db.get_schedule(conn, bad)
    assert record is not None
    assert record.error == failed.error
    assert record.next_tick is None  # not due again until its spec changes
    fire(engine, T0 + timedelta(seconds=4))
    assert len(runs(engine, good)) == 2
