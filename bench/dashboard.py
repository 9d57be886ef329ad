"""Server time of each dashboard page with a million tasks in the table.

Run from the repository root::

    python bench/dashboard.py [--rows 1000000] [--requests 30]

It starts an embedded PostgreSQL server (default, durable settings) unless
``--database-url`` names one, migrates a fresh database and fills it with SQL
(``INSERT … SELECT generate_series``, in batches): ``--rows`` tasks over seven
days in eight queues of skewed sizes (mostly done, some failed, a backlog, retries,
5,000 running on 40 workers with live leases), 30 task names (one of them rare),
six origins, unique keys on a fifth of them, 60,000 finished in the last hour;
50 schedules with runs, 10 worker pools with an hour of samples, 20 triggers.
Then ``VACUUM ANALYZE`` (what autovacuum does to a table that size), ``eventix
api`` on a loopback port, and its first throughput roll-up.

Each page is requested ``--warmup`` times, then ``--requests`` times one after
another, signed in; the figure is the server's own ``Server-Timing`` (from the
request reaching the dashboard to its answer starting: database, Python and
template), with the time the client saw beside it. min / median / p95 / max in
milliseconds. "CPU ms" is the CPU time the API process and the PostgreSQL server
spent per request (from /proc; "-" when the server is not on this machine): what
the page costs whatever else the machine runs, while the server time grows with
the machine's load. Then two bulk actions, each form sent once (an action changes
what it applies to): retry of 50 failed tasks ticked on a page, and retry of every
failed task a filter matches (a different three hours of the week each time,
about 400 tasks; the action's answer comes after all of them).

``--reuse DATABASE`` measures a database an earlier run left on
``--database-url``'s server, without filling it again (to try a change quickly).
A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOKEN = "bench-dashboard-token-0123456789"
QUEUES = [("default", 40), ("emails", 25), ("reports", 12), ("billing", 10), ("search", 6),
          ("images", 4), ("exports", 2), ("audit", 1)]  # fmt: skip

FILL = """
INSERT INTO eventix_task (uid, task, namespace, status, priority, eta, created_at, updated_at,
    started_at, finished_at, attempts, source, unique_key, args, kwargs, result, error,
    worker_id, worker_expires, k8s_namespace, k8s_name, k8s_uid, schedule_uid, schedule_time)
SELECT gen_random_uuid(), r.task, r.queue, r.status, (i % 3), r.created, r.created, r.created,
    CASE WHEN r.status IN ('done', 'error', 'processing') THEN r.created + interval '1 second' END,
    CASE WHEN r.status IN ('done', 'error', 'cancelled') THEN r.finished END,
    CASE WHEN r.status IN ('scheduled') THEN 0 WHEN r.status = 'retry' THEN 2 ELSE 1 END,
    r.source,
    CASE WHEN i % 5 = 0 AND r.status NOT IN ('scheduled', 'retry') THEN 'key-' || (i % 50000) END,
    jsonb_build_array(i), jsonb_build_object('n', i, 'payload', repeat('x', 40)),
    CASE WHEN r.status = 'done' THEN jsonb_build_object('ok', true, 'n', i) END,
    CASE WHEN r.status IN ('error', 'retry') THEN jsonb_build_object('type', 'ValueError',
         'message', 'bad input ' || i, 'attempt', 1, 'traceback', repeat('line\n', 30)) END,
    CASE WHEN r.status = 'processing' THEN 'worker-' || (i / 1000 % 40) END,
    CASE WHEN r.status = 'processing' THEN now() + interval '1 hour' END,
    CASE WHEN r.source = 'k8s' THEN 'team-' || (i % 5) END,
    CASE WHEN r.source IN ('k8s', 'schedule') THEN 'res-' || i END,
    CASE WHEN r.source = 'k8s' THEN 'k8s-uid-' || i END,
    CASE WHEN r.source = 'schedule' THEN 'bench-schedule-' || (i % 50) END,
    CASE WHEN r.source = 'schedule' THEN r.created + make_interval(secs => i % 1000) END
FROM generate_series(:first, :last) AS i,
LATERAL (SELECT
    CASE WHEN i % 997 = 0 THEN 'rare.task' ELSE 'app.tasks.t' || (i * 7 % 29) END AS task,
    (SELECT q FROM unnest(CAST(:queues AS text[]), CAST(:cumulative AS int[])) AS c(q, upto)
     WHERE (i * 31 % 100) < upto ORDER BY upto LIMIT 1) AS queue,
    CASE WHEN i % 1000 < 900 THEN 'done' WHEN i % 1000 < 930 THEN 'error'
         WHEN i % 1000 < 940 THEN 'cancelled' WHEN i % 1000 < 985 THEN 'scheduled'
         WHEN i % 1000 < 995 THEN 'retry' ELSE 'processing' END AS status,
    CASE WHEN i % 100 < 60 THEN 'client' WHEN i % 100 < 85 THEN 'api'
         WHEN i % 100 < 93 THEN 'schedule' WHEN i % 100 < 98 THEN 'trigger'
         WHEN i % 100 < 99 THEN 'k8s' ELSE 'cli' END AS source,
    CASE WHEN i % 1000 BETWEEN 940 AND 962 THEN now() - make_interval(secs => (i % 600))
         WHEN i % 1000 BETWEEN 963 AND 984 THEN now() + make_interval(secs => (i % 86400))
         ELSE now() - make_interval(secs => 3600 + (i::bigint * 7919 % (7 * 86400))) END
        AS created,
    CASE WHEN i % 100 < 6 THEN now() - make_interval(secs => (i % 3600))
         ELSE now() - make_interval(secs => 3600 + (i::bigint * 7919 % (7 * 86400))) END
        AS finished
) AS r
"""

EXTRAS = """
INSERT INTO eventix_schedule (uid, k8s_namespace, k8s_name, expression, time_zone, template,
    created_at, next_tick, last_tick)
SELECT 'bench-schedule-' || s, 'team-' || (s % 5), 'schedule-' || s,
       (ARRAY['*/5 * * * *', '0 2 * * *', '@hourly', '*/30 * * * * *'])[1 + s % 4],
       (ARRAY['UTC', 'Europe/Berlin', 'America/New_York'])[1 + s % 3],
       jsonb_build_object('task', 'app.tasks.t' || s, 'queue', 'reports'),
       now() - interval '30 days', now() + interval '5 minutes', now() - interval '5 minutes'
FROM generate_series(0, 49) AS s;
INSERT INTO eventix_trigger (uid, name, k8s_namespace, k8s_name, event_name, template,
    fired_count, ignored_count, failed_count, last_fired_at, last_error, last_error_at)
SELECT 'bench-trigger-' || t, 'team/trigger-' || t, 'team', 'trigger-' || t, 'event.' || t,
       jsonb_build_object('task', 'app.tasks.t' || t), 1000 * t, 50 * t, t,
       now() - interval '1 minute', CASE WHEN t % 3 = 0 THEN 'payload has no order' END,
       CASE WHEN t % 3 = 0 THEN now() - interval '3 minutes' END
FROM generate_series(0, 19) AS t;
INSERT INTO eventix_pool (uid, k8s_namespace, k8s_name, target_kind, target_name, queues,
    min_replicas, max_replicas, tasks_per_replica, activation_tasks, cooldown_seconds,
    desired_replicas, current_replicas, queue_depth, running, busy_workers, ready, reason,
    message, updated_at)
SELECT 'bench-pool-' || p, 'team', 'pool-' || p, 'Deployment', 'workers-' || p,
       ARRAY['default'], 0, 20, 10, 1, 300, 5, 5, 42, 8, 4, true, 'Scaling', 'scaled', now()
FROM generate_series(0, 9) AS p;
INSERT INTO eventix_pool_sample (pool_uid, minute, desired_replicas, current_replicas,
    queue_depth, running)
SELECT 'bench-pool-' || p, date_trunc('minute', now()) - make_interval(mins => m),
       1 + m % 7, 1 + m % 6, m * 3, m
FROM generate_series(0, 9) AS p, generate_series(0, 59) AS m;
"""


def request(port: int, path: str, cookie: str | None) -> tuple[int, float, float, str]:
    """GET once; (status, server ms from Server-Timing, client ms, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Cookie": f"eventix_session={cookie}"} if cookie else {}
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read().decode()
    client = (time.perf_counter() - started) * 1000
    conn.close()
    timing = response.getheader("server-timing") or "app;dur=nan"
    return response.status, float(timing.partition("dur=")[2]), client, body


def sign_in(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST", "/ui/login", body=f"token={TOKEN}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    response = conn.getresponse()
    response.read()
    cookie = response.getheader("set-cookie") or ""
    conn.close()
    return cookie.split(";")[0].partition("=")[2]


TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, list[int]] | None:
    """(parent pid, [utime, stime, cutime, cstime] in clock ticks) of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), [int(v) for v in fields[11:15]]


def cpu_ms(roots: list[int]) -> float:
    """CPU time used so far by ``roots`` and their children (the children that
    ended are in their parent's cutime and cstime), in milliseconds: the API
    process and the PostgreSQL server, whatever else the machine runs."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _stat(int(entry.name))
        if found is None:
            continue
        ppid, (utime, stime, cutime, cstime) = found
        if int(entry.name) in roots:
            ticks += utime + stime + cutime + cstime
        elif ppid in roots:
            ticks += utime + stime
    return ticks * TICK_MS


def postmaster_pid(engine: object) -> int | None:
    """The PostgreSQL server's pid, when it runs on this machine and its data
    directory is readable (else its CPU time is not measured)."""
    from sqlalchemy import text

    with engine.connect() as conn:  # type: ignore[attr-defined]
        data = conn.execute(text("SHOW data_directory")).scalar_one()
    try:
        return int((Path(data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def post(port: int, path: str, cookie: str, form: str) -> tuple[int, float, str]:
    """POST a form once; (status, server ms from Server-Timing, Location)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {
        "Cookie": f"eventix_session={cookie}",
        "Content-Type": "application/x-www-form-urlencoded",
    }
    conn.request("POST", path, body=form, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    timing = response.getheader("server-timing") or "app;dur=nan"
    return response.status, float(timing.partition("dur=")[2]), response.getheader("location") or ""


def bulk_forms(engine: object, port: int, cookie: str, count: int) -> list[tuple[str, list[str]]]:
    """The bulk actions measured, ``count`` forms each, every one on other tasks
    (an action changes what it applies to, so none is repeated): retry of 50 failed
    tasks ticked on a page, and retry of every failed task a filter matches, the
    filter being a different three hours of the week each time (about 500 tasks)."""
    from sqlalchemy import text

    status, _, _, body = request(port, "/ui/tasks", cookie)
    csrf = re.search(r'name="csrf" value="([^"]+)"', body)
    if status != 200 or csrf is None:
        raise SystemExit(f"no CSRF token on /ui/tasks ({status}): {body[:500]}")
    with engine.connect() as conn:  # type: ignore[attr-defined]
        failed = [
            str(u)
            for u in conn.execute(
                text(
                    "SELECT uid FROM eventix_task WHERE status = 'error' ORDER BY uid DESC LIMIT :n"
                ),
                {"n": 50 * count},
            ).scalars()
        ]
    selected = [
        urlencode(
            [("csrf", csrf[1]), ("action", "retry"), ("scope", "selected")]
            + [("uid", u) for u in failed[50 * i : 50 * (i + 1)]]
        )
        for i in range(count)
    ]
    week_ago = time.time() - 7 * 86400 + 3600
    matching = []
    for i in range(count):
        since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(week_ago + i * 3 * 3600))
        until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(week_ago + (i + 1) * 3 * 3600))
        fields = [("csrf", csrf[1]), ("action", "retry"), ("scope", "matching")]
        fields += [("status", "error"), ("since", since), ("until", until)]
        matching.append(urlencode(fields))
    return [
        ("bulk retry, 50 selected", selected),
        ("bulk retry, all matching", matching),
    ]


def pages(engine: object) -> list[tuple[str, str]]:
    """The pages measured, with real uids and cursors from the filled table."""
    from sqlalchemy import text

    with engine.connect() as conn:  # type: ignore[attr-defined]
        failed = conn.execute(
            text("SELECT uid::text FROM eventix_task WHERE status = 'error' LIMIT 1")
        ).scalar_one()
        old = conn.execute(
            text(
                "SELECT created_at, uid::text FROM eventix_task"
                " WHERE created_at < now() - interval '6 days' ORDER BY created_at DESC LIMIT 1"
            )
        ).one()
    deep = urlencode({"after": f"{old[0].isoformat()}_{old[1]}"})
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3 * 86400))
    until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 2 * 86400))
    return [
        ("overview", "/ui/"),
        ("tasks, newest", "/ui/tasks"),
        ("tasks, 6 days back (cursor)", f"/ui/tasks?{deep}"),
        ("tasks, queue", "/ui/tasks?queue=emails"),
        ("tasks, state error", "/ui/tasks?status=error"),
        ("tasks, small queue + retry", "/ui/tasks?queue=audit&status=retry"),
        ("tasks, task name", "/ui/tasks?task=app.tasks.t3"),
        ("tasks, rare task + error", "/ui/tasks?task=rare.task&status=error"),
        ("tasks, origin EventixTask", "/ui/tasks?origin=k8s"),
        ("tasks, unique key", "/ui/tasks?unique_key=key-1234"),
        ("tasks, a day, queue", f"/ui/tasks?queue=billing&since={since}&until={until}"),
        ("tasks, uid prefix (4 digits)", f"/ui/tasks?uid={failed[:4]}"),
        ("task detail", f"/ui/tasks/{failed}"),
        ("schedules", "/ui/schedules"),
        ("schedule detail", "/ui/schedules/bench-schedule-1"),
        ("worker pools", "/ui/pools"),
        ("triggers", "/ui/triggers"),
    ]


def fill(engine: object, rows: int) -> None:
    from sqlalchemy import text

    cumulative, total = [], 0
    for _, share in QUEUES:
        total += share
        cumulative.append(total)
    batch = 100_000
    for first in range(1, rows + 1, batch):
        with engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(
                text(FILL),
                {"first": first, "last": min(rows, first + batch - 1),
                 "queues": [q for q, _ in QUEUES], "cumulative": cumulative},
            )  # fmt: skip
        print(f"  filled {min(rows, first + batch - 1):,} rows", file=sys.stderr)
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text(EXTRAS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an existing server (it must allow CREATE DATABASE)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--reuse",
        metavar="DATABASE",
        help="measure a database an earlier run filled on --database-url's server (to try a"
        " change; its rows have aged and the bulk retries changed some)",
    )
    args = parser.parse_args()

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from eventix_operator.db.migrate import upgrade
    from eventix_operator.embedded import EmbeddedPostgres, free_port, scratch_directory

    workdir = scratch_directory("eventix-bench-dashboard-")
    embedded = None
    if args.database_url:
        admin_url = args.database_url
    else:
        embedded = EmbeddedPostgres(workdir / "pgdata")  # default, durable settings
        admin_url = embedded.start()
    server = None
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        name = args.reuse or f"bench_ui_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            if not args.reuse:
                conn.execute(text(f"CREATE DATABASE {name}"))
            version = conn.execute(text("SHOW server_version")).scalar()
            buffers = conn.execute(text("SHOW shared_buffers")).scalar()
        admin.dispose()
        url = make_url(admin_url).set(database=name).render_as_string(False)
        engine = create_engine(url)
        upgrade(engine)
        started = time.monotonic()
        if not args.reuse:
            fill(engine, args.rows)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("VACUUM ANALYZE"))
            size = conn.execute(
                text("SELECT pg_size_pretty(pg_total_relation_size('eventix_task'))")
            ).scalar()
            last_hour = conn.execute(
                text(
                    "SELECT count(*) FROM eventix_task"
                    " WHERE finished_at > now() - interval '1 hour'"
                )
            ).scalar()
            tasks = conn.execute(text("SELECT count(*) FROM eventix_task")).scalar()
        print(
            f"{'reused' if args.reuse else 'filled'} {name}: {tasks:,} tasks ({size} with"
            f" indexes, {last_hour:,} finished in the last hour) in"
            f" {time.monotonic() - started:.0f} s; PostgreSQL {version},"
            f" shared_buffers {buffers}",
            file=sys.stderr,
        )
        port = free_port()
        env = dict(os.environ, DATABASE_URL=url, EVENTIX_LOG_LEVEL="WARNING",
                   EVENTIX_API_TOKEN=TOKEN)  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "eventix_operator", "api", "--port", str(port)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=(workdir / "api.log").open("wb"),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if request(port, "/healthz", None)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not start: {(workdir / 'api.log').read_text()}")
            time.sleep(0.1)
        rolled_up = time.monotonic()
        while True:  # the first roll-up: the last hour, ten minutes per statement
            with engine.connect() as conn:
                minutes = conn.execute(
                    text("SELECT count(*) FROM eventix_throughput WHERE namespace = ''")
                ).scalar_one()
            if minutes >= 58:
                break
            time.sleep(0.2)
        print(f"first throughput roll-up: {time.monotonic() - rolled_up:.1f} s", file=sys.stderr)
        cookie = sign_in(port)
        load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        postmaster = postmaster_pid(engine)
        roots = [server.pid] + ([postmaster] if postmaster else [])
        print(f"\n{'page':<30}{'server ms: min':>15}{'median':>8}{'p95':>8}{'max':>8}"
              f"{'client median':>15}{'CPU ms':>8}")  # fmt: skip
        for label, path in pages(engine):
            for _ in range(args.warmup):
                status, _, _, body = request(port, path, cookie)
                assert status in (200, 303), (path, status, body[:500])
            servers, clients = [], []
            used = cpu_ms(roots)
            for _ in range(args.requests):
                _, server_ms, client_ms, _ = request(port, path, cookie)
                servers.append(server_ms)
                clients.append(client_ms)
            used = (cpu_ms(roots) - used) / args.requests
            servers.sort()
            p95 = servers[min(len(servers) - 1, int(len(servers) * 0.95))]
            print(
                f"{label:<30}{servers[0]:>15.1f}{statistics.median(servers):>8.1f}{p95:>8.1f}"
                f"{servers[-1]:>8.1f}{statistics.median(clients):>15.1f}"
                + (f"{used:>8.1f}" if postmaster else f"{'-':>8}")
            )
        changed: list[int] = []
        for label, forms in bulk_forms(engine, port, cookie, args.requests):
            servers = []
            used = cpu_ms(roots)
            for form in forms:
                status, server_ms, location = post(port, "/ui/tasks/bulk", cookie, form)
                if status != 303 or "note=retry" not in location:
                    raise SystemExit(f"{label}: {status} {location}")
                servers.append(server_ms)
                changed.append(int(location.rpartition("note=retry%3A")[2].partition("%3A")[0]))
            used = (cpu_ms(roots) - used) / len(forms)
            servers.sort()
            p95 = servers[min(len(servers) - 1, int(len(servers) * 0.95))]
            print(
                f"{label:<30}{servers[0]:>15.1f}{statistics.median(servers):>8.1f}{p95:>8.1f}"
                f"{servers[-1]:>8.1f}{'':>15}" + (f"{used:>8.1f}" if postmaster else f"{'-':>8}")
            )
        tail = changed[args.requests :]
        print(
            f"(the filter's bulk retry changed {min(tail)}-{max(tail)} tasks per request,"
            f" median {statistics.median(tail):.0f}; each form was sent once, no warm-up)"
        )
        with open(f"/proc/{server.pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(
            f"\napi peak RSS {hwm / 1024:.0f} MiB; load average {load_before} before the"
            f" requests, {load} after; {os.cpu_count()} CPUs"
        )
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
