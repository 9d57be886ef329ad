"""Prometheus metrics of the eventix processes.

One registry per process, made on first use, and served on
``EVENTIX_METRICS_PORT`` only by a process that calls :func:`serve` (the
operator and the worker do; the CLI and the tests import this module and serve
nothing). Nothing happens at import time.

What each process exports:

- operator: queue figures read from the database by the status-sync leader
  (gauges: they describe the table now, and finished rows disappear when their
  results expire), whether it leads, reconcile errors, schedule lateness and
  missed runs, pool decisions and the replicas their targets have;
- worker: task outcomes and claims (counters), task durations (histogram),
  tasks running (gauge). The worker runs 20 000 no-op tasks a second, so its
  figures are added once per batch, never per task: a histogram that takes a
  batch of equal observations in one step, counters bumped per recorded batch.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from eventix_operator.logs import get_logger

log = get_logger("eventix.metrics")

T = TypeVar("T")
_making = threading.RLock()


def _one_per_process(make: Callable[[], T]) -> Callable[[], T]:
    """Make on first call, under a lock (first calls may come from two threads)."""
    made: list[T] = []

    @functools.wraps(make)
    def get() -> T:
        if not made:
            with _making:
                if not made:
                    made.append(make())
        return made[0]

    return get


#: Task durations, from a no-op (well under a millisecond) to long batch jobs.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
#: How late a schedule tick was enqueued; the scheduler aims at well under a second.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


@_one_per_process
def registry() -> CollectorRegistry:
    """The process's registry, with the standard process, platform and GC figures."""
    reg = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


def serve(port: int, addr: str = "0.0.0.0") -> WSGIServer | None:
    """Serve ``/metrics`` on ``port`` in a daemon thread; 0 serves nothing. A port
    already taken is logged, not raised: metrics are worth less than the work."""
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr, registry=registry())
    except OSError as exc:
        log.warning("metrics endpoint not started", port=port, error=str(exc))
        return None
    log.info("serving metrics", port=port, path="/metrics")
    return server


class BatchHistogram(Collector):
    """A histogram fed ``count`` equal observations in one step.

    prometheus_client's Histogram takes one observation per call, under a lock;
    the worker knows the average duration of a batch of tasks that ran in one
    thread hand-off, and adding the batch at once keeps the hot path to a bisect
    and two additions. Written from one thread (the worker's event loop), read by
    the scrape thread: a scrape may see the sum a batch ahead of the buckets,
    never a lost update.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = [*sorted(buckets), math.inf]
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=())
        cumulative, buckets = 0, []
        for bound, n in zip(self.bounds, list(self.counts), strict=True):
            cumulative += n
            buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(cumulative)))
        family.add_metric((), buckets, self.sum)
        yield family


# -- worker ----------------------------------------------------------------------


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


@_one_per_process
def worker_metrics() -> WorkerMetrics:
    return WorkerMetrics(registry())


# -- scheduler -------------------------------------------------------------------


@_one_per_process
def schedule_lateness() -> Histogram:
    """Seconds between a tick and the moment its task was enqueued."""
    return Histogram(
        "eventix_schedule_lateness_seconds",
        "How late schedule ticks were enqueued, from the tick instant.",
        buckets=LATENESS_BUCKETS,
        registry=registry(),
    )


@_one_per_process
def schedule_missed_runs() -> Counter:
    """Due ticks a schedule did not run, by schedule ("namespace/name") and reason."""
    return Counter(
        "eventix_schedule_missed_runs",
        "Due ticks a schedule did not run: forbid (a run was still active; one per tick), "
        "catch_up (ticks lost to downtime beyond catchUp, startingDeadlineSeconds or "
        "maxCatchUpRuns; one per catch-up).",
        ["schedule", "reason"],
        registry=registry(),
    )


# -- operator --------------------------------------------------------------------


class QueueFigures(Protocol):
    """One queue's figures (eventix_operator.db.pools.QueueMetrics fits)."""

    @property
    def queue(self) -> str: ...
    @property
    def due(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def oldest_due_seconds(self) -> float | None: ...
    @property
    def done(self) -> int | None: ...
    @property
    def failed(self) -> int | None: ...


class QueueCollector(Collector):
    """The latest queue figures, replaced as a whole so that a scrape never sees
    half of one refresh; empty on replicas that do not lead (figures describe
    the database, and one replica reporting them keeps sums across replicas true)."""

    def __init__(self) -> None:
        self.figures: tuple[QueueFigures, ...] = ()
        self.finished: dict[str, tuple[int, int]] = {}  # queue -> (done, failed), last counted

    def update(self, figures: Iterable[QueueFigures] | None) -> None:
        if figures is None:
            self.figures, self.finished = (), {}
            return
        new = tuple(figures)
        if any(f.done is not None for f in new):
            self.finished = {f.queue: (f.done or 0, f.failed or 0) for f in new}
        self.figures = new

    def collect(self) -> Iterator[Metric]:
        figures, finished = self.figures, self.finished
        gauges = {
            "due": GaugeMetricFamily(
                "eventix_queue_due_tasks", "Pending tasks whose eta has passed.", labels=["queue"]
            ),
            "pending": GaugeMetricFamily(
                "eventix_queue_pending_tasks",
                "Pending tasks, due or not (scheduled and retry).",
                labels=["queue"],
            ),
            "running": GaugeMetricFamily(
                "eventix_queue_running_tasks", "Tasks a worker holds a lease on.", labels=["queue"]
            ),
            "oldest": GaugeMetricFamily(
                "eventix_queue_oldest_due_seconds",
                "Age of the oldest due task (0 when none is due).",
                labels=["queue"],
            ),
        }
        kept = GaugeMetricFamily(
            "eventix_queue_finished_tasks",
            "Finished tasks still kept in the table, by status (done, error); a gauge: it "
            "falls when results expire. Rates of work come from eventix_worker_tasks_total.",
            labels=["queue", "status"],
        )
        for f in figures:
            gauges["due"].add_metric([f.queue], f.due)
            gauges["pending"].add_metric([f.queue], f.pending)
            gauges["running"].add_metric([f.queue], f.running)
            gauges["oldest"].add_metric([f.queue], f.oldest_due_seconds or 0.0)
        for queue, (done, failed) in sorted(finished.items()):
            kept.add_metric([queue, "done"], done)
            kept.add_metric([queue, "error"], failed)
        yield from gauges.values()
        yield kept


class OperatorMetrics:
    def __init__(self, reg: CollectorRegistry) -> None:
        self.queues = QueueCollector()
        reg.register(self.queues)
        self.reconcile_errors = Counter(
            "eventix_operator_reconcile_errors",
            "Failed reconciliations by resource kind (kopf handler errors, scaler errors).",
            ["kind"],
            registry=reg,
        )
        self.desired_replicas = Gauge(
            "eventix_pool_desired_replicas",
            "Replicas a worker pool's scaler last set on its target.",
            ["namespace", "pool"],
            registry=reg,
        )
        self.current_replicas = Gauge(
            "eventix_pool_current_replicas",
            "Replicas a worker pool's target had when its scaler last looked (status.replicas).",
            ["namespace", "pool"],
            registry=reg,
        )
        self.scalings = Counter(
            "eventix_pool_scalings",
            "Changes a worker pool's scaler made to its target, by direction.",
            ["namespace", "pool", "direction"],
            registry=reg,
        )
        self.leader = Gauge(
            "eventix_operator_leader",
            "1 on the operator replica that holds the leader lock (status sync, queue "
            "figures), else 0. Summed over replicas: 1 when all is well.",
            registry=reg,
        )

    def forget_pool(self, namespace: str, pool: str) -> None:
        for metric, extra in (
            (self.desired_replicas, [()]),
            (self.current_replicas, [()]),
            (self.scalings, [("up",), ("down",)]),
        ):
            for labels in extra:
                with contextlib.suppress(KeyError):
                    metric.remove(namespace, pool, *labels)

    def count_kopf_errors(self) -> Callable[[], None]:
        """Count kopf handler failures (which kopf logs at ERROR on ``kopf.objects``,
        with the object's kind) without wrapping every handler; returns the undo."""
        handler = _KopfErrors(self.reconcile_errors)
        logger = logging.getLogger("kopf.objects")
        logger.addHandler(handler)
        return lambda: logger.removeHandler(handler)


class _KopfErrors(logging.Handler):
    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.ERROR)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        ref = getattr(record, "k8s_ref", None)
        kind = ref.get("kind") if isinstance(ref, dict) else None
        self.counter.labels(str(kind or "unknown")).inc()


@_one_per_process
def operator_metrics() -> OperatorMetrics:
    return OperatorMetrics(registry())
