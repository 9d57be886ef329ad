"""Schedule ticks: parsing, daylight saving, catch-up and preview, on explicit instants."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise, takewhile
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from eventix_operator.schedules import (
    CatchUpPolicy,
    CronSchedule,
    ScheduleError,
    parse_schedule,
    plan_catch_up,
    preview,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def ticks_between(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    """Ticks in (start, end]."""
    return list(takewhile(lambda t: t <= end, schedule.ticks_after(start)))


def ticks_on_local_day(schedule: CronSchedule, year: int, month: int, day: int) -> list[datetime]:
    zone = schedule.zone
    start = datetime(year, month, day, tzinfo=zone).astimezone(UTC)
    end = (datetime(year, month, day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC)
    return [t for t in ticks_between(schedule, start - timedelta(seconds=1), end) if t < end]


# -- daylight saving: fixed-time schedules fire once --------------------------------------


@pytest.mark.parametrize("expression", ["0 2 * * *", "0 0 2 * * *"])
def test_daily_two_am_berlin_fires_once_on_the_autumn_day_at_the_first_occurrence(
    expression: str,
) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    # 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:00-03:00 happens twice.
    assert ticks_on_local_day(schedule, 2026, 10, 25) == [utc(2026, 10, 25, 0, 0)]
    assert ticks_on_local_day(schedule, 2026, 10, 26) == [utc(2026, 10, 26, 1, 0)]


@pytest.mark.parametrize("expression", ["0 2 * * *", "0 0 2 * * *", "30 2 * * *"])
def test_daily_in_the_spring_gap_fires_once_right_after_the_gap(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    # 2026-03-29: 02:00 CET becomes 03:00 CEST; 03:00 CEST is 01:00 UTC.
    assert ticks_on_local_day(schedule, 2026, 3, 29) == [utc(2026, 3, 29, 1, 0)]
    assert ticks_on_local_day(schedule, 2026, 3, 28)[0].astimezone(BERLIN).hour == 2


def test_several_matches_in_one_gap_collapse_into_one_tick() -> None:
    schedule = parse_schedule("0,30 2 * * *", "Europe/Berlin")
    assert ticks_on_local_day(schedule, 2026, 3, 29) == [utc(2026, 3, 29, 1, 0)]
    assert ticks_on_local_day(schedule, 2026, 10, 25) == [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 0, 30),
    ]


def test_a_gap_tick_with_seconds_fires_at_the_end_of_the_gap() -> None:
    schedule = parse_schedule("30 30 2 * * *", "Europe/Berlin")
    assert ticks_on_local_day(schedule, 2026, 3, 29) == [utc(2026, 3, 29, 1, 0, 0)]


def test_starting_in_the_second_occurrence_does_not_return_an_earlier_tick() -> None:
    schedule = parse_schedule("45 2 * * *", "Europe/Berlin")
    second_occurrence = utc(2026, 10, 25, 1, 10)  # 02:10 CET; 02:45 fired at 00:45 UTC
    assert schedule.next_after(second_occurrence) == utc(2026, 10, 26, 1, 45)
    assert schedule.latest_until(second_occurrence) == utc(2026, 10, 25, 0, 45)


# -- daylight saving: wildcard schedules follow elapsed time -------------------------------


def test_every_fifteen_minutes_keeps_its_cadence_through_both_changes() -> None:
    schedule = parse_schedule("*/15 * * * *", "Europe/Berlin")
    for start in (utc(2026, 10, 24, 23, 0), utc(2026, 3, 28, 23, 0)):
        ticks = ticks_between(schedule, start, start + timedelta(hours=4))
        assert len(ticks) == 16
        assert {b - a for a, b in pairwise(ticks)} == {timedelta(minutes=15)}

    autumn = ticks_between(schedule, utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 3, 0))
    two_am = [t.astimezone(BERLIN) for t in autumn if t.astimezone(BERLIN).hour == 2]
    assert len(two_am) == 8  # 02:00-02:45 in both occurrences
    spring = ticks_between(schedule, utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 3, 0))
    assert not [t for t in spring if t.astimezone(BERLIN).hour == 2]


def test_every_two_seconds_runs_straight_through_the_autumn_change() -> None:
    schedule = parse_schedule("*/2 * * * * *", "Europe/Berlin")
    change = utc(2026, 10, 25, 1, 0)  # 03:00 CEST -> 02:00 CET
    ticks = ticks_between(schedule, change - timedelta(seconds=10), change + timedelta(seconds=10))
    assert ticks == [change + timedelta(seconds=s) for s in range(-8, 11, 2)]


def test_hourly_runs_every_real_hour_so_the_local_days_have_25_and_23_ticks() -> None:
    schedule = parse_schedule("@hourly", "Europe/Berlin")
    assert len(ticks_on_local_day(schedule, 2026, 10, 25)) == 25
    assert len(ticks_on_local_day(schedule, 2026, 3, 29)) == 23


def test_a_cadence_within_the_changing_hour_follows_debian() -> None:
    schedule = parse_schedule("*/5 2 * * *", "Europe/Berlin")
    assert len(ticks_on_local_day(schedule, 2026, 10, 25)) == 24
    assert ticks_on_local_day(schedule, 2026, 3, 29) == []


def test_half_hour_daylight_saving_does_not_lose_ticks() -> None:
    # Lord Howe Island: 2026-04-05 02:00 (+11) becomes 01:30 (+10:30) at 15:00 UTC, so the
    # wall clock reads :30 again at 15:00 UTC. cronsim's own zone arithmetic skips it.
    schedule = parse_schedule("30 * * * *", "Australia/Lord_Howe")
    ticks = ticks_between(schedule, utc(2026, 4, 4, 14, 0), utc(2026, 4, 4, 16, 0))
    assert ticks == [utc(2026, 4, 4, 14, 30), utc(2026, 4, 4, 15, 0), utc(2026, 4, 4, 16, 0)]


def _reference_ticks(
    schedule: CronSchedule, start: datetime, end: datetime, step: timedelta
) -> list[datetime]:
    """Every instant on the grid in [start, end], judged one by one, as the docs define it."""

    def matches(wall: datetime) -> bool:
        return next(CronSim(schedule.cron, wall - timedelta(seconds=1))) == wall

    zone = schedule.zone
    if not schedule.fixed_time:
        grid = (start + step * i for i in range((end - start) // step + 1))
        return [t for t in grid if matches(t.astimezone(zone).replace(tzinfo=None))]

    def reading(instant: datetime) -> datetime:
        return instant.astimezone(zone).replace(tzinfo=None)

    found: set[datetime] = set()
    wall = reading(start) - timedelta(hours=3)
    while wall <= reading(end) + timedelta(hours=3):
        if matches(wall):
            instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)  # first occurrence
            if reading(instant) != wall:
                # In a gap: walk from before it to the first second the clock reads later.
                instant = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
                while reading(instant) <= wall:
                    instant += timedelta(seconds=1)
            found.add(instant)
        wall += step
    return sorted(t for t in found if start <= t <= end)


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        ("Europe/Berlin", utc(2026, 3, 29, 1)),
        ("Europe/Berlin", utc(2026, 10, 25, 1)),
        ("America/New_York", utc(2026, 11, 1, 6)),
        ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
        ("America/Santiago", utc(2026, 4, 5, 3)),  # the change is at local midnight
    ],
)
@pytest.mark.parametrize(
    "expression", ["*/15 * * * *", "30 * * * *", "0,30 0-3 * * *", "45 1 * * *", "*/20 1 * * *"]
)
def test_ticks_match_a_minute_by_minute_evaluation_around_a_change(
    zone: str, change: datetime, expression: str
) -> None:
    schedule = parse_schedule(expression, zone)
    start, end = change - timedelta(hours=5), change + timedelta(hours=5)
    reference = _reference_ticks(schedule, start, end, timedelta(minutes=1))

    forward = ticks_between(schedule, start - timedelta(seconds=1), end)
    backward = list(takewhile(lambda t: t >= start, schedule.ticks_until(end)))
    assert forward == reference
    assert backward == reference[::-1]
    for inside in reference[1:-1:3]:  # starting on a tick, in both directions
        assert ticks_between(schedule, inside, end) == [t for t in reference if t > inside]
        assert schedule.latest_until(inside) == inside


@pytest.mark.parametrize(
    "expression",
    ["*/2 * * * * *", "0 2 * * *", "*/15 * * * *", "0,30 2 * * *", "*/10 30 2 * * *", "@hourly"],
)
def test_ticks_are_strictly_increasing_and_unique_across_both_changes(expression: str) -> None:
    schedule = parse_schedule(expression, "Europe/Berlin")
    for change in (utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)):
        start = change - timedelta(hours=2)
        ticks = list(islice(schedule.ticks_after(start), 500))
        assert ticks[0] > start
        assert all(a < b for a, b in pairwise(ticks))
        backward = list(islice(schedule.ticks_until(change + timedelta(hours=2)), 500))
        assert all(a > b for a, b in pairwise(backward))


# -- fields, macros, outputs ---------------------------------------------------------------


def test_six_fields_put_seconds_first() -> None:
    after = utc(2026, 1, 15, 12, 0, 0)
    every_two = parse_schedule("*/2 * * * * *")
    assert list(islice(every_two.ticks_after(after), 3)) == [
        utc(2026, 1, 15, 12, 0, 2),
        utc(2026, 1, 15, 12, 0, 4),
        utc(2026, 1, 15, 12, 0, 6),
    ]
    at_fifteen = parse_schedule("15 * * * * *")
    assert list(islice(at_fifteen.ticks_after(after), 2)) == [
        utc(2026, 1, 15, 12, 0, 15),
        utc(2026, 1, 15, 12, 1, 15),
    ]
    five_fields = parse_schedule("* * * * *")
    assert five_fields.next_after(after) == utc(2026, 1, 15, 12, 1, 0)


@pytest.mark.parametrize(
    ("macro", "first", "second"),
    [
        ("@hourly", utc(2026, 1, 15, 11), utc(2026, 1, 15, 12)),
        ("@daily", utc(2026, 1, 16), utc(2026, 1, 17)),
        ("@midnight", utc(2026, 1, 16), utc(2026, 1, 17)),
        ("@weekly", utc(2026, 1, 18), utc(2026, 1, 25)),  # Sundays
        ("@monthly", utc(2026, 2, 1), utc(2026, 3, 1)),
        ("@yearly", utc(2027, 1, 1), utc(2028, 1, 1)),
        ("@annually", utc(2027, 1, 1), utc(2028, 1, 1)),
    ],
)
def test_macros(macro: str, first: datetime, second: datetime) -> None:
    schedule = parse_schedule(macro)
    assert list(islice(schedule.ticks_after(utc(2026, 1, 15, 10, 20)), 2)) == [first, second]


def test_macros_are_evaluated_in_the_time_zone() -> None:
    schedule = parse_schedule("@daily", "Europe/Berlin")
    assert schedule.next_after(utc(2026, 1, 15, 10)) == utc(2026, 1, 15, 23)


def test_question_mark_means_any_day_as_in_quartz() -> None:
    mondays = parse_schedule("0 0 12 ? * MON")
    assert list(islice(mondays.ticks_after(utc(2026, 1, 15)), 2)) == [
        utc(2026, 1, 19, 12),
        utc(2026, 1, 26, 12),
    ]
    fifteenth = parse_schedule("0 12 15 * ?")
    assert fifteenth.next_after(utc(2026, 1, 15, 13)) == utc(2026, 2, 15, 12)


def test_ticks_are_whole_seconds_in_utc_and_strictly_after_the_start() -> None:
    schedule = parse_schedule("*/2 * * * * *", "America/New_York")
    start = datetime(2026, 1, 15, 7, 0, 0, 500_000, tzinfo=ZoneInfo("America/New_York"))
    tick = schedule.next_after(start)
    assert tick == utc(2026, 1, 15, 12, 0, 2)
    assert tick is not None
    assert tick.tzinfo is UTC
    assert schedule.next_after(tick) == tick + timedelta(seconds=2)
    assert schedule.latest_until(tick) == tick


def test_naive_datetimes_are_refused() -> None:
    schedule = parse_schedule("* * * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.latest_until(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("expression", "time_zone", "message"),
    [
        ("", "UTC", "schedule is empty"),
        ("* * * *", "UTC", "has 4 fields"),
        ("0 0 0 * * * 2026", "UTC", "has 7 fields"),
        ("61 * * * *", "UTC", "invalid minute field '61'"),
        ("0 25 * * *", "UTC", "invalid hour field '25'"),
        ("0 0 32 * *", "UTC", "invalid day-of-month field '32'"),
        ("0 0 30 2 *", "UTC", "invalid day-of-month field '30'"),
        ("0 0 * 13 *", "UTC", "invalid month field '13'"),
        ("0 0 * * 8", "UTC", "invalid day-of-week field '8'"),
        ("*/0 * * * *", "UTC", "invalid minute field '*/0'"),
        ("60 * * * * *", "UTC", "invalid second field '60'"),
        ("? * * * *", "UTC", "invalid minute field '?'"),
        ("@every 5m", "UTC", "unknown macro"),
        ("@fortnightly", "UTC", "unknown macro"),
        ("@DAILY", "UTC", "unknown macro"),
        ("0 2 * * *", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
        ("0 2 * * *", "Europe", "unknown time zone 'Europe'"),
        ("0 2 * * *", "../../etc/passwd", "not an IANA time zone name"),
        ("0 2 * * *", "localtime", "not an IANA time zone name"),
        ("0 2 * * *", "", "not an IANA time zone name"),
        ("0 2 * * *", "Europe/Berlin ", "not an IANA time zone name"),
    ],
)
def test_invalid_input_raises_one_error_class_naming_the_problem(
    expression: str, time_zone: str, message: str
) -> None:
    with pytest.raises(ScheduleError, match=re.escape(message)) as caught:
        parse_schedule(expression, time_zone)
    assert isinstance(caught.value, ValueError)


def test_valid_zones_and_spellings_are_accepted() -> None:
    for zone in ("UTC", "Etc/GMT+5", "America/Argentina/Buenos_Aires", "America/Port-au-Prince"):
        assert parse_schedule("0 2 * * *", zone).time_zone == zone
    schedule = parse_schedule("  0  2 * * MON-FRI ", "UTC")
    assert schedule.expression == "0  2 * * MON-FRI"
    assert schedule.cron == "0 0 2 * * MON-FRI"


# -- preview -----------------------------------------------------------------------------


def test_preview_shows_local_and_utc_times_and_includes_the_start() -> None:
    schedule = parse_schedule("0 2 * * *", "Europe/Berlin")
    start = datetime(2026, 10, 24, 2, 0, tzinfo=BERLIN)
    shown = preview(schedule, start, 3)
    assert [p.utc for p in shown] == [
        utc(2026, 10, 24, 0),
        utc(2026, 10, 25, 0),
        utc(2026, 10, 26, 1),
    ]
    assert [p.local.isoformat() for p in shown] == [
        "2026-10-24T02:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-26T02:00:00+01:00",
    ]
    assert preview(schedule, start, 0) == []
    with pytest.raises(ValueError, match="count"):
        preview(schedule, start, -1)


# -- catch-up ------------------------------------------------------------------------------

HOURLY = parse_schedule("0 * * * *")
CREATED = utc(2026, 1, 1, 0, 30)
LAST = utc(2026, 1, 1, 5)


def hours(*values: int) -> tuple[datetime, ...]:
    return tuple(utc(2026, 1, 1, h) for h in values)


@pytest.mark.parametrize(
    ("policy", "extra", "fire", "missed", "dropped"),
    [
        (CatchUpPolicy.SKIP, {}, hours(9), True, False),
        (CatchUpPolicy.LATEST, {}, hours(9), True, False),
        (CatchUpPolicy.ALL, {}, hours(6, 7, 8, 9), False, False),
        (CatchUpPolicy.ALL, {"max_catch_up_runs": 2}, hours(8, 9), True, True),
        (CatchUpPolicy.ALL, {"starting_deadline_seconds": 7300}, hours(7, 8, 9), True, False),
    ],
)
def test_after_downtime_with_the_current_tick_due(
    policy: CatchUpPolicy,
    extra: dict[str, int],
    fire: tuple[datetime, ...],
    missed: bool,
    dropped: bool,
) -> None:
    # Down from 05:00 to just after 09:00: 06, 07, 08 were missed, 09 is due now.
    plan = plan_catch_up(
        HOURLY,
        last_tick=LAST,
        created_at=CREATED,
        now=utc(2026, 1, 1, 9, 0, 20),
        policy=policy,
        **extra,  # type: ignore[arg-type]
    )
    assert plan.fire == fire
    assert plan.missed is missed
    assert plan.dropped_beyond_bound is dropped
    assert plan.next_tick == utc(2026, 1, 1, 10)


@pytest.mark.parametrize(
    ("policy", "deadline", "fire"),
    [
        (CatchUpPolicy.SKIP, None, ()),  # 30 minutes late is missed, not "now"
        (CatchUpPolicy.SKIP, 3600, hours(9)),  # ...unless the deadline allows it
        (CatchUpPolicy.LATEST, None, hours(9)),
        (CatchUpPolicy.LATEST, 600, ()),
        (CatchUpPolicy.ALL, 600, ()),
        (CatchUpPolicy.ALL, 3 * 3600, hours(7, 8, 9)),
    ],
)
def test_after_downtime_between_ticks(
    policy: CatchUpPolicy, deadline: int | None, fire: tuple[datetime, ...]
) -> None:
    plan = plan_catch_up(
        HOURLY,
        last_tick=LAST,
        created_at=CREATED,
        now=utc(2026, 1, 1, 9, 30),
        policy=policy,
        starting_deadline_seconds=deadline,
    )
    assert plan.fire == fire
    assert plan.missed is True
    assert plan.next_tick == utc(2026, 1, 1, 10)


def test_skip_fires_a_tick_within_the_tolerance() -> None:
    plan = plan_catch_up(
        HOURLY, last_tick=LAST, created_at=CREATED, now=utc(2026, 1, 1, 9, 0, 45), policy="Skip"
    )
    assert plan.fire == hours(9)
    plan = plan_catch_up(
        HOURLY,
        last_tick=LAST,
        created_at=CREATED,
        now=utc(2026, 1, 1, 9, 0, 45),
        policy="Skip",
        on_time_tolerance=timedelta(seconds=30),
    )
    assert plan.fire == ()


def test_the_normal_wake_up_fires_the_one_due_tick() -> None:
    plan = plan_catch_up(
        HOURLY,
        last_tick=utc(2026, 1, 1, 8),
        created_at=CREATED,
        now=utc(2026, 1, 1, 9) + timedelta(milliseconds=3),
    )
    assert plan.fire == hours(9)
    assert not plan.missed
    quiet = plan_catch_up(
        HOURLY, last_tick=utc(2026, 1, 1, 9), created_at=CREATED, now=utc(2026, 1, 1, 9, 30)
    )
    assert quiet.fire == ()
    assert not quiet.missed
    assert quiet.next_tick == utc(2026, 1, 1, 10)


def test_the_first_catch_up_starts_after_creation() -> None:
    created_on_a_tick = utc(2026, 1, 1, 8)
    plan = plan_catch_up(
        HOURLY,
        last_tick=None,
        created_at=created_on_a_tick,
        now=utc(2026, 1, 1, 10, 0, 5),
        policy=CatchUpPolicy.ALL,
    )
    assert plan.fire == hours(9, 10)


def test_a_last_tick_ahead_of_the_clock_fires_nothing_and_waits_for_the_following_tick() -> None:
    plan = plan_catch_up(
        HOURLY, last_tick=utc(2026, 1, 1, 10), created_at=CREATED, now=utc(2026, 1, 1, 9, 59, 59)
    )
    assert plan.fire == ()
    assert plan.next_tick == utc(2026, 1, 1, 11)


def test_catch_up_fires_the_repeated_hour_once() -> None:
    daily = parse_schedule("0 2 * * *", "Europe/Berlin")
    plan = plan_catch_up(
        daily,
        last_tick=utc(2026, 10, 24, 0),
        created_at=utc(2026, 1, 1),
        now=utc(2026, 10, 25, 3),
        policy=CatchUpPolicy.ALL,
    )
    assert plan.fire == (utc(2026, 10, 25, 0),)
    assert plan.next_tick == utc(2026, 10, 26, 1)


@dataclasses.dataclass(frozen=True)
class _CountingSchedule(CronSchedule):
    """Counts the ticks that catch-up pulls, to show it does not walk the whole gap."""

    pulled: list[datetime] = dataclasses.field(default_factory=list, compare=False)

    def ticks_until(self, until: datetime) -> Iterator[datetime]:
        for tick in super().ticks_until(until):
            self.pulled.append(tick)
            yield tick


@pytest.mark.parametrize(
    ("policy", "fired", "pulled"),
    [(CatchUpPolicy.SKIP, 1, 2), (CatchUpPolicy.LATEST, 1, 2), (CatchUpPolicy.ALL, 100, 101)],
)
def test_a_year_old_last_tick_of_a_per_second_schedule_costs_a_bounded_walk(
    policy: CatchUpPolicy, fired: int, pulled: int
) -> None:
    parsed = parse_schedule("* * * * * *", "Europe/Berlin")
    schedule = _CountingSchedule(
        **{f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    )
    now = utc(2026, 6, 1, 12, 0, 0) + timedelta(microseconds=500)
    plan = plan_catch_up(
        schedule, last_tick=utc(2025, 6, 1), created_at=utc(2025, 1, 1), now=now, policy=policy
    )
    assert len(plan.fire) == fired
    assert plan.fire[-1] == utc(2026, 6, 1, 12, 0, 0)
    assert plan.fire[0] == utc(2026, 6, 1, 12, 0, 0) - timedelta(seconds=fired - 1)
    assert plan.missed
    assert plan.dropped_beyond_bound is (policy is CatchUpPolicy.ALL)
    assert len(schedule.pulled) == pulled
    assert plan.next_tick == utc(2026, 6, 1, 12, 0, 1)


def test_catch_up_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Sometimes"):
        plan_catch_up(HOURLY, last_tick=None, created_at=CREATED, now=LAST, policy="Sometimes")
    with pytest.raises(ValueError, match="max_catch_up_runs"):
        plan_catch_up(HOURLY, last_tick=None, created_at=CREATED, now=LAST, max_catch_up_runs=0)
    with pytest.raises(ValueError, match="starting_deadline_seconds"):
        plan_catch_up(
            HOURLY, last_tick=None, created_at=CREATED, now=LAST, starting_deadline_seconds=-1
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_catch_up(HOURLY, last_tick=None, created_at=CREATED, now=datetime(2026, 1, 1))
