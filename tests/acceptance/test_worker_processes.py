"""Worker processes for real: exactly-once across processes, SIGKILL, SIGTERM, a
database restart, and tasks that go wrong."""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import Engine, text

from eventix_operator import enqueue, enqueue_many
from eventix_operator.db import admin
from eventix_operator.db.rows import TaskRecord
from tests.support.postgres import PostgresServer
from tests.support.processes import Processes

#: The test runs twice: processes connected directly, and through PgBouncer in
#: transaction mode (no listen URL: the workers poll).
THROUGH_PGBOUNCER = pytest.mark.parametrize("connection", ["direct", "pgbouncer"], indirect=True)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM eventix_task GROUP BY status"))
        return {r[0]: r[1] for r in rows}


def started(processes: Processes) -> int:
    """Worker processes that have said they started (at INFO)."""
    return sum("worker started" in p.read_text() for p in processes.log_dir.glob("worker-*.log"))


def get(engine: Engine, uid: str) -> TaskRecord:
    with engine.connect() as conn:
        record = admin.get_task(conn, uid)
    assert record is not None
    return record


@THROUGH_PGBOUNCER
def test_four_workers_run_10000_tasks_exactly_once(processes: Processes, engine: Engine) -> None:
    # All four are running before the tasks come: a process still importing when a
    # quick drain ends would take no share, and the share is what this test checks.
    workers = [processes.worker("--concurrency", "4", EVENTIX_LOG_LEVEL="INFO") for _ in range(4)]
    processes.wait_for(lambda: started(processes) == 4, 120, "four workers to start")
    with engine.begin() as conn:
        enqueue_many([{"task": "tests.record", "args": [i]} for i in range(10_000)],
                     connection=conn)  # fmt: skip
    processes.wait_for(lambda: counts(engine) == {"done": 10_000}, 240, "every task to run")
    for w in workers:
        assert processes.stop(w) == 0, processes.logs()
    runs = processes.executions()
    assert len(runs) == 10_000, "some tasks never ran"
    assert max(runs.values()) == 1, f"ran twice: {[k for k, v in runs.items() if v > 1][:10]}"
    assert counts(engine) == {"done": 10_000}
    # every process took a share: the claim really is shared, not serialised
    assert len(list(processes.record_dir.glob("*.log"))) == 4


@THROUGH_PGBOUNCER
def test_killed_worker_task_runs_again_after_its_lease(
    processes: Processes, engine: Engine
) -> None:
    with engine.begin() as conn:
        uid = enqueue("tests.sleep", [1, 30], connection=conn)
    victim = processes.worker(EVENTIX_WORKER_LEASE_SECONDS="2")
    processes.wait_for(lambda: processes.executions()["start 1"] == 1, 20, "the task to start")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    with engine.begin() as conn:  # make the second run short
        conn.execute(text("UPDATE eventix_task SET args = '[1, 0.1]' WHERE uid = :u"), {"u": uid})
    processes.worker(EVENTIX_WORKER_LEASE_SECONDS="2")
    processes.wait_for(lambda: get(engine, uid).status == "done", 30, "the task to complete")
    record = get(engine, uid)
    assert record.attempts == 2
    assert record.result == 1
    runs = processes.executions()
    assert runs["start 1"] == 2
    assert runs["end 1"] == 1  # the killed run never finished, the second did


@THROUGH_PGBOUNCER
def test_sigterm_finishes_running_tasks_and_releases_the_rest(
    processes: Processes, engine: Engine
) -> None:
    with engine.begin() as conn:
        uids = enqueue_many(
            [{"task": "tests.sleep", "args": [i, 1.5]} for i in range(6)], connection=conn
        )
    worker = processes.worker("--concurrency", "2", EVENTIX_WORKER_SHUTDOWN_GRACE="10")
    processes.wait_for(lambda: sum(k.startswith("start") for k in processes.executions()) == 2,
                       20, "two tasks to start")  # fmt: skip
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, processes.logs()
    states = [get(engine, u) for u in uids]
    done = [s for s in states if s.status == "done"]
    waiting = [s for s in states if s.status == "scheduled"]
    assert len(done) == 2, [s.status for s in states]
    assert len(waiting) == 4
    assert all(s.worker_id is None and s.attempts == 0 for s in waiting)


@THROUGH_PGBOUNCER
def test_sigterm_grace_over_releases_running_tasks(processes: Processes, engine: Engine) -> None:
    with engine.begin() as conn:
        uid = enqueue("tests.async_sleep", [7, 60], connection=conn)
    worker = processes.worker(EVENTIX_WORKER_SHUTDOWN_GRACE="0.5")
    processes.wait_for(lambda: processes.executions()["start 7"] == 1, 20, "the task to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, processes.logs()
    record = get(engine, uid)
    assert record.status == "scheduled"  # back in the queue for another worker, now
    assert record.worker_id is None


def test_database_restart_mid_run_loses_nothing(
    processes: Processes, engine: Engine, pg_server: PostgresServer
) -> None:
    with engine.begin() as conn:
        enqueue_many([{"task": "tests.sleep", "args": [i, 0.05]} for i in range(400)],
                     connection=conn)  # fmt: skip
    workers = [processes.worker("--concurrency", "4") for _ in range(2)]
    processes.wait_for(lambda: len(processes.executions()) > 100, 30, "work to be under way")
    engine.dispose()
    pg_server.restart(down_seconds=2.0)
    finished_before = sum(k.startswith("end") for k in processes.executions())
    assert finished_before < 400, "the restart came too late to test anything"
    processes.wait_for(lambda: counts(engine).get("done") == 400, 90, "all tasks to finish")
    runs = processes.executions()
    # leases (30 s) outlive the outage: nothing is taken from a live worker and run again
    assert all(runs[f"start {i}"] == 1 for i in range(400)), "a task ran twice or never"
    assert all(runs[f"end {i}"] == 1 for i in range(400))
    for w in workers:
        assert w.poll() is None, "a worker died with the database"


@THROUGH_PGBOUNCER
def test_tasks_that_go_wrong_fail_alone(processes: Processes, engine: Engine) -> None:
    with engine.begin() as conn:
        unknown = enqueue("tests.no_such_task", connection=conn)
        unserialisable = enqueue("tests.unserialisable", connection=conn)
        failing = enqueue("tests.fail", ["kaput"], max_retries=2, backoff_seconds=0,
                          connection=conn)  # fmt: skip
        slow = enqueue("tests.async_sleep", [3, 30], timeout_seconds=0.3, max_retries=0,
                       connection=conn)  # fmt: skip
        fine = enqueue("tests.record", [5], connection=conn)
    worker = processes.worker("--burst")
    assert worker.wait(60) == 0, processes.logs()

    assert get(engine, fine).status == "done"
    record = get(engine, unknown)
    assert record.status == "error"
    assert record.error is not None
    assert record.error["type"] == "TaskNotRegistered"
    assert "tests.no_such_task" in record.error["message"]
    assert record.attempts == 1  # not retried: no worker of this deployment can run it

    record = get(engine, unserialisable)
    assert record.status == "error"
    assert record.error is not None
    assert "not JSON-serialisable" in record.error["message"]

    record = get(engine, failing)
    assert record.status == "error"
    assert record.attempts == 3  # the first run and two retries
    assert processes.executions()["fail"] == 3
    assert record.error is not None
    assert record.error["message"] == "kaput"
    assert "ValueError" in record.error["traceback"]

    record = get(engine, slow)
    assert record.status == "error"
    assert record.error is not None
    assert record.error["type"] == "TimeoutError"


def test_worker_wakes_on_notify_not_on_poll(processes: Processes, engine: Engine) -> None:
    processes.worker(EVENTIX_WORKER_POLL_INTERVAL="30")
    with engine.begin() as conn:
        first = enqueue("tests.record", [99], connection=conn)
    # Started and listening (its first claim finds the task), then idle.
    processes.wait_for(lambda: get(engine, first).status == "done", 60, "the worker to start")
    time.sleep(0.5)
    latencies = []
    for i in range(5):
        start = time.monotonic()
        with engine.begin() as conn:
            uid = enqueue("tests.record", [100 + i], connection=conn)
        processes.wait_for(lambda u=uid: get(engine, u).status == "done", 10, "the task")  # type: ignore[misc]
        latencies.append(time.monotonic() - start)
    # with a 30 s poll interval only the notification can explain a quick start
    assert max(latencies) < 2, latencies


def test_burst_worker_does_not_take_an_outage_for_an_empty_queue(processes: Processes) -> None:
    worker = processes.worker("--burst", DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    time.sleep(4)
    assert worker.poll() is None, "a burst worker exited while the database was unreachable"


def test_default_logging_sums_up_successes_and_names_each_failure(
    processes: Processes, engine: Engine
) -> None:
    """At INFO (the default) a line per success would cost a busy worker a third of
    its rate: successes come as periodic summaries, failures one by one."""
    with engine.begin() as conn:
        enqueue_many([{"task": "tests.record", "args": [i]} for i in range(50)], connection=conn)
        enqueue("tests.fail", kwargs={"message": "one of them fails"}, max_retries=0,
                connection=conn)  # fmt: skip
    worker = processes.worker(EVENTIX_LOG_LEVEL="INFO", EVENTIX_WORKER_PROGRESS_INTERVAL="0.3")
    processes.wait_for(lambda: counts(engine).get("done") == 50, 60, "the tasks to run")
    processes.wait_for(lambda: "progress" in processes.logs(), 10, "a progress line")
    assert processes.stop(worker) == 0
    log = processes.logs()
    assert "task succeeded" not in log
    assert "one of them fails" in log
    assert "task failed" in log
    progress = [line for line in log.splitlines() if "progress" in line]
    assert sum(int(line.split("succeeded=")[1].split()[0]) for line in progress) == 50, progress
