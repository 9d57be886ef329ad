"""Prometheus plumbing shared by the eventix processes.

One registry per process, made on first use, and served on
``EVENTIX_METRICS_PORT`` only by a process that calls :func:`serve` (the
operator and the worker do; the CLI and the tests import this module and serve
nothing). Nothing happens at import time. What each process exports lives
beside it: :mod:`eventix_operator.worker.metrics`,
:mod:`eventix_operator.operator.metrics`, and the scheduler's lateness in
:mod:`eventix_operator.schedules.loop`.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from eventix_operator.logs import get_logger

log = get_logger("eventix.metrics")

T = TypeVar("T")
_making = threading.RLock()


def one_per_process(make: Callable[[], T]) -> Callable[[], T]:
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


@one_per_process
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
