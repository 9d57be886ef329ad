"""Which ticks of a schedule to fire now: the catch-up policy as a pure function.

The operator calls :func:`plan_catch_up` whenever it wakes for a schedule (at a
tick, after a restart, after ``suspend`` is lifted) and inserts one task per
returned tick under the (schedule, tick) unique key. Because the decision only
depends on its arguments, replicas and restarts that recompute it agree, and
the unique key absorbs any overlap.

Definitions
-----------
*Due* ticks are those after the last fired tick (or, before the first one,
after the schedule's creation) and at or before ``now``.

A due tick is *on time* if it is not older than ``startingDeadlineSeconds``
when that is set, and otherwise not older than a small tolerance
(:data:`DEFAULT_ON_TIME_TOLERANCE`) that absorbs the operator's own reaction
time. ``startingDeadlineSeconds`` thus means what it means for a CronJob: how
late a tick may still start.

- ``Skip`` fires the newest due tick if it is on time, none otherwise: after
  downtime, the schedule simply resumes with its next tick.
- ``Latest`` (the default, as CronJob) fires the newest due tick if it is
  within ``startingDeadlineSeconds``, or at any age when that is unset.
- ``All`` fires every due tick within ``startingDeadlineSeconds`` (any age
  when unset), oldest first, but at most ``maxCatchUpRuns``: the *newest*
  ones, so that the current tick always runs and the dropped ones are the
  stalest. Dropping is reported, for a Warning event.

With ``startingDeadlineSeconds`` set, Skip and Latest coincide: a tick inside
its deadline is late, not missed.

The search walks backwards from ``now`` and stops after at most
``maxCatchUpRuns + 1`` ticks (one for Skip and Latest), so a per-second
schedule whose last tick was a year ago costs the same as one from a second
ago.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventix_operator.schedules.ticks import CronSchedule

__all__ = [
    "DEFAULT_MAX_CATCH_UP_RUNS",
    "DEFAULT_ON_TIME_TOLERANCE",
    "CatchUpPlan",
    "CatchUpPolicy",
    "plan_catch_up",
]

#: How late a tick may fire and still count as "now" when no startingDeadlineSeconds is set.
#: It covers the operator's reaction time (a timer's latency, an API round trip, a leader
#: handover), not downtime.
DEFAULT_ON_TIME_TOLERANCE = timedelta(seconds=60)

#: The CRD's default for ``maxCatchUpRuns``.
DEFAULT_MAX_CATCH_UP_RUNS = 100


class CatchUpPolicy(enum.StrEnum):
    """``spec.catchUp`` of an EventixSchedule; the values are the CRD's enum."""

    SKIP = "Skip"
    LATEST = "Latest"
    ALL = "All"


@dataclass(frozen=True)
class CatchUpPlan:
    """What to do now, and when to wake up next."""

    fire: tuple[datetime, ...]
    """Ticks to fire now, oldest first (aware UTC)."""
    next_tick: datetime | None
    """The first tick after ``now`` (and after the last fired one); None if there is none."""
    missed: bool
    """Some due ticks are not in ``fire`` (policy, deadline or bound): worth a Normal event."""
    dropped_beyond_bound: bool
    """``All`` only: more ticks were due than ``maxCatchUpRuns``; worth a Warning event."""


def plan_catch_up(
    schedule: CronSchedule,
    *,
    last_tick: datetime | None,
    created_at: datetime,
    now: datetime,
    policy: CatchUpPolicy | str = CatchUpPolicy.LATEST,
    starting_deadline_seconds: int | None = None,
    max_catch_up_runs: int = DEFAULT_MAX_CATCH_UP_RUNS,
    on_time_tolerance: timedelta = DEFAULT_ON_TIME_TOLERANCE,
) -> CatchUpPlan:
    """Decide which due ticks of ``schedule`` to fire at ``now``.

    ``last_tick`` is the newest tick already fired (None before the first), and
    ``created_at`` the schedule's creation, which bounds the first catch-up: a schedule
    never fires for ticks from before it existed. All datetimes must be aware.
    """
    policy = CatchUpPolicy(policy)
    if max_catch_up_runs < 1:
        raise ValueError(f"max_catch_up_runs must be >= 1, got {max_catch_up_runs}")
    if starting_deadline_seconds is not None and starting_deadline_seconds < 0:
        raise ValueError(f"starting_deadline_seconds must be >= 0, got {starting_deadline_seconds}")
    created_at = _utc(created_at, "created_at")
    since = _utc(last_tick, "last_tick") if last_tick is not None else created_at
    now = _utc(now, "now")

    if starting_deadline_seconds is not None:
        oldest_allowed: datetime | None = now - timedelta(seconds=starting_deadline_seconds)
    elif policy is CatchUpPolicy.SKIP:
        oldest_allowed = now - on_time_tolerance
    else:
        oldest_allowed = None
    limit = max_catch_up_runs if policy is CatchUpPolicy.ALL else 1

    newest_first: list[datetime] = []
    missed = False
    over_bound = False
    if now > since:
        for tick in schedule.ticks_until(now):
            if tick <= since:
                break
            if oldest_allowed is not None and tick < oldest_allowed:
                missed = True
                break
            if len(newest_first) == limit:
                missed = True
                over_bound = policy is CatchUpPolicy.ALL
                break
            newest_first.append(tick)

    return CatchUpPlan(
        fire=tuple(reversed(newest_first)),
        next_tick=schedule.next_after(max(now, since)),
        missed=missed,
        dropped_beyond_bound=over_bound,
    )


def _utc(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {instant!r}")
    return instant.astimezone(UTC)
