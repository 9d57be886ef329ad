"""When a failed task runs again: the one retry rule of native and HTTP workers.

A task row keeps its retry settings fixed (``retry``, ``max_retries``,
``error_eta_inc``, ``error_eta_max``) and counts ``attempts`` up; the n-th retry
waits ``min(error_eta_inc * 2**(n-1), error_eta_max)`` (Eventix's doubling). The
native worker asks :meth:`RetryPolicy.after_failure`; lease recovery asks
:meth:`RetryPolicy.run_left_after_loss`; the REST API shows Eventix's count-down
view of the same row (:meth:`RetryPolicy.remaining`, :meth:`RetryPolicy.next_wait`)
and turns a write-back's count-down back into the total with the same count of
failures (:data:`FAILURES_SO_FAR_SQL`, the SQL form of :func:`failures_so_far`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Statuses in which the latest attempt is not (yet) a failure that led to a retry:
#: running, finished or given up. In any other status every attempt so far failed.
RUN_NOT_RETRIED = ("processing", "done", "error", "cancelled")

#: Past this many doublings any increment is over any cap: the wait is the cap,
#: and ``2**n`` of a retry-forever task never grows without bound.
MAX_DOUBLINGS = 64


def failures_so_far(status: str, attempts: int) -> int:
    """Runs that failed and were retried (Eventix has counted ``max_retries``
    down once for each)."""
    return attempts - 1 if status in RUN_NOT_RETRIED and attempts > 0 else attempts


def failures_so_far_sql(status: str, attempts: str) -> str:
    """:func:`failures_so_far` as a SQL expression over two column expressions."""
    statuses = ", ".join(f"'{s}'" for s in RUN_NOT_RETRIED)
    return f"({attempts} - CASE WHEN {status} IN ({statuses}) AND {attempts} > 0 THEN 1 ELSE 0 END)"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A task's retry settings; ``max_retries`` counts retries after the first
    run (None: retry forever, as Eventix)."""

    retry: bool = True
    max_retries: int | None = None
    backoff_seconds: int = 15
    max_backoff_seconds: int = 300

    def wait(self, retry_number: int) -> int:
        """Seconds before retry number ``retry_number`` (1 is the first retry)."""
        doublings = max(retry_number - 1, 0)
        if self.backoff_seconds <= 0:
            return 0
        if doublings >= MAX_DOUBLINGS:
            return self.max_backoff_seconds
        return int(min(self.backoff_seconds * 2**doublings, self.max_backoff_seconds))

    def after_failure(self, attempts: int) -> float | None:
        """Seconds until the next attempt after attempt number ``attempts``
        failed, or None when the task has no attempt left."""
        if not self.retry or (self.max_retries is not None and attempts > self.max_retries):
            return None
        return float(self.wait(attempts))

    def run_left_after_loss(self, attempts: int) -> bool:
        """Whether a task whose worker vanished during attempt ``attempts`` runs
        again. A lost worker is not the task's failure, so ``retry=False`` does
        not stop it; only a spent count of runs does."""
        return self.max_retries is None or attempts <= self.max_retries

    # -- Eventix's view: retries left, counted down -----------------------------

    def remaining(self, status: str, attempts: int) -> int | None:
        if self.max_retries is None:
            return None
        return max(self.max_retries - failures_so_far(status, attempts), 0)

    def next_wait(self, status: str, attempts: int) -> int:
        """What the next failure waits: Eventix's doubled ``error_eta_inc``."""
        return self.wait(failures_so_far(status, attempts) + 1)
