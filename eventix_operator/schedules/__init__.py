"""Schedule arithmetic: cron expressions, ticks in a time zone, catch-up decisions.

Pure functions of their arguments (no clock, no database, no Kubernetes), so that
the operator, the CLI's preview and backfill, and the tests agree on every tick.
"""

from eventix_operator.schedules.catchup import (
    DEFAULT_MAX_CATCH_UP_RUNS,
    DEFAULT_ON_TIME_TOLERANCE,
    CatchUpPlan,
    CatchUpPolicy,
    plan_catch_up,
)
from eventix_operator.schedules.ticks import (
    MACROS,
    CronSchedule,
    PreviewTick,
    ScheduleError,
    parse_schedule,
    preview,
)

__all__ = [
    "DEFAULT_MAX_CATCH_UP_RUNS",
    "DEFAULT_ON_TIME_TOLERANCE",
    "MACROS",
    "CatchUpPlan",
    "CatchUpPolicy",
    "CronSchedule",
    "PreviewTick",
    "ScheduleError",
    "parse_schedule",
    "plan_catch_up",
    "preview",
]
