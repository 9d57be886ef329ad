"""Queue semantics on a real PostgreSQL: claim order, leases, unique keys, bulk enqueue."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventix_operator import enqueue, enqueue_many
from eventix_operator.db import admin
from eventix_operator.db.enqueue import NewTask, insert_tasks
from eventix_operator.db.leases import Failure, LeaseStore, Success
from eventix_operator.db.rows import ClaimedTask, TaskRecord


@pytest.fixture
def aengine(database_url: str) -> Iterator[AsyncEngine]:
    eng = create_async_engine(database_url)
    yield eng
    asyncio.run(eng.dispose())


def store(aengine: AsyncEngine, worker: str = "w1", lease: float = 30) -> LeaseStore:
    return LeaseStore(aengine, worker, lease)


def claim(aengine: AsyncEngine, queues: list[str], limit: int = 100, worker: str = "w1",
          lease: float = 30) -> list[ClaimedTask]:  # fmt: skip
    return asyncio.run(store(aengine, worker, lease).claim(queues, limit))


def status_of(engine: Engine, uid: str) -> TaskRecord:
    with engine.connect() as conn:
        record = admin.get_task(conn, uid)
    assert record is not None
    return record


def test_claim_order_is_priority_then_eta(engine: Engine, aengine: AsyncEngine) -> None:
    past = datetime.now(UTC) - timedelta(minutes=10)
    with engine.begin() as conn:
        late_low = enqueue("t", ["late-low"], priority=5, eta=past + timedelta(minutes=2),
                           connection=conn)  # fmt: skip
        early_low = enqueue("t", ["early-low"], priority=5, eta=past, connection=conn)
        high = enqueue("t", ["high"], priority=-1, eta=past + timedelta(minutes=5), connection=conn)
    claimed = claim(aengine, ["default"])
    assert [c.uid for c in claimed] == [high, early_low, late_low]
    assert all(c.status == "processing" and c.attempts == 1 for c in claimed)


def test_only_due_tasks_of_the_workers_queues(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        due = enqueue("t", queue="a", connection=conn)
        enqueue("t", queue="a", delay=3600, connection=conn)
        other = enqueue("t", queue="b", connection=conn)
        enqueue("t", queue="c", connection=conn)
    assert [c.uid for c in claim(aengine, ["a"])] == [due]
    assert [c.uid for c in claim(aengine, ["a", "b"])] == [other]
    assert claim(aengine, ["a", "b"]) == []


def test_two_workers_never_claim_the_same_task(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        enqueue_many([{"task": "t", "args": [i]} for i in range(500)], connection=conn)

    async def race() -> list[list[ClaimedTask]]:
        stores = [store(aengine, f"w{i}") for i in range(4)]
        results: list[list[ClaimedTask]] = [[] for _ in stores]

        async def drain(i: int) -> None:
            while batch := await stores[i].claim(["default"], 7):
                results[i].extend(batch)

        await asyncio.gather(*(drain(i) for i in range(4)))
        return results

    results = asyncio.run(race())
    uids = [c.uid for r in results for c in r]
    assert len(uids) == 500
    assert len(set(uids)) == 500


def test_success_and_final_failure_are_recorded(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        ok = enqueue("t", connection=conn)
        bad = enqueue("t", connection=conn, error_ttl_seconds=60)
    claim(aengine, ["default"])
    s = store(aengine)
    done, failed = asyncio.run(
        s.record([Success(ok, '{"answer": 42}'), Failure(bad, {"type": "E", "message": "m"}, None)])
    )
    assert (done, failed) == (1, 1)
    good = status_of(engine, ok)
    assert good.status == "done"
    assert good.result == {"answer": 42}
    assert good.worker_id is None
    assert good.expires is not None  # default result TTL: 7 days
    failure = status_of(engine, bad)
    assert failure.status == "error"
    assert failure.error == {"type": "E", "message": "m"}
    assert failure.expires is not None
    assert failure.finished_at is not None


def test_retry_moves_eta_by_the_backoff(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", connection=conn)
    claim(aengine, ["default"])
    before = datetime.now(UTC)
    asyncio.run(store(aengine).record([Failure(uid, {"type": "E", "message": "m"}, 30.0)]))
    record = status_of(engine, uid)
    assert record.status == "retry"
    assert before + timedelta(seconds=29) < record.eta < before + timedelta(seconds=32)
    assert claim(aengine, ["default"]) == []  # not due yet


def test_results_of_a_lost_lease_are_not_recorded(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", connection=conn)
    claim(aengine, ["default"], worker="old", lease=0.01)
    # the lease lapses, another worker's maintenance requeues it, a third claims it
    asyncio.run(asyncio.sleep(0.05))
    assert asyncio.run(store(aengine, "maint").recover_expired_leases()) == [(uid, "scheduled")]
    [again] = claim(aengine, ["default"], worker="new")
    assert again.attempts == 2
    done, _ = asyncio.run(store(aengine, "old").record([Success(uid, '"stale"')]))
    assert done == 0
    assert status_of(engine, uid).worker_id == "new"


def test_expired_lease_with_no_retries_left_is_an_error(
    engine: Engine, aengine: AsyncEngine
) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", max_retries=0, connection=conn)
    claim(aengine, ["default"], lease=0.01)
    asyncio.run(asyncio.sleep(0.05))
    assert asyncio.run(store(aengine, "maint").recover_expired_leases()) == [(uid, "error")]
    assert status_of(engine, uid).error["type"] == "WorkerLost"  # type: ignore[index]


def test_heartbeat_keeps_the_lease(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        uid = enqueue("t", connection=conn)
    claim(aengine, ["default"], lease=0.3)

    async def beat() -> list[tuple[str, str]]:
        s = store(aengine, lease=0.3)
        for _ in range(4):
            await asyncio.sleep(0.1)
            assert await s.heartbeat() == 1
        return await store(aengine, "maint").recover_expired_leases()

    assert asyncio.run(beat()) == []
    assert status_of(engine, uid).status == "processing"


def test_release_gives_back_unstarted_attempts(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        a = enqueue("t", connection=conn)
        b = enqueue("t", connection=conn)
    claim(aengine, ["default"])
    assert asyncio.run(store(aengine).release([a, b], [False, True])) == 2
    assert (status_of(engine, a).status, status_of(engine, a).attempts) == ("scheduled", 0)
    assert (status_of(engine, b).status, status_of(engine, b).attempts) == ("scheduled", 1)


def test_unique_key_merges_pending_task(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        first = enqueue("t", [1], unique_key="k", priority=3, eta=now + timedelta(hours=1),
                        connection=conn)  # fmt: skip
        second = enqueue("t", [2], unique_key="k", priority=7, eta=now + timedelta(minutes=5),
                         connection=conn)  # fmt: skip
        other_queue = enqueue("t", [3], unique_key="k", queue="other", connection=conn)
    assert first == second != other_queue
    record = status_of(engine, first)
    assert record.args == [2]
    assert record.priority == 3
    assert abs((record.eta - (now + timedelta(minutes=5))).total_seconds()) < 1
    assert record.revision == 2


def test_unique_key_merges_only_within_one_kubernetes_namespace(engine: Engine) -> None:
    """A merge never crosses a tenancy boundary: the tasks of a namespace's resources
    (EventixTask, schedule ticks, triggers) merge with that namespace's pending tasks
    only, and tasks of no namespace (REST API, client, CLI) with one another."""

    def new(arg: int, namespace: str | None, source: str = "k8s") -> NewTask:
        return NewTask("t", [arg], queue="shared", unique_key="k", k8s_namespace=namespace,
                       source=source, delay=3600)  # fmt: skip

    with engine.begin() as conn:
        a1, b1, none1 = insert_tasks(
            conn, [new(1, "team-a"), new(2, "team-b"), new(3, None, "client")], payload_limit=10**6
        )
        # In one batch and in the next statement alike.
        a2, b2, none2, a3 = insert_tasks(
            conn,
            [new(4, "team-a", "trigger"), new(5, "team-b"), new(6, None, "api"), new(7, "team-a")],
            payload_limit=10**6,
        )
        via_client = enqueue("t", [8], queue="shared", unique_key="k", connection=conn)
    assert len({a1, b1, none1}) == 3
    assert (a2, a3, b2, none2, via_client) == (a1, a1, b1, none1, none1)
    assert [status_of(engine, u).args for u in (a1, b1, none1)] == [[7], [5], [8]]
    assert status_of(engine, a1).k8s_namespace == "team-a"


def test_unique_key_of_a_finished_task_enqueues_anew(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        first = enqueue("t", unique_key="k", connection=conn)
    claim(aengine, ["default"])
    with engine.begin() as conn:
        second = enqueue("t", unique_key="k", connection=conn)
    assert first != second


def test_unique_key_under_8_concurrent_enqueuers(engine: Engine) -> None:
    base = datetime.now(UTC) + timedelta(hours=1)
    barrier = threading.Barrier(8)
    uids: list[str] = []
    errors: list[BaseException] = []

    def enqueuer(i: int) -> None:
        try:
            barrier.wait()
            for j in range(25):
                with engine.begin() as conn:
                    uids.append(
                        enqueue("t", [i, j], unique_key="same", priority=100 - i - j,
                                eta=base + timedelta(seconds=i * 100 + j), connection=conn)
                    )  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueuer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(uids)) == 1
    with engine.connect() as conn:
        rows = admin.list_tasks(conn, limit=10)
    assert len(rows) == 1
    [row] = rows
    assert row.priority == 100 - 7 - 24  # lowest number of all 200 enqueues
    assert row.eta == base  # earliest eta (i=0, j=0)
    assert row.revision == 200


def test_bulk_enqueue_is_a_few_statements(engine: Engine) -> None:
    statements: list[str] = []

    from sqlalchemy import event

    def count(*args: object) -> None:
        statements.append(str(args[2])[:40])

    event.listen(engine, "before_cursor_execute", count)
    with engine.begin() as conn:
        uids = enqueue_many(
            [{"task": "bulk", "args": [i], "priority": i % 3} for i in range(25_000)],
            connection=conn,
        )
    event.remove(engine, "before_cursor_execute", count)
    assert len(uids) == len(set(uids)) == 25_000
    assert len(statements) <= 3
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM eventix_task")).scalar() == 25_000


def test_enqueue_inside_a_rolled_back_transaction_leaves_nothing(engine: Engine) -> None:
    def callers_transaction() -> None:
        with engine.begin() as conn:
            enqueue("t", connection=conn)
            raise RuntimeError("the caller's own work failed")

    with pytest.raises(RuntimeError):
        callers_transaction()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM eventix_task")).scalar() == 0


def test_enqueue_in_an_orm_session(engine: Engine) -> None:
    from sqlalchemy.orm import Session

    with Session(engine) as session, session.begin():
        uid = enqueue("t", connection=session)
    assert status_of(engine, uid).status == "scheduled"


def test_enqueue_without_connection_uses_database_url(db_env: str, engine: Engine) -> None:
    uid = enqueue("t", kwargs={"x": 1})
    assert status_of(engine, uid).kwargs == {"x": 1}


def test_purge_removes_only_expired(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        gone = enqueue("t", result_ttl_seconds=0, connection=conn)
        kept = enqueue("t", result_ttl_seconds=None, connection=conn)
    claim(aengine, ["default"])
    asyncio.run(store(aengine).record([Success(gone, "1"), Success(kept, "2")]))
    assert asyncio.run(store(aengine).purge_expired()) == 1
    with engine.connect() as conn:
        assert admin.get_task(conn, gone) is None
        assert admin.get_task(conn, kept) is not None


def test_new_rows_notify_their_queue(engine: Engine, database_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN eventix_task_ready")
        with engine.begin() as conn:
            enqueue_many([{"task": "t", "queue": q} for q in ["a", "b", "a"] * 100],
                         connection=conn)  # fmt: skip
        payloads = sorted(n.payload for n in listener.notifies(timeout=1.0, stop_after=2))
    assert payloads == ["a", "b"]  # one per queue and statement, not per row


def test_mixed_bulk_enqueue_keeps_order_and_fields(engine: Engine) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    specs: list[dict[str, object]] = []
    for i in range(300):
        spec: dict[str, object] = {"task": "t", "args": [i]}
        if i % 7 == 0:
            spec["unique_key"] = f"k{i % 3}"  # merged: three pending tasks in the end
        elif i % 5 == 0:
            spec["delay"] = 60
        elif i % 11 == 0:
            spec["eta"] = later
        specs.append(spec)
    with engine.begin() as conn:
        uids = enqueue_many(specs, connection=conn)
    with engine.connect() as conn:
        rows = {r.uid: r for r in admin.list_tasks(conn, limit=1000)}
    merged = {i for i in range(300) if i % 7 == 0}
    assert len(rows) == 300 - len(merged) + 3
    for i, uid in enumerate(uids):
        row = rows[uid]
        if i in merged:
            assert row.unique_key == f"k{i % 3}"
            continue
        assert row.args == [i]
        if i % 5 == 0:
            assert row.eta > datetime.now(UTC) + timedelta(seconds=30)
        elif i % 11 == 0:
            assert row.eta == later
        else:
            assert row.eta <= datetime.now(UTC)
