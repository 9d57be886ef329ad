"""Queue settings with real worker processes: a concurrency limit and a rate limit
that hold across four workers, and pause / resume through the CLI during a drain.
Starts are the claims' times in the database (``started_at``, the time the limit
is counted at); overlap is what the tasks themselves recorded."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

from eventix_operator import enqueue_many
from eventix_operator.db import queues
from eventix_operator.db.queues import everything
from tests.support.processes import Processes


def add(engine: Engine, queue: str, count: int, seconds: float) -> None:
    with engine.begin() as conn:
        enqueue_many([{"task": "tests.span", "queue": queue, "args": [i, seconds]}
                      for i in range(count)], connection=conn)  # fmt: skip


def done(engine: Engine, queue: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            text("SELECT count(*) FROM eventix_task WHERE namespace = :q AND status = 'done'"),
            {"q": queue},
        ).scalar_one())  # fmt: skip


def starts(engine: Engine, queue: str) -> list[float]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT extract(epoch FROM started_at) FROM eventix_task "
                 "WHERE namespace = :q AND started_at IS NOT NULL ORDER BY started_at"),
            {"q": queue},
        )  # fmt: skip
        return [float(r[0]) for r in rows]


def spans(processes: Processes) -> list[tuple[float, float]]:
    out = []
    for path in processes.record_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            if line.startswith("span "):
                _, _, start, end = line.split()
                out.append((float(start), float(end)))
    return out


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    # An end sorts before a start at the same instant: touching is not overlapping.
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def most_in_a_window(times: list[float], seconds: float) -> int:
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_four_workers_never_run_more_than_the_concurrency_limit(
    processes: Processes, engine: Engine
) -> None:
    add(engine, "lim", 60, 0.05)
    with engine.begin() as conn:
        queues.set_queue(conn, "lim", everything(concurrency_limit=3))
    for _ in range(4):
        processes.worker("--queues", "lim", "--concurrency", "4")
    processes.wait_for(lambda: done(engine, "lim") == 60, 60, "the queue to drain")
    recorded = spans(processes)
    assert len(recorded) == 60
    assert max_overlap(recorded) <= 3
    assert max_overlap(recorded) >= 2  # the limit is not a queue of one


def test_four_workers_never_start_more_than_the_rate_limit(
    processes: Processes, engine: Engine
) -> None:
    add(engine, "rate", 200, 0.0)
    with engine.begin() as conn:
        queues.set_queue(conn, "rate", everything(rate_count=10, rate_per_seconds=1.0))
    for _ in range(4):
        processes.worker("--queues", "rate", "--concurrency", "4")
    processes.wait_for(lambda: done(engine, "rate") >= 40, 30, "four seconds of starts")
    times = starts(engine, "rate")
    assert most_in_a_window(times, 1.0) <= 10
    assert len(times) < 200  # still limited, not drained


def test_pause_stops_starts_during_a_drain_and_resume_restarts_them(
    processes: Processes, engine: Engine
) -> None:
    # 1,000 tasks of 20 ms on 4 slots: at least 5 s of drain, longer than the CLI's
    # start (which can take a second or two on a loaded machine) and the wait after.
    add(engine, "p", 1000, 0.02)
    for _ in range(2):
        processes.worker("--queues", "p", "--concurrency", "2")
    processes.wait_for(lambda: done(engine, "p") >= 20, 30, "the drain to start")
    paused = processes.cli("queue", "pause", "p")
    assert paused.returncode == 0, paused.stderr
    with engine.connect() as conn:
        after_pause = float(conn.execute(text("SELECT extract(epoch FROM clock_timestamp())"))
                            .scalar_one())  # fmt: skip
    time.sleep(1.0)
    assert not [t for t in starts(engine, "p") if t > after_pause]
    assert done(engine, "p") < 1000
    resumed = processes.cli("queue", "resume", "p")
    assert resumed.returncode == 0, resumed.stderr
    processes.wait_for(lambda: done(engine, "p") == 1000, 60, "the drain to finish")
    shown = processes.cli("queue", "show", "p", "--output", "json")
    assert '"paused": false' in shown.stdout
