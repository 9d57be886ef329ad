"""EVENTIX_READ_DATABASE_URL on a real streaming replica: listings and counts (CLI,
REST API, the operator's queue figures) come from the standby, what a user acts on
from the primary. The standby's replay is paused while a task is enqueued, so the
two disagree in a way each test can see."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import psycopg
from sqlalchemy.engine import make_url

from eventix_operator.client import new_task
from eventix_operator.db.engine import make_engine
from eventix_operator.db.enqueue import insert_tasks
from eventix_operator.operator.kube import Kube
from eventix_operator.operator.runtime import Runtime
from eventix_operator.settings import Settings
from tests.api.conftest import launch
from tests.support.processes import make_processes
from tests.support.replication import ReplicatedDatabase


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


@contextlib.contextmanager
def replay_paused(db: ReplicatedDatabase) -> Iterator[None]:
    """The standby receives and keeps WAL (synchronous commits go on) but applies none."""
    with psycopg.connect(libpq(db.read_url), autocommit=True) as standby:
        standby.execute("SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            standby.execute("SELECT pg_wal_replay_resume()")
    db.pair.wait_replayed()


def enqueue_on_primary(db: ReplicatedDatabase, queue: str = "lagging") -> str:
    engine = make_engine(Settings.model_validate({"DATABASE_URL": db.url}))
    try:
        with engine.begin() as conn:
            [uid] = insert_tasks(conn, [new_task("t", queue=queue)], payload_limit=1_000_000)
    finally:
        engine.dispose()
    return uid


def test_cli_lists_from_the_standby_and_shows_from_the_primary(
    replicated_database: ReplicatedDatabase, tmp_path: Path
) -> None:
    db = replicated_database
    procs = make_processes(db.url, tmp_path)
    env = {"EVENTIX_READ_DATABASE_URL": db.read_url}

    def listed() -> list[str]:
        out = procs.cli("tasks", "list", "--output", "json", **env)
        assert out.returncode == 0, out.stderr
        return [t["uid"] for t in json.loads(out.stdout)]

    def queues() -> set[str]:
        out = procs.cli("queue", "stats", "--output", "json", **env)
        assert out.returncode == 0, out.stderr
        return {s["queue"] for s in json.loads(out.stdout)}

    with replay_paused(db):
        uid = enqueue_on_primary(db)
        assert listed() == []
        assert queues() == set()
        shown = procs.cli("tasks", "show", uid, "--output", "json", **env)
        assert json.loads(shown.stdout)["status"] == "scheduled"  # the primary's
        assert procs.cli("tasks", "cancel", uid, **env).returncode == 0  # acts on the primary
    assert listed() == [uid]
    assert queues() == {"lagging"}


def test_rest_listings_read_the_standby_and_task_reads_the_primary(
    replicated_database: ReplicatedDatabase, tmp_path: Path
) -> None:
    db = replicated_database
    with launch(
        db.url,
        Path(sys.executable),
        tmp_path,
        EVENTIX_READ_DATABASE_URL=db.read_url,
        EVENTIX_API_ALLOW_ANONYMOUS="true",
    ) as api:
        with replay_paused(db):
            uid = enqueue_on_primary(db, queue="rest")
            status, page = api.request("PUT", "/tasks/by_status", {"namespace": "rest"}, token=None)
            assert (status, page["ids"]) == (200, [])
            assert api.request("GET", "/namespaces", token=None)[1]["namespaces"] == []
            status, task = api.request("GET", f"/task/{uid}", token=None)
            assert (status, task["status"]) == (200, "scheduled")
        status, page = api.request("PUT", "/tasks/by_status", {"namespace": "rest"}, token=None)
        assert len(page["ids"]) == 1


def test_operator_queue_figures_come_from_the_standby(
    replicated_database: ReplicatedDatabase,
) -> None:
    db = replicated_database
    settings = Settings.model_validate({"DATABASE_URL": db.url, "read_database_url": db.read_url})
    engine = make_engine(settings)
    runtime = Runtime(settings, engine, cast(Kube, None))
    try:
        assert runtime.read_engine is not engine
        with replay_paused(db):
            enqueue_on_primary(db, queue="figures")
            assert runtime._read_queue_metrics(finished=True) == []
        [figures] = runtime._read_queue_metrics(finished=True)
        assert (figures.queue, figures.due) == ("figures", 1)
    finally:
        runtime.read_engine.dispose()
        engine.dispose()
