"""Cron schedules evaluated in an IANA time zone, as instants in UTC.

cronsim does the cron matching (fields, ranges, steps, names, ``L``, ``#``);
this module decides how wall-clock matches become instants, because that is
where daylight saving bites and where cronsim alone is not enough.

Daylight saving, as Debian's cron does it
-----------------------------------------
Debian's cron sorts jobs in two kinds, by the literal text of the minute and
hour fields, and so does this module:

*Fixed-time* schedules (neither the minute nor the hour field starts with
``*``: ``0 2 * * *``, ``@daily``, ``30 8 * * 1-5``, ``0 0 2 * * *``) name a
wall-clock time, and a person expects it once each time it comes round:

- a wall-clock time that happens twice (autumn) fires once, at its first
  occurrence;
- a wall-clock time that does not exist (spring) fires once, at the first
  instant after the gap. Several matches inside one gap (``0,30 2 * * *``)
  collapse into that one instant.

*Wildcard* schedules (the minute or the hour field starts with ``*``:
``*/15 * * * *``, ``@hourly``, ``*/2 * * * * *``, ``*/5 2 * * *``) describe a
cadence, and follow elapsed time: their ticks are the instants whose local
wall-clock reading matches. Inside a repeated hour they fire in both
occurrences (an hourly job still runs every real hour; an every-2-seconds job
does not pause for an hour); wall-clock times inside a gap do not exist and do
not fire (the cadence goes on across the gap: ``*/15`` fires at 01:45 CET and
then at 03:00 CEST, fifteen real minutes apart). This is Debian's rule for
wildcard jobs, with its consequence: ``*/5 2 * * *`` in Europe/Berlin fires 24
times on the autumn day and not at all on the spring day. The DESIGN's "fires
once" wording describes fixed-time jobs; applied to cadences it would stall a
per-second schedule for an hour every autumn.

Either way, ticks are strictly increasing instants, never repeated, which is
what the (schedule, tick instant) unique key needs.

What cronsim does and does not do here
--------------------------------------
cronsim parses and matches the fields, and iterates wall-clock matches
forwards and backwards; its six-field form already puts seconds first. It has
no macros (translated here) and no ``?`` (read as ``*`` in the day fields).
Its own time-zone handling is not used, because it falls short in three ways,
each found by comparing with a brute-force second-by-second evaluation:

- its fixed-time DST handling applies to five-field expressions only, so
  ``0 0 2 * * *`` fired twice in Berlin's autumn and not at all in spring;
- started inside the second occurrence of a repeated hour, its fixed-time
  mode returns a tick earlier than the start;
- its elapsed-time mode jumps whole minutes in UTC, which skips ticks where a
  change is not a whole hour (Australia/Lord_Howe moves by 30 minutes).

So cronsim only ever sees naive wall-clock times here; this module maps them
to instants (fixed time), or iterates stretches of constant UTC offset
(wildcard).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = [
    "MACROS",
    "CronSchedule",
    "PreviewTick",
    "ScheduleError",
    "parse_schedule",
    "preview",
]

#: The macros the EventixSchedule CRD accepts, as the cron fields they stand for.
MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# cronsim's field names in its (seconds-first) order, for error messages.
_FIELD_NAMES = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")

# The format of an IANA key, as the CRD's pattern checks it. Whether the zone exists is
# ZoneInfo's call; the pattern keeps paths and odd characters away from the tz database.
_ZONE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*")

# Keys that load but name no IANA zone: "localtime" is whatever the operator's host
# happens to use, which would make a manifest mean different things on different nodes.
_NOT_ZONES = frozenset({"localtime", "posixrules"})

_ONE_SECOND = timedelta(seconds=1)
# How far apart offset probes are; see _first_offset_change.
_PROBE_STEP = timedelta(hours=6)
_REFERENCE = datetime(2000, 1, 1)


class ScheduleError(ValueError):
    """A schedule expression or time zone that cannot be used.

    The message names the offending part, because the operator copies it verbatim
    into the resource's ``Ready=False`` condition, where the user has to act on it.
    """


@dataclass(frozen=True)
class PreviewTick:
    """One fire time, shown both ways: users think in the zone, the database keys in UTC."""

    local: datetime
    utc: datetime


@dataclass(frozen=True)
class CronSchedule:
    """A validated schedule: build it with :func:`parse_schedule`.

    All instants going in must be timezone-aware (any zone); all instants coming out
    are aware UTC datetimes on whole seconds, so that they can serve as tick keys.
    """

    expression: str
    """The expression as the user wrote it (whitespace-trimmed)."""
    time_zone: str
    """The IANA key the schedule is evaluated in."""
    cron: str
    """Six fields, seconds first, as handed to cronsim."""
    fixed_time: bool
    """Debian's distinction; see the module docstring for what it changes at DST."""
    zone: ZoneInfo = field(repr=False, compare=False)

    def ticks_after(self, after: datetime) -> Iterator[datetime]:
        """Yield the fire instants strictly after ``after``, earliest first, without end.

        Strictly after, so that passing the last fired tick never fires it again.
        Ends only if cronsim finds no match within 50 years.
        """
        after = _require_aware(after, "after").astimezone(UTC)
        raw = self._fixed_forward(after) if self.fixed_time else self._wildcard_forward(after)
        last = after
        for tick in raw:
            # The backends already move forward; this guard makes "strictly increasing,
            # never repeated" a property of this method rather than of cronsim's internals.
            if tick > last:
                last = tick
                yield tick

    def ticks_until(self, until: datetime) -> Iterator[datetime]:
        """Yield the fire instants at or before ``until``, latest first.

        Backwards, because catch-up decisions are about the most recent ticks: walking
        forward from a last tick months ago would visit millions of per-second ticks.
        """
        until = _require_aware(until, "until").astimezone(UTC)
        raw = self._fixed_backward(until) if self.fixed_time else self._wildcard_backward(until)
        last: datetime | None = None
        for tick in raw:
            if tick <= until and (last is None or tick < last):
                last = tick
                yield tick

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire instant strictly after ``after``; None if there is none in 50 years."""
        return next(self.ticks_after(after), None)

    def latest_until(self, until: datetime) -> datetime | None:
        """The last fire instant at or before ``until``; None if there is none in 50 years."""
        return next(self.ticks_until(until), None)

    # -- wildcard schedules: elapsed time ------------------------------------------------
    #
    # Within a stretch of constant UTC offset, the wall clock is the instant plus that
    # offset, so cronsim's naive wall-clock iteration gives the ticks directly. At each
    # offset change the iteration restarts from the change.

    def _wildcard_forward(self, after: datetime) -> Iterator[datetime]:
        start = after.replace(microsecond=0) + _ONE_SECOND  # first candidate, inclusive
        while True:
            offset = _offset(self.zone, start)
            for match in CronSim(self.cron, _naive(start + offset) - _ONE_SECOND):
                tick = (match - offset).replace(tzinfo=UTC)
                change = _first_offset_change(self.zone, start, tick, offset)
                if change is not None:
                    # No match under the old offset before the change; resume from it.
                    start = change
                    break
                yield tick
                start = tick
            else:
                return

    def _wildcard_backward(self, until: datetime) -> Iterator[datetime]:
        end = until.replace(microsecond=0)  # last candidate, inclusive
        while True:
            offset = _offset(self.zone, end)
            for match in CronSim(self.cron, _naive(end + offset) + _ONE_SECOND, reverse=True):
                tick = (match - offset).replace(tzinfo=UTC)
                stretch_start = _offset_stretch_start(self.zone, tick, end, offset)
                if stretch_start is not None:
                    end = stretch_start - _ONE_SECOND
                    break
                yield tick
                end = tick
            else:
                return

    # -- fixed-time schedules: cronsim matches wall-clock times, we place them -----------

    def _fixed_forward(self, after: datetime) -> Iterator[datetime]:
        # Starting at the naive wall-clock reading of `after` visits every wall time whose
        # instant can be later. Inside a repeated hour's second occurrence, the walls of
        # that hour map to their first occurrence, earlier than `after`; ticks_after's
        # guard drops them (at most one hour's worth).
        wall = after.astimezone(self.zone).replace(tzinfo=None)
        for match in CronSim(self.cron, wall):
            yield _place_wall_time(match, self.zone)

    def _fixed_backward(self, until: datetime) -> Iterator[datetime]:
        local = until.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        if local.fold:
            # `until` is in the second occurrence of a repeated stretch. Every wall time of
            # that stretch fired at its first occurrence, before `until`, including the ones
            # later on the clock than `until`'s reading: start from the end of the stretch.
            wall += _utcoffset(local.replace(fold=0)) - _utcoffset(local)
        start = wall.replace(microsecond=0) + _ONE_SECOND
        for match in CronSim(self.cron, start, reverse=True):
            yield _place_wall_time(match, self.zone)


def parse_schedule(expression: str, time_zone: str = "UTC") -> CronSchedule:
    """Validate ``expression`` in ``time_zone`` and return the schedule.

    Accepts five fields (minute hour day-of-month month day-of-week), six fields with
    seconds first, and the macros in :data:`MACROS`. ``?`` in the day fields means "no
    specific value", as Quartz and robfig/cron write it. Everything that is wrong raises
    :class:`ScheduleError`, so the operator has a single thing to catch and report.
    """
    zone = _load_zone(time_zone)
    text = expression.strip()
    if not text:
        raise ScheduleError("schedule is empty")

    if text.startswith("@"):
        macro = MACROS.get(text)
        if macro is None:
            raise ScheduleError(
                f"schedule {expression!r}: unknown macro; use one of {', '.join(MACROS)}"
            )
        fields = ["0", *macro.split()]
    else:
        fields = text.split()
        if len(fields) == 5:
            fields.insert(0, "0")
        elif len(fields) != 6:
            raise ScheduleError(
                f"schedule {expression!r} has {len(fields)} fields; expected 5 (minute hour "
                "day-of-month month day-of-week), 6 (second first), or a macro such as @daily"
            )
        for index in (3, 5):
            if fields[index] == "?":
                fields[index] = "*"

    cron = " ".join(fields)
    try:
        CronSim(cron, _REFERENCE)
    except CronSimError as exc:
        raise ScheduleError(
            f"schedule {expression!r}: {_describe_cronsim_error(exc, fields)}"
        ) from exc

    return CronSchedule(
        expression=text,
        time_zone=time_zone,
        cron=cron,
        fixed_time=not fields[1].startswith("*") and not fields[2].startswith("*"),
        zone=zone,
    )


def preview(schedule: CronSchedule, start: datetime, count: int) -> list[PreviewTick]:
    """The next ``count`` fire times from ``start`` on, a tick exactly at ``start`` included.

    Inclusive, unlike :meth:`CronSchedule.ticks_after`: someone asking "what fires from
    02:00 on?" expects to see 02:00 itself.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    start = _require_aware(start, "start")
    ticks: list[PreviewTick] = []
    if count == 0:
        return ticks
    for tick in schedule.ticks_after(start - timedelta(microseconds=1)):
        ticks.append(PreviewTick(local=tick.astimezone(schedule.zone), utc=tick))
        if len(ticks) == count:
            break
    return ticks


def _load_zone(time_zone: str) -> ZoneInfo:
    if not _ZONE_KEY.fullmatch(time_zone) or time_zone in _NOT_ZONES:
        raise ScheduleError(
            f"time zone {time_zone!r} is not an IANA time zone name such as 'Europe/Berlin'"
        )
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming a directory of the tz database, such as "Europe".
        raise ScheduleError(
            f"unknown time zone {time_zone!r}: not in the IANA time zone database"
        ) from None


def _describe_cronsim_error(exc: CronSimError, fields: list[str]) -> str:
    message = str(exc)
    for index, name in enumerate(_FIELD_NAMES):
        if message == f"Bad {name}":
            return f"invalid {name} field {fields[index]!r}"
    return message or "invalid expression"


def _require_aware(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {instant!r}")
    return instant


def _naive(instant: datetime) -> datetime:
    return instant.replace(tzinfo=None)


def _utcoffset(local: datetime) -> timedelta:
    offset = local.utcoffset()
    assert offset is not None  # only ever called on datetimes in a ZoneInfo
    return offset


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return _utcoffset(instant.astimezone(zone))


def _first_offset_change(
    zone: ZoneInfo, start: datetime, end: datetime, offset: timedelta
) -> datetime | None:
    """The first instant in (start, end] whose UTC offset is not ``offset``, or None.

    zoneinfo does not expose its transitions, so they are found by probing every
    ``_PROBE_STEP`` and bisecting to the second. Two changes within one step that cancel
    out would go unseen; since 1970 the time zone database has no two changes of any kind
    less than two days apart.
    """
    low = start
    while low < end:
        high = min(low + _PROBE_STEP, end)
        if _offset(zone, high) != offset:
            while high - low > _ONE_SECOND:
                middle = low + (high - low) // 2
                middle = middle.replace(microsecond=0)
                if _offset(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            return high
        low = high
    return None


def _offset_stretch_start(
    zone: ZoneInfo, start: datetime, end: datetime, offset: timedelta
) -> datetime | None:
    """Where the stretch of ``offset`` that contains ``end`` begins, if within (start, end].

    The mirror image of :func:`_first_offset_change`, for walking backwards.
    """
    high = end
    while high > start:
        low = max(high - _PROBE_STEP, start)
        if _offset(zone, low) != offset:
            while high - low > _ONE_SECOND:
                middle = low + (high - low) // 2
                middle = middle.replace(microsecond=0)
                if _offset(zone, middle) == offset:
                    high = middle
                else:
                    low = middle
            return high
        high = low
    return None


def _place_wall_time(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a fixed-time schedule fires for the naive wall-clock match ``wall``.

    A repeated time maps to its first occurrence (fold=0). A time inside a gap maps to
    the first instant after the gap; cronsim would instead add whole minutes until the
    time exists, which lands later than the gap's end for matches with seconds.
    """
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap, fold=0 reads the wall time with the offset before the change and fold=1
    # with the one after: the change lies between the two readings. Search it by seconds.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low = int(min(instant, other).timestamp())
    high = int(max(instant, other).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).replace(tzinfo=None) > wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
