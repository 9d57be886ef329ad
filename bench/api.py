"""Throughput and latency of the Eventix-compatible REST API.

Run from the repository root::

    python bench/api.py [--connections 32] [--seconds 10] [--server-workers 1]

It starts an embedded PostgreSQL server (default, durable settings) unless
``--database-url`` names one, migrates a fresh database, starts ``eventix api``
(``python -m eventix_operator.api.serve``) on a loopback port, and drives it from
a separate load process over a fixed number of keep-alive connections with a
small asyncio HTTP/1.1 client (an off-the-shelf client costs more CPU than the
server it measures, on the same cores). Three phases, each bounded in requests
and in seconds:

- ``POST /task``: an Eventix client's whole task document, a new uid each time;
- worker cycle: ``GET /tasks/next_scheduled`` then ``PUT /task/{uid}`` with the
  result, as Eventix's ``TaskWorker`` does, over the tasks the first phase made;
- ``POST /event``: an event that one declarative trigger turns into a task.

It prints requests (or tasks) per second, p50 and p99 latency, and the server's
peak RSS (VmHWM). A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

NAMESPACE = "bench"
EVENT = "bench.event"


# -- a small HTTP/1.1 keep-alive client ---------------------------------------------


class Connection:
    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Phase:
    name: str
    requests: int = 0
    units: int = 0  # tasks for the worker cycle, requests otherwise
    errors: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0  # seconds of CPU the server processes used in the phase
    postgres_cpu: float = 0.0  # ... PostgreSQL's backends (embedded server only)
    load_cpu: float = 0.0  # ... this load process
    latencies: list[float] = field(default_factory=list)

    def per_request(self, seconds: float) -> int:
        return round(seconds / self.requests * 1e6) if self.requests else 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

        return {
            "phase": self.name,
            "requests": self.requests,
            "units": self.units,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "per_second": round(self.units / self.seconds, 1) if self.seconds else 0.0,
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
            "server_cpu_us_per_request": self.per_request(self.server_cpu),
            "postgres_cpu_us_per_request": self.per_request(self.postgres_cpu),
            "load_cpu_us_per_request": self.per_request(self.load_cpu),
        }


def task_document(n: int) -> bytes:
    """What Eventix's ``TaskScheduler.task_post`` sends: the whole model dump."""
    now = datetime.now(UTC).isoformat()
    return json.dumps(
        {
            "uid": uuid.uuid4().hex,
            "revision": None,
            "version": 1,
            "created_time": now,
            "updated_time": now,
            "unique_key": None,
            "eta": now,
            "scheduled": now,
            "status": "scheduled",
            "priority": 0,
            "namespace": NAMESPACE,
            "task": "bench_noop",
            "args": [n, "some text"],
            "kwargs": {"flag": True},
            "worker_id": None,
            "worker_expires": None,
            "retry": True,
            "max_retries": 3,
            "error_eta_inc": 15,
            "error_eta_max": 300,
            "store_result": True,
            "result": None,
            "error_expires": None,
            "result_expires": 604800,
            "expires": None,
            "operator": "bench",
        }
    ).encode()


async def drive(
    name: str,
    conns: list[Connection],
    step: Callable[[Connection, int, Phase], Awaitable[bool]],
    *,
    max_requests: int,
    seconds: float,
    server_pid: int = 0,
    postgres_pid: int = 0,
) -> Phase:
    """Run ``step`` on every connection until the request budget or the time is
    spent, or ``step`` says there is nothing left."""
    phase = Phase(name)
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def loop(conn: Connection) -> None:
        while phase.requests < max_requests and time.perf_counter() < deadline:
            if not await step(conn, next(counter), phase):
                return

    cpu = server_cpu_seconds(server_pid), server_cpu_seconds(postgres_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in conns))
    phase.seconds = time.perf_counter() - started
    phase.server_cpu = server_cpu_seconds(server_pid) - cpu[0]
    phase.postgres_cpu = server_cpu_seconds(postgres_pid) - cpu[1]
    phase.load_cpu = time.process_time() - cpu[2]
    return phase


async def timed(
    conn: Connection, phase: Phase, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    t = time.perf_counter()
    status, payload = await conn.request(method, path, body)
    phase.latencies.append(time.perf_counter() - t)
    phase.requests += 1
    if status >= 400:
        phase.errors += 1
    return status, payload


async def post_task(conn: Connection, n: int, phase: Phase) -> bool:
    status, _ = await timed(conn, phase, "POST", "/task", task_document(n))
    phase.units += status == 200
    return True


async def worker_cycle(conn: Connection, n: int, phase: Phase) -> bool:
    worker = f"bench-{id(conn)}"
    status, payload = await timed(
        conn, phase, "GET", f"/tasks/next_scheduled?worker_id={worker}&namespace={NAMESPACE}"
    )
    if status == 204:
        return False
    task = json.loads(payload)
    task.update(status="done", result={"ok": task["args"][0]}, worker_expires=None)
    status, _ = await timed(conn, phase, "PUT", f"/task/{task['uid']}", json.dumps(task).encode())
    phase.units += status == 200
    return True


async def post_event(conn: Connection, n: int, phase: Phase) -> bool:
    body = json.dumps(
        {"name": EVENT, "namespace": "events", "priority": 0, "payload": {"order": n}}
    ).encode()
    status, _ = await timed(conn, phase, "POST", "/event", body)
    phase.units += status == 200
    return True


def server_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [pid, *(int(p) for p in children.read_text().split())] if children.exists() else [pid]


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server and its worker processes (Linux /proc)."""
    if not pid:
        return 0.0
    ticks = 0
    for p in server_processes(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def load(args: argparse.Namespace) -> list[dict[str, Any]]:
    conns = [Connection("127.0.0.1", args.port, args.token) for _ in range(args.connections)]
    await asyncio.gather(*(c.open() for c in conns))
    # Warm up every connection and the server's pool.
    await drive("warm-up", conns, post_task, max_requests=4 * len(conns), seconds=5)
    results = []
    for name, step in (("POST /task", post_task), ("worker cycle", worker_cycle)):
        phase = await drive(
            name, conns, step, max_requests=args.requests, seconds=args.seconds,
            server_pid=args.server_pid,
            postgres_pid=args.postgres_pid,
        )  # fmt: skip
        results.append(phase.summary())
    phase = await drive(
        "POST /event", conns, post_event, max_requests=args.requests, seconds=args.seconds,
        server_pid=args.server_pid,
        postgres_pid=args.postgres_pid,
    )  # fmt: skip
    results.append(phase.summary())
    await asyncio.gather(*(c.close() for c in conns))
    return results


# -- orchestration ------------------------------------------------------------------


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a process and of its children (uvicorn's worker processes)."""
    total = 0
    for p in server_processes(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the API did not listen on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an existing server (it must allow CREATE DATABASE)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="most seconds per phase")
    parser.add_argument("--requests", type=int, default=60_000, help="most requests per phase")
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--pool-size", type=int, default=16, help="EVENTIX_DB_POOL_SIZE")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--postgres-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        import uvloop

        print(json.dumps(uvloop.run(load(args))))
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from eventix_operator.db.migrate import upgrade
    from eventix_operator.db.triggers import upsert_trigger
    from eventix_operator.embedded import EmbeddedPostgres, free_port, scratch_directory

    workdir = scratch_directory("eventix-bench-api-")
    embedded = None
    if args.database_url:
        admin_url = args.database_url
    else:
        embedded = EmbeddedPostgres(workdir / "pgdata")  # default, durable settings
        admin_url = embedded.start()
    server = None
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = f"bench_api_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
            settings = {
                k: conn.execute(text(f"SHOW {k}")).scalar()
                for k in ("fsync", "synchronous_commit", "shared_buffers")
            }
        admin.dispose()
        url = make_url(admin_url).set(database=name).render_as_string(False)
        engine = create_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            upsert_trigger(
                conn,
                uid="bench-trigger",
                name="bench-trigger",
                event_name=EVENT,
                template={"task": "bench_noop", "args": ["{{ payload.order }}"]},
            )
        engine.dispose()

        postmaster = (
            int((embedded.data_dir / "postmaster.pid").read_text().split()[0]) if embedded else 0
        )
        port = free_port()
        env = dict(
            os.environ,
            DATABASE_URL=url,
            EVENTIX_LOG_LEVEL="WARNING",
            EVENTIX_DB_POOL_SIZE=str(args.pool_size),
            EVENTIX_DB_POOL_PRE_PING="false",
            EVENTIX_API_ALLOW_ANONYMOUS="true",  # loopback; what is measured is the API
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "eventix_operator.api.serve", "--port", str(port),
             "--workers", str(args.server_workers)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=(workdir / "server.log").open("wb"),
        )  # fmt: skip
        wait_for_port(port)
        print(
            f"server: {args.server_workers} process(es), pool {args.pool_size}; "
            f"load: {args.connections} connections; PostgreSQL {settings}",
            file=sys.stderr,
        )
        load = subprocess.run(
            [sys.executable, __file__, "--load", "--port", str(port),
             "--connections", str(args.connections), "--seconds", str(args.seconds),
             "--requests", str(args.requests), "--server-pid", str(server.pid),
             "--postgres-pid", str(postmaster)],
            cwd=REPO, capture_output=True, text=True, check=True,
            timeout=3 * args.seconds + 120,
        )  # fmt: skip
        rss = peak_rss_kib(server.pid)
        results = json.loads(load.stdout)
        header = f"{'phase':<14}{'per s':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        print(f"{header}{'n':>9}{'err':>6}   CPU us/req: server / postgres / load")
        for r in results:
            print(
                f"{r['phase']:<14}{r['per_second']:>10}{r['requests_per_second']:>10}"
                f"{r['p50_ms']:>9}{r['p99_ms']:>9}{r['units']:>9}{r['errors']:>6}"
                f"{r['server_cpu_us_per_request']:>20} / {r['postgres_cpu_us_per_request']}"
                f" / {r['load_cpu_us_per_request']}"
            )
        print(f"server peak RSS (VmHWM): {rss / 1024:.1f} MiB")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
        if embedded is not None:
            embedded.destroy()


if __name__ == "__main__":
    main()
