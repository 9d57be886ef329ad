"""Cancel-to-stopped latency of running tasks (docs/cancelling.md).

Run from the repository root (``pip install -e '.[test]'``; Debian's ``pgbouncer``
for the fallback rows)::

    python bench/cancel.py                 # 50 cancels of each kind, both ways; ~2 min
    python bench/cancel.py --cancels 20    # a quick look

For each way a worker hears of a cancel (``listen``: a direct connection, NOTIFY;
``pooled``: through PgBouncer in transaction mode, where LISTEN hears nothing, so the
worker looks every EVENTIX_WORKER_CANCEL_POLL_INTERVAL) and each kind of task (async;
sync that checks ``current_task().cancelled``; sync that ignores it, recorded after
EVENTIX_WORKER_CANCEL_GRACE), one real ``eventix worker`` process runs ``--concurrency``
tasks at a time; each round starts that many, cancels each (``admin.cancel_task``, the
statement behind the CLI, the REST route and the dashboard), and waits until all are
``cancelled``. The latency of one cancel is the row's ``finished_at`` minus its
``cancel_requested_at``, both by the database's clock: from the cancel's commit to
the worker's record of the end. Nothing here asserts; bench/README.md, "Cancelling",
has the figures of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)  # see bench/throughput.py: bench/operator.py shadows operator
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import cancel_tasks  # noqa: E402
from bench.throughput import (  # noqa: E402
    TEMPLATE,
    Server,
    installed,
    load_average,
    newest_bundled_bin_dir,
    platform_line,
    say,
)
from eventix_operator.client import enqueue_many  # noqa: E402
from eventix_operator.db import admin  # noqa: E402
from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402
from tests.support.pgbouncer import PgBouncer, ensure_pgbouncer  # noqa: E402

KINDS = {
    "async": cancel_tasks.ASYNC,
    "sync, checks the flag": cancel_tasks.COOPERATIVE,
    "sync, ignores it": cancel_tasks.STUBBORN,
}
STATUS = "SELECT uid::text, status FROM eventix_task WHERE uid = ANY(CAST(:uids AS uuid[]))"
LATENCY = """
SELECT extract(epoch FROM finished_at - cancel_requested_at) FROM eventix_task
WHERE uid = ANY(CAST(:uids AS uuid[])) AND status = 'cancelled'
"""


def wait(engine: Engine, uids: list[str], wanted: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            states = {s for _, s in conn.execute(text(STATUS), {"uids": uids})}
        if states <= wanted:
            return
        time.sleep(0.01)
    raise RuntimeError(f"tasks did not reach {wanted} within {timeout}s")


@contextlib.contextmanager
def worker(url: str, options: argparse.Namespace, log: Path) -> Iterator[None]:
    env = {
        **os.environ, "DATABASE_URL": url, "EVENTIX_LOG_LEVEL": "WARNING",
        "EVENTIX_METRICS_PORT": "0", "PYTHONPATH": str(REPO),
        "EVENTIX_WORKER_CANCEL_GRACE": str(options.grace),
    }  # fmt: skip
    cmd = [str(Path(sys.executable).parent / "eventix"), "worker", "--tasks", "bench.cancel_tasks",
           "--concurrency", str(options.concurrency)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)  # started, listening (or known not to)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(engine: Engine, task: str, options: argparse.Namespace) -> list[float]:
    """Rounds of ``concurrency`` running tasks, each cancelled; the latencies."""
    latencies: list[float] = []
    seconds = options.grace + 1.0 if task == cancel_tasks.STUBBORN else 120.0
    while len(latencies) < options.cancels:
        n = min(options.concurrency, options.cancels - len(latencies))
        with engine.begin() as conn:
            uids = enqueue_many([{"task": task, "args": [seconds]} for _ in range(n)],
                                connection=conn)  # fmt: skip
        wait(engine, uids, {"processing"})
        time.sleep(0.2)  # every one started, not just claimed
        for uid in uids:
            with engine.begin() as conn:
                admin.cancel_task(conn, uid, "cli")
            time.sleep(0.02)  # one at a time, as people cancel
        wait(engine, uids, {"cancelled"})
        with engine.connect() as conn:
            latencies += [float(x) for (x,) in conn.execute(text(LATENCY), {"uids": uids})]
        if task == cancel_tasks.STUBBORN:
            time.sleep(1.2)  # their threads return (results dropped) before the next round
    return latencies


def row(way: str, kind: str, values: list[float]) -> str:
    p50, p99 = (statistics.quantiles(values, n=100, method="inclusive")[i] for i in (49, 98))
    ms = [f"{v * 1000:,.1f}" for v in (p50, p99, max(values))]
    return f"| {way} | {kind} | {len(values)} | {' | '.join(ms)} |"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cancels", type=int, default=50, help="cancels per kind and way")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--grace", type=float, default=1.0, help="EVENTIX_WORKER_CANCEL_GRACE")
    options = parser.parse_args(argv)
    workdir = scratch_directory("eventix-bench-cancel-")
    embedded = EmbeddedPostgres(workdir / "pgdata")
    embedded.bin_dir = newest_bundled_bin_dir()
    embedded.start()
    server = Server(embedded)
    bouncer = PgBouncer(ensure_pgbouncer(), "127.0.0.1", embedded.port)
    rows: list[str] = []
    loads: list[str] = []
    try:
        with server.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        engine = create_engine(server.sqlalchemy_url(TEMPLATE))
        upgrade(engine)
        engine.dispose()
        bouncer.start()
        for way in ("listen", "pooled"):
            database = server.fresh_database(way)
            url = server.sqlalchemy_url(database)
            worker_url = url if way == "listen" else bouncer.pooled(url)
            engine = create_engine(url)
            with worker(worker_url, options, workdir / f"worker-{way}.log"):
                for kind, task in KINDS.items():
                    loads.append(load_average())
                    values = measure(engine, task, options)
                    rows.append(row(way, kind, values))
                    say(rows[-1])
            engine.dispose()
            bouncer.release(database)
        say(
            f"\ncancel-to-stopped, {options.cancels} cancels per row, concurrency "
            f"{options.concurrency}, grace {options.grace:g} s; machine: {os.cpu_count()} CPUs, "
            f"{platform_line()}; eventix-operator {installed('eventix-operator')}"
        )
        say(f"load average (1/5/15 min) at each row's start: {'; '.join(loads)}\n")
        say("| way | task | cancels | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
        say("\n".join(rows))
    finally:
        bouncer.destroy()
        embedded.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
