"""Screenshots of each dashboard page for docs/screenshots/ (PNG, 1280x800).

    .venv/bin/python tools/screenshots.py                   # an embedded PostgreSQL of its own
    DATABASE_URL=… .venv/bin/python tools/screenshots.py    # an empty database you name

It seeds a database with what a working installation holds (four queues, an hour of
finished tasks, a backlog, running tasks with live leases, a failed task with its
traceback, two schedules with runs, a worker pool with an hour of samples, a
trigger, queue settings), starts ``eventix api`` on it, signs in with Chromium (the browser of the
tests, tests/support/browser.py) and saves one PNG per page. Seeded rows are made
with SQL and the data layer; no worker runs, so the pictures do not move.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from eventix_operator.db import pools, queues, triggers  # noqa: E402
from eventix_operator.db import schedules as schedule_db  # noqa: E402
from eventix_operator.db.migrate import upgrade  # noqa: E402
from eventix_operator.embedded import EmbeddedPostgres, free_port, scratch_directory  # noqa: E402
from eventix_operator.resources import schedule_definition  # noqa: E402
from eventix_operator.schedules.scheduler import apply_schedule, backfill  # noqa: E402
from eventix_operator.schedules.ticks import parse_schedule  # noqa: E402
from tests.support.browser import start_browser  # noqa: E402

TOKEN = "screenshots-token-0123456789"
OUT = ROOT / "docs" / "screenshots"
TRACEBACK = """Traceback (most recent call last):
  File "/opt/venv/lib/python3.11/site-packages/eventix_operator/worker/execute.py", \
line 64, in run_sync
    result = fn.func(*job.args, **job.kwargs)
  File "/app/shop/tasks.py", line 41, in send_receipt
    smtp.send_message(message)
  File "/usr/local/lib/python3.11/smtplib.py", line 986, in send_message
    return self.sendmail(from_addr, to_addrs, flatmsg, mail_options, rcpt_options)
  File "/usr/local/lib/python3.11/smtplib.py", line 901, in sendmail
    raise SMTPRecipientsRefused(senderrs)
smtplib.SMTPRecipientsRefused: {'ana@example.org': (550, b'5.1.1 mailbox unavailable')}
"""


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    scratch = scratch_directory("eventix-screenshots-")
    server = EmbeddedPostgres(scratch / "data", settings={"fsync": "off"})
    try:
        yield server.start()
    finally:
        server.destroy()
        shutil.rmtree(scratch, ignore_errors=True)


def seed(engine: Engine) -> str:
    """Rows of a busy hour; returns the uid of the failed task shown in detail."""
    rnd = random.Random(16)
    with engine.begin() as conn:
        # an hour of finished work: a steady load with a lunchtime bump and a bad minute
        conn.execute(
            text(
                """
                INSERT INTO eventix_task (task, namespace, status, source, created_at, eta,
                    started_at, finished_at, attempts, result, error)
                SELECT t.task, t.queue,
                       CASE WHEN random() < t.fail OR m BETWEEN 17 AND 19 AND random() < 0.4
                            THEN 'error' ELSE 'done' END,
                       t.source, f - interval '2 seconds', f - interval '2 seconds',
                       f - interval '1 second', f, 1, '{"ok": true}',
                       NULL
                FROM generate_series(0, 59) AS m,
                     (VALUES ('shop.tasks.send_receipt', 'emails', 0.02, 'client', 120),
                             ('reports.daily', 'reports', 0.01, 'schedule', 8),
                             ('billing.charge', 'billing', 0.005, 'api', 60),
                             ('examples.add', 'default', 0.0, 'cli', 30))
                         AS t(task, queue, fail, source, per_minute),
                     LATERAL generate_series(1, t.per_minute + (20 * sin(m / 9.0))::int) AS i,
                     LATERAL (SELECT now() - make_interval(mins => 60 - m)
                                     + make_interval(secs => random() * 59 + i * 0) AS f) AS ft
                """
            )
        )
        conn.execute(
            text(
                """
                UPDATE eventix_task SET error = jsonb_build_object('type', 'TimeoutError',
                    'message', task || ' ran past its 30.0s timeout (30.0s)', 'attempt', 1),
                    result = NULL
                WHERE status = 'error'
                """
            )
        )
        # a backlog in emails, some waiting for later, retries and cancelled ones
        conn.execute(
            text(
                """
                INSERT INTO eventix_task (task, namespace, status, eta, created_at, kwargs,
                    source, attempts, error)
                SELECT 'shop.tasks.send_receipt', 'emails', 'scheduled',
                       now() - make_interval(secs => 200 - i / 10.0),
                       now() - make_interval(secs => 200 - i / 10.0),
                       jsonb_build_object('order', 40000 + i), 'client', 0, NULL::jsonb
                FROM generate_series(1, 1800) AS i
                UNION ALL
                SELECT 'reports.monthly', 'reports', 'scheduled', now() + interval '6 hours',
                       now() - interval '1 hour', '{}', 'api', 0, NULL
                FROM generate_series(1, 3)
                UNION ALL
                SELECT 'billing.charge', 'billing', 'retry', now() + make_interval(secs => 20 * i),
                       now() - interval '5 minutes', jsonb_build_object('invoice', 900 + i), 'api',
                       2, CAST('{"type": "ConnectionError", "message": "payment gateway timed out",
                                  "attempt": 2}' AS jsonb)
                FROM generate_series(1, 14) AS i
                UNION ALL
                SELECT 'shop.tasks.send_receipt', 'emails', 'cancelled', now(),
                       now() - interval '20 minutes', '{}', 'client', 0, NULL
                FROM generate_series(1, 6)
                """
            )
        )
        # running now, on three workers with live leases
        workers = ["worker-5c9d7f-x2k4p", "worker-5c9d7f-q8m1z", "worker-5c9d7f-h3t6w"]
        for i in range(11):
            conn.execute(
                text(
                    """
                    INSERT INTO eventix_task (task, namespace, status, worker_id, worker_expires,
                        started_at, created_at, attempts, kwargs, source)
                    VALUES (:task, :queue, 'processing', :worker, now() + interval '10 minutes',
                        now() - make_interval(secs => :ago),
                        now() - make_interval(secs => :ago + 3),
                        1, CAST(:kwargs AS jsonb), 'client')
                    """
                ),
                {
                    "task": "reports.daily" if i == 4 else "shop.tasks.send_receipt",
                    "queue": "reports" if i == 4 else "emails",
                    "worker": workers[i % 3],
                    "ago": rnd.uniform(0.2, 9.0),
                    "kwargs": json.dumps({"order": 39000 + i}),
                },
            )
        # the failed task of the detail page (from the Python client)
        failed = conn.execute(
            text(
                """
                INSERT INTO eventix_task (task, namespace, status, source, attempts, max_retries,
                    args, kwargs, created_at, eta, started_at, finished_at, unique_key, error,
                    expires, error_expires)
                VALUES ('shop.tasks.send_receipt', 'emails', 'error', 'client', 4, 3,
                    '[]', '{"order": 41873, "to": "ana@example.org", "template": "receipt-v2"}',
                    now() - interval '4 minutes', now() - interval '40 seconds',
                    now() - interval '39 seconds', now() - interval '38 seconds',
                    'receipt-41873', CAST(:error AS jsonb), now() + interval '7 days', 604800)
                RETURNING uid::text
                """
            ),
            {
                "error": json.dumps(
                    {
                        "type": "SMTPRecipientsRefused",
                        "message": "{'ana@example.org': (550, b'5.1.1 mailbox unavailable')}",
                        "attempt": 4,
                        "traceback": TRACEBACK,
                    }
                )
            },
        ).scalar_one()
        # two tasks from EventixTask resources
        conn.execute(
            text(
                """
                INSERT INTO eventix_task (task, namespace, status, source, k8s_namespace, k8s_name,
                    k8s_uid, created_at, finished_at, attempts)
                VALUES ('reports.backfill', 'reports', 'done', 'k8s', 'analytics', 'backfill-q3',
                        gen_random_uuid()::text, now() - interval '2 minutes',
                        now() - interval '1 minute', 1),
                       ('billing.reconcile', 'billing', 'scheduled', 'k8s', 'finance',
                        'reconcile-nov', gen_random_uuid()::text, now() - interval '30 seconds',
                        NULL, 0)
                """
            )
        )
    now = datetime.now(UTC)
    for name, spec in (
        ("nightly-report", {"schedule": "0 2 * * *", "timeZone": "Europe/Berlin",
                            "concurrencyPolicy": "Forbid", "catchUp": "Latest",
                            "successfulRunsHistoryLimit": 5, "failedRunsHistoryLimit": 2,
                            "template": {"task": "reports.daily", "queue": "reports",
                                         "kwargs": {"scope": "daily"}}}),
        ("cleanup", {"schedule": "*/15 * * * *", "catchUp": "Skip",
                     "template": {"task": "examples.add", "args": [1, 2]}}),
    ):  # fmt: skip
        definition = schedule_definition(
            spec, uid=f"uid-{name}", namespace="analytics", name=name, generation=3,
            created_at=now - timedelta(days=30),
        )  # fmt: skip
        with engine.begin() as conn:
            record, _ = apply_schedule(conn, definition, now)
            backfill(conn, record, now - timedelta(days=4), now, payload_limit=10**6)
            cron = parse_schedule(record.expression, record.time_zone)
            schedule_db.advance_schedule(
                conn, record.uid, last_tick=cron.latest_until(now), next_tick=cron.next_after(now)
            )
            conn.execute(
                text(
                    """
                    UPDATE eventix_task SET
                        status = CASE WHEN extract(day FROM schedule_time) = 29 THEN 'error'
                                      ELSE 'done' END,
                        started_at = schedule_time + make_interval(secs => 0.004 + random() / 50),
                        finished_at = schedule_time + make_interval(secs => 2 + random() * 40),
                        attempts = 1,
                        error = CASE WHEN extract(day FROM schedule_time) = 29 THEN CAST(
                            '{"type": "OperationalError", "message": "warehouse unreachable"}'
                            AS jsonb) END
                    WHERE schedule_uid = :uid
                    """
                ),
                {"uid": record.uid},
            )
    # a worker pool with an hour of samples: a morning ramp, scaled up, cooling down
    with engine.begin() as conn:
        pools.record_pools(
            conn,
            [
                pools.PoolState(
                    "pool-uid-emails", "shop", "email-workers", "Deployment", "email-workers",
                    ("emails",), 0, 12, 200, 1, 300.0, 10, 9, 1800, 11, 3, True, "Scaling",
                    "Deployment email-workers is scaled on queue depth", now - timedelta(minutes=6),
                ),
                pools.PoolState(
                    "pool-uid-reports", "analytics", "report-workers", "Deployment",
                    "report-workers", ("reports",), 0, 4, 10, 1, 600.0, 1, 1, 0, 1, 1, True,
                    "Scaling", "Deployment report-workers is scaled on queue depth",
                    now - timedelta(minutes=41),
                ),
            ],
        )  # fmt: skip
        conn.execute(
            text(
                """
                INSERT INTO eventix_pool_sample (pool_uid, minute, desired_replicas,
                    current_replicas, queue_depth, running)
                SELECT 'pool-uid-emails', date_trunc('minute', now()) - make_interval(mins => m),
                       d, GREATEST(0, d - CASE WHEN m % 11 = 3 THEN 1 ELSE 0 END), depth, d * 2
                FROM generate_series(1, 59) AS m,
                     LATERAL (SELECT GREATEST(0, (1600 * exp(-((m - 40) ^ 2) / 60.0)
                                               + 1800 * (m < 6)::int))::int AS depth) AS q,
                     LATERAL (SELECT LEAST(12, CEIL(q.depth / 200.0))::int AS d) AS r
                UNION ALL
                SELECT 'pool-uid-reports', date_trunc('minute', now()) - make_interval(mins => m),
                       CASE WHEN m BETWEEN 41 AND 52 THEN 2 ELSE 1 END,
                       CASE WHEN m BETWEEN 41 AND 51 THEN 2 ELSE 1 END,
                       CASE WHEN m BETWEEN 44 AND 50 THEN 14 - abs(47 - m) * 3 ELSE 0 END, 1
                FROM generate_series(1, 59) AS m
                ON CONFLICT DO NOTHING
                """
            )
        )
    with engine.begin() as conn:
        trigger = triggers.upsert_trigger(
            conn, uid="trigger-uid-1", name="shop/ship-express", event_name="order.created",
            template={"task": "shop.tasks.ship", "namespace": "emails",
                      "args": ["{{ payload.order.id }}"]},
            filter={"kind": "express"}, k8s_namespace="shop", k8s_name="ship-express",
        )  # fmt: skip
        triggers.record_trigger_outcomes(
            conn,
            [
                triggers.TriggerOutcome(trigger.uid, fired=1842, ignored=11230, failed=3,
                                        error="'{{ payload.order.id }}': the event's payload "
                                              "has no 'order'"),
            ],
        )  # fmt: skip
        # queue settings: limits given with the CLI, one EventixQueue, a paused queue
        queues.set_queue(
            conn, "emails", queues.everything(concurrency_limit=20, rate_count=50,
                                              rate_per_seconds=1.0),
        )  # fmt: skip
        queues.set_queue(
            conn, "reports",
            queues.everything(concurrency_limit=2, retain_succeeded_seconds=86400,
                              retain_failed_seconds=7 * 86400),
            k8s=("reporting", "reports", "queue-uid-reports"),
        )  # fmt: skip
        queues.pause(conn, "billing")
        conn.execute(text("ANALYZE eventix_task"))
    return str(failed)


def wait_for(url: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"eventix api exited with {server.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1):
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with database(os.environ.get("DATABASE_URL")) as url:
        engine = create_engine(url)
        upgrade(engine)
        failed = seed(engine)
        port = free_port()
        env = dict(os.environ, DATABASE_URL=url, EVENTIX_API_TOKEN=TOKEN,
                   EVENTIX_LOG_LEVEL="WARNING", EVENTIX_UI_REFRESH_SECONDS="0")  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "eventix_operator", "api", "--port", str(port)],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        user_data = Path(tempfile.mkdtemp(prefix="eventix-chromium-"))
        driver = None
        try:
            wait_for(base + "/healthz", server)
            time.sleep(3)  # the first throughput roll-up
            driver = start_browser(user_data)
            driver.get(base + "/ui/login")
            driver.save_screenshot(str(args.out / "login.png"))
            driver.find_element("id", "token").send_keys(TOKEN)
            driver.find_element("id", "sign-in").click()
            pages = [
                ("overview", "/ui/"),
                ("queues", "/ui/queues"),
                ("tasks", "/ui/tasks?queue=emails"),
                ("task", f"/ui/tasks/{failed}"),
                ("schedules", "/ui/schedules"),
                ("schedule", "/ui/schedules/uid-nightly-report"),
                ("pools", "/ui/pools"),
                ("triggers", "/ui/triggers"),
            ]
            for name, path in pages:
                driver.get(base + path)
                driver.save_screenshot(str(args.out / f"{name}.png"))
                size = (args.out / f"{name}.png").stat().st_size
                print(f"{name:10} {path:40} {size // 1024} KiB")
        finally:
            if driver is not None:
                driver.quit()
            shutil.rmtree(user_data, ignore_errors=True)
            server.terminate()
            server.wait(20)
            engine.dispose()


if __name__ == "__main__":
    main()
