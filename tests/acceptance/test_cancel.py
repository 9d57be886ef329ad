"""Cancelling running tasks in real worker processes (docs/cancelling.md): an
async task, a sync task that checks its flag, and one that ignores it; through
the CLI, the REST API and the dashboard's statement; heard by notification
(direct) and by the worker's looks (through PgBouncer, where LISTEN hears nothing)."""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text

from eventix_operator import enqueue
from eventix_operator.db import admin, dashboard
from eventix_operator.db.rows import TaskRecord
from tests.support.processes import Processes, free_port

THROUGH_PGBOUNCER = pytest.mark.parametrize("connection", ["direct", "pgbouncer"], indirect=True)

#: Seconds a cancelled task may take to stop before it is recorded cancelled anyway.
GRACE = 3.0
TOKEN = "cancel-test-token"


def get(engine: Engine, uid: str) -> TaskRecord:
    with engine.connect() as conn:
        record = admin.get_task(conn, uid)
    assert record is not None
    return record


def start_api(processes: Processes) -> int:
    port = free_port()
    proc = processes.start("api", "api", "--port", str(port), EVENTIX_API_TOKEN=TOKEN)
    deadline = time.monotonic() + 90
    while request(port, "GET", "/healthz")[0] != 200:
        assert proc.poll() is None, processes.logs()
        assert time.monotonic() < deadline, f"the API did not answer: {processes.logs()}"
        time.sleep(0.1)
    return port


def request(port: int, method: str, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        body = response.read()
    except OSError:
        return 0, None
    finally:
        conn.close()
    with contextlib.suppress(ValueError):
        return response.status, json.loads(body) if body else None
    return response.status, body


@THROUGH_PGBOUNCER
def test_running_tasks_end_cancelled_and_are_never_retried(
    processes: Processes, engine: Engine
) -> None:
    with engine.begin() as conn:
        # retries left on every one: a cancel must not use them
        uids = {
            "async": enqueue("tests.async_sleep", [1, 120], max_retries=5, connection=conn),
            "cooperative": enqueue("tests.cooperative", [2, 120], max_retries=5, connection=conn),
            "stubborn": enqueue("tests.sleep", [3, GRACE + 15], max_retries=5, connection=conn),
            "dashboard": enqueue("tests.cooperative", [4, 120], max_retries=5, connection=conn),
        }
    port = start_api(processes)
    processes.worker(
        "--concurrency", "6",
        EVENTIX_WORKER_CANCEL_GRACE=str(GRACE),
        EVENTIX_WORKER_CANCEL_POLL_INTERVAL="0.2",
    )  # fmt: skip
    processes.wait_for(
        lambda: all(processes.executions()[f"start {n}"] == 1 for n in range(1, 5)),
        60,
        "the four tasks to start",
    )
    cli = processes.cli("tasks", "cancel", uids["async"])
    assert cli.returncode == 0, cli.stderr
    assert "told to stop" in cli.stdout
    status, body = request(port, "POST", f"/task/{uids['cooperative']}/cancel")
    assert status == 200, body
    assert body["status"] == "processing"  # its worker ends it
    cli = processes.cli("tasks", "cancel", uids["stubborn"])
    assert cli.returncode == 0, cli.stderr
    with engine.begin() as conn:
        assert dashboard.bulk_action(conn, "cancel", [uids["dashboard"]]).changed == 1

    by = {"async": "cli", "cooperative": "api", "stubborn": "cli", "dashboard": "dashboard"}
    processes.wait_for(
        lambda: all(get(engine, u).status == "cancelled" for u in uids.values()),
        GRACE + 20,
        "every task to end cancelled",
    )
    # the stubborn one was recorded cancelled while its thread still slept
    assert processes.executions()["end 3"] == 0
    for name, uid in uids.items():
        record = get(engine, uid)
        assert record.error is not None
        assert record.error["type"] == "Cancelled", (name, record.error)
        assert record.error["message"].startswith(f"cancelled by {by[name]}"), record.error
        assert record.cancelled_by == by[name]
        assert record.attempts == 1
        assert record.finished_at is not None
        assert record.worker_id is None
    stubborn = get(engine, uids["stubborn"]).error
    assert stubborn is not None
    assert "grace period" in stubborn["message"]
    runs = processes.executions()
    assert runs["stopped 2"] == 1
    assert runs["stopped 4"] == 1
    assert runs["end 1"] == 0
    assert runs["end 2"] == 0
    # never retried: the stubborn task's thread returns after its sleep, its result
    # is dropped, and nothing runs again
    processes.wait_for(lambda: processes.executions()["end 3"] == 1, 30, "the sleep to end")
    time.sleep(1.0)
    assert all(processes.executions()[f"start {n}"] == 1 for n in range(1, 5))
    assert all(get(engine, u).status == "cancelled" for u in uids.values())


def test_a_cancelled_task_can_be_retried_and_then_runs(
    processes: Processes, engine: Engine
) -> None:
    with engine.begin() as conn:
        uid = enqueue("tests.cooperative", [7, 120], connection=conn)
    processes.worker(EVENTIX_WORKER_CANCEL_GRACE=str(GRACE))
    processes.wait_for(lambda: processes.executions()["start 7"] == 1, 30, "the task to start")
    assert processes.cli("tasks", "cancel", uid).returncode == 0
    processes.wait_for(lambda: get(engine, uid).status == "cancelled", 20, "the cancel")
    with engine.begin() as conn:  # make the second run short
        conn.execute(text("UPDATE eventix_task SET args = '[7, 0.2]' WHERE uid = :u"), {"u": uid})
    retried = processes.cli("tasks", "retry", uid)
    assert retried.returncode == 0, retried.stderr
    processes.wait_for(lambda: get(engine, uid).status == "done", 30, "the second run")
    record = get(engine, uid)
    assert record.cancelled_by is None
    assert record.error is None
    assert processes.executions()["end 7"] == 1  # the second run was not cancelled


def test_cancelling_a_finished_task_says_so(processes: Processes, engine: Engine) -> None:
    with engine.begin() as conn:
        uid = enqueue("tests.record", [8], connection=conn)
    processes.worker("--burst").wait(60)
    assert get(engine, uid).status == "done"
    refused = processes.cli("tasks", "cancel", uid)
    assert refused.returncode != 0
    assert "is done" in refused.stdout + refused.stderr
