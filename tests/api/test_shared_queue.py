"""Eventix HTTP workers and native workers drain one queue together: every task
runs exactly once, because both claim with the same SKIP LOCKED statement."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from eventix_operator.db.enqueue import NewTask, insert_tasks
from tests.api.conftest import ApiServer, stop
from tests.support.processes import ROOT

#: Run once with the server connected directly, once through PgBouncer (transaction mode).
pytestmark = pytest.mark.parametrize(
    "api_connection", ["direct", "pgbouncer"], indirect=True, scope="module"
)

TASKS = 400
#: Long enough that the native workers cannot take everything before Eventix's poll.
TASK_SECONDS = 0.01


def test_http_and_native_workers_share_a_queue(
    api: ApiServer, namespace: str, tmp_path: Path
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    stop_file = tmp_path / "stop"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(2):
            procs.append(
                api.eventix_process(
                    "http_worker.py",
                    str(stop_file),
                    log=tmp_path / f"http-{i}.log",
                    EVENTIX_NAMESPACE=namespace,
                    EVENTIX_TASK_WORKER_ID=f"http-{i}",
                    EVENTIX_TEST_RECORD_DIR=str(records),
                )
            )
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "eventix_operator",
                        "worker",
                        "--tasks",
                        "tests.api.shared_tasks",
                        "--queues",
                        namespace,
                        "--concurrency",
                        "2",
                    ],
                    cwd=ROOT,
                    env={
                        **__import__("os").environ,
                        "DATABASE_URL": api.server_url,
                        "EVENTIX_TEST_RECORD_DIR": str(records),
                        "EVENTIX_LOG_LEVEL": "WARNING",
                        "EVENTIX_WORKER_POLL_INTERVAL": "0.5",
                    },
                    stdout=(tmp_path / f"native-{i}.log").open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        deadline = time.monotonic() + 60
        while not all(
            "ready" in (tmp_path / f"http-{i}.log").read_text() for i in range(2)
        ):  # Eventix's client takes a while to import
            assert time.monotonic() < deadline, "the Eventix workers did not start"
            time.sleep(0.05)
        time.sleep(0.5)
        with api.engine.begin() as conn:
            insert_tasks(
                conn,
                [
                    NewTask("shared_record", args=(n, TASK_SECONDS), queue=namespace)
                    for n in range(TASKS)
                ],
                payload_limit=10_000,
            )

        deadline = time.monotonic() + 90
        while True:
            with api.engine.connect() as conn:
                done = conn.execute(
                    text(
                        "SELECT count(*) FROM eventix_task "
                        "WHERE namespace = :ns AND status = 'done'"
                    ),
                    {"ns": namespace},
                ).scalar_one()
            if done == TASKS:
                break
            if time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
                raise AssertionError(f"{done}/{TASKS} done; logs:\n{logs}")
            time.sleep(0.1)
    finally:
        stop_file.touch()
        for proc in procs:
            stop(proc)

    runs: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for path in records.glob("*.log"):
        lines = path.read_text().split()
        runs.update(lines)
        by_kind[path.name.split("-")[0]] += len(lines)
    assert sorted(runs) == sorted(str(n) for n in range(TASKS))
    assert set(runs.values()) == {1}, [n for n, c in runs.items() if c > 1]
    assert by_kind["http"] > 0, by_kind
    assert by_kind["native"] > 0, by_kind
