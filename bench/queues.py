"""Queue settings with real worker processes: what a limit lets through, and how fast a
pause and a resume act (issue #15).

    python bench/queues.py [concurrency|rate|pause|all] [--rate-seconds 30]

One embedded PostgreSQL server (durable defaults) and real ``eventix worker`` processes
listening for notifications. Figures only, nothing asserted (the limits themselves are
tested in tests/acceptance/test_queue_limits.py); see bench/README.md, "Queue settings".

- concurrency: 4 workers (concurrency 4 each), concurrencyLimit 3, 300 tasks of 50 ms:
  tasks per second against the ideal 3 / 0.05 s = 60/s, and the most running at once
  (from the claim and finish times in the database).
- rate: rateLimit 10 per second, 4 workers, a backlog of 1,000 tasks that return at once,
  for --rate-seconds: starts used of those allowed, and the most starts in any 1-s window.
- pause: 2 workers draining 50-ms tasks; pause-to-last-start (the claim in flight) and
  resume-to-first-start, five times each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)  # bench/operator.py would shadow the stdlib's operator
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from bench.noop_tasks import SLEEP  # noqa: E402
from eventix_operator import enqueue_many  # noqa: E402
from eventix_operator.db import queues  # noqa: E402
from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def workers(url: str, queue: str, count: int, logs: Path, **extra: str) -> Iterator[None]:
    env = {**os.environ, "DATABASE_URL": url, "EVENTIX_LOG_LEVEL": "WARNING", **extra}
    command = [sys.executable, "-m", "eventix_operator", "worker", "--tasks",
               "bench.noop_tasks", "--queues", queue, "--concurrency", "4"]  # fmt: skip
    procs = []
    for i in range(count):
        log = (logs / f"{queue}-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def add(engine: Engine, queue: str, count: int, seconds: float) -> None:
    with engine.begin() as conn:
        enqueue_many([{"task": SLEEP, "queue": queue, "args": [seconds]} for _ in range(count)],
                     connection=conn)  # fmt: skip


def scalar(engine: Engine, sql: str, **params: object) -> float:
    with engine.connect() as conn:
        return float(conn.execute(text(sql), params).scalar_one() or 0)


def done(engine: Engine, queue: str) -> int:
    return int(scalar(engine, "SELECT count(*) FROM eventix_task WHERE namespace = :q "
                      "AND status = 'done'", q=queue))  # fmt: skip


def starts(engine: Engine, queue: str) -> list[float]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT extract(epoch FROM started_at) FROM eventix_task "
                                 "WHERE namespace = :q AND started_at IS NOT NULL "
                                 "ORDER BY started_at"), {"q": queue})  # fmt: skip
        return [float(r[0]) for r in rows]


def concurrency(engine: Engine, url: str, logs: Path) -> None:
    add(engine, "lim", 300, 0.05)
    with engine.begin() as conn:
        queues.set_queue(conn, "lim", queues.everything(concurrency_limit=3))
    with workers(url, "lim", 4, logs):
        while done(engine, "lim") < 300:
            time.sleep(0.05)
    # The tasks' own start and end times: the database's started_at is the claim's
    # transaction start (before it waited for the queue's lock) and finished_at the
    # write-back's, so their intervals overlap where the tasks never ran together.
    with engine.connect() as conn:
        rows = [tuple(r[0]) for r in conn.execute(text(
            "SELECT result FROM eventix_task WHERE namespace = 'lim'"))]  # fmt: skip
    first, last = min(r[0] for r in rows), max(r[1] for r in rows)
    events = sorted([(float(s), 1) for s, _ in rows] + [(float(e), -1) for _, e in rows])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    per_second = len(rows) / float(last - first)
    print(f"concurrency: 300 tasks of 50 ms, limit 3, 4 workers: {per_second:.1f} tasks/s "
          f"({per_second / 60:.0%} of the ideal 60/s); most running at once {peak}; "
          f"load {load()}")  # fmt: skip


def rate(engine: Engine, url: str, logs: Path, seconds: float, poll: str | None) -> None:
    queue = f"rate-{poll or 'default'}"
    add(engine, queue, 1000, 0.0)
    with engine.begin() as conn:
        queues.set_queue(conn, queue, queues.everything(rate_count=10, rate_per_seconds=1.0))
    extra = {"EVENTIX_WORKER_POLL_INTERVAL": poll} if poll else {}
    with workers(url, queue, 4, logs, **extra):
        while not starts(engine, queue):
            time.sleep(0.01)
        time.sleep(seconds)
    times = starts(engine, queue)
    begin = times[0]
    within = [t for t in times if t < begin + seconds]
    most, first = 0, 0
    for i, t in enumerate(within):
        while t - within[first] >= 1.0:
            first += 1
        most = max(most, i - first + 1)
    allowed = 10 * seconds
    print(f"rate: 10/s over {seconds:.0f} s, 4 workers (poll interval {poll or 'default'} s), "
          f"backlog 1,000: {len(within)} starts "
          f"of {allowed:.0f} allowed ({len(within) / allowed:.0%}); most in a 1-s window "
          f"{most}; load {load()}")  # fmt: skip


def pause(engine: Engine, url: str, logs: Path) -> None:
    add(engine, "p", 2000, 0.05)
    to_last, to_first = [], []
    with workers(url, "p", 2, logs):
        while done(engine, "p") < 20:
            time.sleep(0.01)
        for _ in range(5):
            time.sleep(0.5)
            with engine.begin() as conn:
                queues.pause(conn, "p")
            paused = scalar(engine, "SELECT extract(epoch FROM clock_timestamp())")
            time.sleep(1.0)
            last = max(starts(engine, "p"))
            to_last.append(last - paused)
            with engine.begin() as conn:
                queues.resume(conn, "p")
            resumed = scalar(engine, "SELECT extract(epoch FROM clock_timestamp())")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and max(starts(engine, "p")) <= resumed:
                time.sleep(0.005)
            to_first.append(max(starts(engine, "p")) - resumed)
    ms = lambda xs: ", ".join(f"{x * 1000:.0f}" for x in xs)  # noqa: E731
    print(f"pause: pause-to-last-start ms {ms(to_last)} (negative: the last start came before "
          f"the pause returned); resume-to-first-start ms {ms(to_first)} (median "
          f"{statistics.median(to_first) * 1000:.0f}); load {load()}")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all",
                        choices=["concurrency", "rate", "pause", "all"])  # fmt: skip
    parser.add_argument("--rate-seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    work = scratch_directory("eventix-bench-queues-")
    embedded = EmbeddedPostgres(work / "pgdata")
    url = embedded.start()
    engine = create_engine(url)
    try:
        upgrade(engine)
        print(f"load before: {load()}")
        if args.what in ("concurrency", "all"):
            concurrency(engine, url, work)
        if args.what in ("rate", "all"):
            rate(engine, url, work, args.rate_seconds, None)
            rate(engine, url, work, args.rate_seconds, "0.25")
        if args.what in ("pause", "all"):
            pause(engine, url, work)
    finally:
        engine.dispose()
        embedded.destroy()


if __name__ == "__main__":
    main()
