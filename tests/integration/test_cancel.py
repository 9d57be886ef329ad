"""The data layer's rules for cancelling on a real PostgreSQL: a pending task ends at
once, a running one is marked and its uid notified; its worker learns of it by the
heartbeat or its look too; whatever becomes of the row after (recorded, released at
shutdown, recovered from a dead worker) it ends `cancelled` and is never run again,
and a retry clears the cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventix_operator import enqueue
from eventix_operator.db import admin
from eventix_operator.db.leases import Cancelled, LeaseStore, Success
from eventix_operator.db.rows import TaskRecord


@pytest.fixture
def aengine(database_url: str) -> Iterator[AsyncEngine]:
    eng = create_async_engine(database_url)
    yield eng
    asyncio.run(eng.dispose())


def get(engine: Engine, uid: str) -> TaskRecord:
    with engine.connect() as conn:
        record = admin.get_task(conn, uid)
    assert record is not None
    return record


def cancel(engine: Engine, uid: str, by: str = "cli") -> TaskRecord | None:
    with engine.begin() as conn:
        return admin.cancel_task(conn, uid, by)


def claim(aengine: AsyncEngine, worker: str = "w1", lease: float = 30) -> list[str]:
    jobs = asyncio.run(LeaseStore(aengine, worker, lease).claim(["default"], 100))
    return [j.uid for j in jobs]


def test_a_pending_task_ends_cancelled_at_once_saying_by_whom(engine: Engine) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", max_retries=3, connection=conn)
    record = cancel(engine, uid, "dashboard")
    assert record is not None
    assert record.status == "cancelled"
    assert record.error == {"type": "Cancelled", "message": "cancelled by dashboard"}
    assert record.cancelled_by == "dashboard"
    assert cancel(engine, uid) is None  # finished: nothing to cancel


def test_a_running_task_is_marked_and_its_uid_notified(
    engine: Engine, aengine: AsyncEngine, database_url: str
) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", connection=conn)
    claim(aengine)
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN eventix_task_cancel")
        record = cancel(engine, uid, "api")
        payloads = [n.payload for n in listener.notifies(timeout=2.0, stop_after=1)]
    assert payloads == [uid]
    assert record is not None
    assert record.status == "processing"
    assert record.cancel_requested_at is not None
    assert record.worker_id == "w1"

    async def learn() -> tuple[tuple[int, list[str]], list[str], list[str]]:
        s = LeaseStore(aengine, "w1", 30)
        return await s.renew(), await s.to_stop([uid]), await s.to_stop([])

    assert asyncio.run(learn()) == ((1, [uid]), [uid], [])
    # the worker's record: cancelled for good, by whom, the retries left unused
    s = LeaseStore(aengine, "w1", 30)
    assert asyncio.run(s.record([Cancelled(uid, " (late)")])) == (0, 1)
    done = get(engine, uid)
    assert done.status == "cancelled"
    assert done.error == {"type": "Cancelled", "message": "cancelled by api (late)", "attempt": 1}
    assert done.worker_id is None


def test_the_look_also_finds_rows_gone_from_under_the_worker(
    engine: Engine, aengine: AsyncEngine
) -> None:
    with engine.begin() as conn:
        kept = enqueue("t", connection=conn)
        gone = enqueue("t", connection=conn)
    claim(aengine)
    with engine.begin() as conn:
        admin.delete_task(conn, gone)
    assert asyncio.run(LeaseStore(aengine, "w1", 30).to_stop([kept, gone])) == [gone]
    assert asyncio.run(LeaseStore(aengine, "w2", 30).to_stop([kept])) == [kept]  # not w2's


def test_released_or_recovered_cancelled_tasks_are_never_run_again(
    engine: Engine, aengine: AsyncEngine
) -> None:
    with engine.begin() as conn:
        released = enqueue("t", max_retries=3, connection=conn)
        dead = enqueue("t", max_retries=3, connection=conn)
    claim(aengine, "w1")
    cancel(engine, released)
    cancel(engine, dead)
    # w1 shuts down and gives back what it holds
    asyncio.run(LeaseStore(aengine, "w1", 30).release([released], [True]))
    assert get(engine, released).status == "cancelled"
    # ...and never recorded `dead`: once its lease passes, recovery ends it
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE eventix_task SET worker_expires = now() - interval '1 s' WHERE uid = %s",
            (dead,),
        )
    recovered = asyncio.run(LeaseStore(aengine, "maint", 30).recover_expired_leases())
    assert recovered == [(dead, "cancelled")]
    error = get(engine, dead).error
    assert error is not None
    assert error["message"].startswith("cancelled by cli")
    assert claim(aengine, "w2") == []


def test_a_retry_clears_the_cancel(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", connection=conn)
    claim(aengine)
    cancel(engine, uid)
    asyncio.run(LeaseStore(aengine, "w1", 30).record([Cancelled(uid)]))
    with engine.begin() as conn:
        assert admin.requeue_task(conn, uid) is not None
    record = get(engine, uid)
    assert (record.cancel_requested_at, record.cancelled_by, record.error) == (None, None, None)
    assert claim(aengine, "w2") == [uid]
    assert asyncio.run(LeaseStore(aengine, "w2", 30).renew()) == (1, [])
    assert asyncio.run(LeaseStore(aengine, "w2", 30).record([Success(uid, "1")])) == (1, 0)
