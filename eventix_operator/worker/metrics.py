"""The worker's Prometheus metrics: task outcomes and claims (counters), task
durations (histogram), tasks running (gauge).

The worker runs 20 000 no-op tasks a second, so its figures are added once per
batch, never per task: a histogram that takes a batch of equal observations in
one step, counters bumped per recorded batch.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from eventix_operator.metrics import BatchHistogram, one_per_process, registry

#: Task durations, from a no-op (well under a millisecond) to long batch jobs.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class WorkerMetrics:
    def __init__(self, reg: CollectorRegistry) -> None:
        self.claimed = Counter(
            "eventix_worker_tasks_claimed", "Tasks this worker claimed.", registry=reg
        )
        outcomes = Counter(
            "eventix_worker_tasks",
            "Task outcomes this worker recorded: succeeded, or failed (an attempt that "
            "raised, timed out or returned what JSON cannot hold; it may be retried).",
            ["outcome"],
            registry=reg,
        )
        self.succeeded = outcomes.labels("succeeded")
        self.failed = outcomes.labels("failed")
        self.durations = BatchHistogram(
            "eventix_worker_task_duration_seconds",
            "How long tasks ran (tasks run in one thread hand-off count at their average).",
            DURATION_BUCKETS,
        )
        reg.register(self.durations)
        self.running = Gauge(
            "eventix_worker_tasks_running", "Tasks this worker is running now.", registry=reg
        )

    def recorded(self, succeeded: int, failed: int) -> None:
        if succeeded:
            self.succeeded.inc(succeeded)
        if failed:
            self.failed.inc(failed)

    def track_running(self, running: Callable[[], float]) -> None:
        """Read the running count at scrape time (costs the worker nothing)."""
        self.running.set_function(running)


@one_per_process
def worker_metrics() -> WorkerMetrics:
    return WorkerMetrics(registry())
