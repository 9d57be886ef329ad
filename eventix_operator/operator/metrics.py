"""The operator's Prometheus metrics: queue figures read from the database by
the status-sync leader (gauges: they describe the table now, and finished rows
disappear when their results expire), whether it leads, reconcile errors, pool
decisions and the replicas their targets have. (The scheduler it runs adds its
lateness and missed runs, see :mod:`eventix_operator.schedules.loop`.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eventix_operator.db.pools import QueueMetrics
from eventix_operator.metrics import one_per_process, registry


class QueueCollector(Collector):
    """The latest queue figures, replaced as a whole so that a scrape never sees
    half of one refresh; empty on replicas that do not lead (figures describe
    the database, and one replica reporting them keeps sums across replicas true)."""

    def __init__(self) -> None:
        self.figures: tuple[QueueMetrics, ...] = ()
        self.finished: dict[str, tuple[int, int]] = {}  # queue -> (done, failed), last counted

    def update(self, figures: Iterable[QueueMetrics] | None) -> None:
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


@one_per_process
def operator_metrics() -> OperatorMetrics:
    return OperatorMetrics(registry())
