"""Queue settings on a real PostgreSQL: pause, and limits that hold when claims race
(the claim statement enforces them; these tests hold one claim's transaction open
while another one runs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, Engine, text

from eventix_operator import enqueue_many
from eventix_operator.db import queues, statements
from eventix_operator.db.queues import QueueSettings, everything


def add(engine: Engine, queue: str, count: int) -> None:
    with engine.begin() as conn:
        enqueue_many([{"task": "t", "queue": queue, "args": [i]} for i in range(count)],
                     connection=conn)  # fmt: skip


def claim(
    conn: Connection, queue_names: list[str], limit: int = 10, worker: str = "w"
) -> list[str]:
    params = {"queues": queue_names, "limit": limit, "worker_ids": [worker], "lease_seconds": 30}
    return [row[0] for row in conn.execute(statements.CLAIM_TASKS, params)]


def claim_now(engine: Engine, queue_names: list[str], limit: int = 10) -> list[str]:
    with engine.begin() as conn:
        return claim(conn, queue_names, limit)


def configure(engine: Engine, queue: str, **values: Any) -> None:
    with engine.begin() as conn:
        queues.set_queue(conn, queue, everything(**values))


def in_thread(work: Callable[[], list[str]]) -> tuple[threading.Thread, list[list[str]]]:
    out: list[list[str]] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    return thread, out


def complete(engine: Engine, uids: list[str]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE eventix_task SET status = 'done', worker_id = NULL "
                 "WHERE uid = ANY(CAST(:uids AS uuid[]))"),
            {"uids": uids},
        )  # fmt: skip


def test_a_paused_queue_is_never_claimed_and_resumes(engine: Engine) -> None:
    add(engine, "p", 3)
    with engine.begin() as conn:
        queues.pause(conn, "p")
    assert claim_now(engine, ["p"]) == []
    with engine.begin() as conn:
        queues.resume(conn, "p")
    assert len(claim_now(engine, ["p"])) == 3


def test_resume_notifies_the_ready_channel(engine: Engine, database_url: str) -> None:
    with engine.begin() as conn:
        queues.pause(conn, "p")
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {statements.READY_CHANNEL}")
        with engine.begin() as conn:
            queues.resume(conn, "p")
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in notes] == ["p"]


def test_racing_claims_never_exceed_the_concurrency_limit(engine: Engine) -> None:
    add(engine, "c", 20)
    configure(engine, "c", concurrency_limit=3)
    with engine.begin() as first:
        held = claim(first, ["c"])
        assert len(held) == 3
        # A second claim waits for the first one's turn, then counts its tasks.
        thread, out = in_thread(lambda: claim_now(engine, ["c"]))
        time.sleep(0.3)
        assert thread.is_alive()
    thread.join(10)
    assert out == [[]]
    complete(engine, held[:2])
    assert len(claim_now(engine, ["c"])) == 2
    assert claim_now(engine, ["c"]) == []


def test_racing_claims_never_exceed_the_rate_limit(engine: Engine) -> None:
    add(engine, "r", 20)
    configure(engine, "r", rate_count=5, rate_per_seconds=60.0)
    with engine.begin() as first:
        assert len(claim(first, ["r"], limit=3)) == 3
        thread, out = in_thread(lambda: claim_now(engine, ["r"]))
        time.sleep(0.3)
        assert thread.is_alive()
    thread.join(10)
    assert len(out[0]) == 2
    assert claim_now(engine, ["r"]) == []


def test_the_rate_limit_frees_starts_as_its_window_moves(engine: Engine) -> None:
    add(engine, "r", 10)
    configure(engine, "r", rate_count=2, rate_per_seconds=0.5)
    assert len(claim_now(engine, ["r"])) == 2
    assert claim_now(engine, ["r"]) == []
    time.sleep(0.6)
    assert len(claim_now(engine, ["r"])) == 2


def test_an_unlimited_queue_never_waits_for_a_limited_one(engine: Engine) -> None:
    add(engine, "lim", 5)
    add(engine, "free", 5)
    configure(engine, "lim", concurrency_limit=1)

    def free_claim() -> list[str]:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            return claim(conn, ["free"])

    with engine.begin() as holder:
        assert len(claim(holder, ["lim"])) == 1
        thread, out = in_thread(free_claim)
        thread.join(10)
        assert len(out[0]) == 5


def test_a_claim_of_several_queues_never_waits_on_one_of_their_limits(engine: Engine) -> None:
    add(engine, "lim", 5)
    add(engine, "free", 5)
    configure(engine, "lim", concurrency_limit=2)

    def both_claim() -> list[str]:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            return claim(conn, ["lim", "free"], worker="b")

    with engine.begin() as holder:  # holds the limited queue's settings row
        assert len(claim(holder, ["lim"])) == 2
        thread, out = in_thread(both_claim)
        thread.join(10)
        assert len(out[0]) == 5  # the free queue's, at once; none of the limited one
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT namespace, count(*) FROM eventix_task WHERE status = 'processing' "
                 "GROUP BY 1")
        ).all()  # fmt: skip
    assert dict(rows) == {"lim": 2, "free": 5}


def test_a_queue_without_limits_takes_no_lock(engine: Engine) -> None:
    add(engine, "q", 5)
    configure(engine, "q", retain_succeeded_seconds=60)
    with engine.begin() as conn:
        assert len(claim(conn, ["q"], limit=2)) == 2
        locks = conn.execute(
            text("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                 "WHERE c.relname = 'eventix_queue' AND l.mode = 'RowShareLock' "
                 "AND l.pid = pg_backend_pid()")
        ).scalar()  # fmt: skip
        assert locks == 0


def test_partial_changes_keep_the_other_settings(engine: Engine) -> None:
    configure(engine, "s", concurrency_limit=4, rate_count=10, rate_per_seconds=1.0)
    with engine.begin() as conn:
        unlimit = QueueSettings(concurrency_limit=None, given=frozenset({"concurrency_limit"}))
        queues.set_queue(conn, "s", unlimit)
        queues.pause(conn, "s")
        queue = queues.get_queue(conn, "s")
    assert queue is not None
    assert (queue.paused, queue.concurrency_limit, queue.rate_count) == (True, None, 10)


def test_settings_are_checked_by_the_database(engine: Engine) -> None:
    with pytest.raises(Exception, match="ck_eventix_queue_concurrency_limit"):
        configure(engine, "bad", concurrency_limit=0)
    with pytest.raises(Exception, match="ck_eventix_queue_rate"):
        configure(engine, "bad", rate_count=5)


def test_queue_retention_overrides_the_tasks_own(engine: Engine, database_url: str) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db.leases import Failure, LeaseStore, Success

    add(engine, "k", 2)
    configure(engine, "k", retain_succeeded_seconds=10, retain_failed_seconds=20)

    async def run() -> None:
        aengine = create_async_engine(database_url)
        store = LeaseStore(aengine, "w", 30)
        first, second = await store.claim(["k"], 2)
        await store.record([Success(first.uid, "1"), Failure(second.uid, {"type": "E"}, None)])
        await aengine.dispose()

    asyncio.run(run())
    with engine.connect() as conn:
        kept = conn.execute(
            text("SELECT status, round(extract(epoch FROM expires - finished_at)) "
                 "FROM eventix_task WHERE namespace = 'k' ORDER BY status")
        ).all()  # fmt: skip
    assert [(s, int(k)) for s, k in kept] == [("done", 10), ("error", 20)]


def test_every_failed_or_cancelled_end_keeps_the_queues_failed_retention(
    engine: Engine, database_url: str
) -> None:
    """A cancel of a pending task (CLI or REST, dashboard), a running one recorded
    cancelled by its worker or released cancelled at its shutdown, and the tasks of a
    lost lease (cancelled, or failed: WorkerLost) all expire as the queue says, as a
    failure does; the tasks' own error_expires (none here: kept) gives way."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db import admin, dashboard
    from eventix_operator.db.leases import Cancelled, LeaseStore, recover_expired_leases

    with engine.begin() as conn:
        enqueue_many([{"task": "t", "queue": "k", "args": [i], "max_retries": 0}
                      for i in range(6)], connection=conn)  # fmt: skip
    configure(engine, "k", retain_failed_seconds=20)
    with engine.begin() as conn:
        first, second = conn.execute(
            text("SELECT uid::text FROM eventix_task WHERE namespace = 'k' LIMIT 2")
        ).scalars()
        assert admin.cancel_task(conn, first, by="cli") is not None
        assert dashboard.bulk_action(conn, "cancel", [second]).changed == 1

    async def run() -> None:
        aengine = create_async_engine(database_url)
        store = LeaseStore(aengine, "w", 30)
        recorded, released, lost, failed = [t.uid for t in await store.claim(["k"], 4)]
        with engine.begin() as conn:
            for uid in (recorded, released, lost):
                admin.cancel_task(conn, uid, by="api")
            conn.execute(
                text("UPDATE eventix_task SET worker_expires = now() - interval '1 second' "
                     "WHERE uid IN (CAST(:a AS uuid), CAST(:b AS uuid))"),
                {"a": lost, "b": failed},
            )  # fmt: skip
        await store.record([Cancelled(recorded)])
        assert await store.release([released], [True]) == 1
        assert sorted(s for _, s in await recover_expired_leases(aengine)) == [
            "cancelled", "error"]  # fmt: skip
        await aengine.dispose()

    asyncio.run(run())
    with engine.connect() as conn:
        kept = conn.execute(
            text("SELECT status, extract(epoch FROM expires - finished_at) "
                 "FROM eventix_task WHERE namespace = 'k' ORDER BY status")
        ).all()  # fmt: skip
    assert [(s, None if k is None else int(k)) for s, k in kept] == [
        *[("cancelled", 20)] * 5, ("error", 20)]  # fmt: skip
    # Without a queue retention, the task's own (none: kept) applies, as before.
    configure(engine, "k")
    with engine.begin() as conn:
        enqueue_many([{"task": "t", "queue": "k", "args": [9]}], connection=conn)
        (uid,) = conn.execute(
            text("SELECT uid::text FROM eventix_task WHERE status = 'scheduled'")
        ).scalars()
        cancelled = admin.cancel_task(conn, uid, by="cli")
    assert cancelled is not None
    assert (cancelled.status, cancelled.expires) == ("cancelled", None)


def test_the_pool_scaler_sees_no_demand_in_a_paused_queue(engine: Engine) -> None:
    from eventix_operator.db import pools

    add(engine, "p", 4)
    add(engine, "c", 4)
    configure(engine, "c", concurrency_limit=3)
    with engine.begin() as conn:
        queues.pause(conn, "p")
    assert len(claim_now(engine, ["c"], limit=1)) == 1
    with engine.connect() as conn:
        loads = pools.queue_loads(conn, ["p", "c"], cap=100)
        due = pools.due_queues(conn, ["p", "c"])
    assert (loads["p"].due, loads["p"].next_due_in) == (0, None)
    assert (loads["c"].due, loads["c"].running) == (2, 1)
    assert due == ["c"]


def test_a_task_ending_in_a_limited_queue_wakes_its_workers(
    engine: Engine, database_url: str
) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db.leases import LeaseStore, Success

    add(engine, "c", 3)
    configure(engine, "c", concurrency_limit=1)
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listener:

        async def run() -> None:
            aengine = create_async_engine(database_url)
            store = LeaseStore(aengine, "w", 30)
            (job,) = await store.claim(["c"], 5)
            listener.execute(f"LISTEN {statements.READY_CHANNEL}")
            await store.record([Success(job.uid, "1")])
            await aengine.dispose()

        asyncio.run(run())
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in notes] == ["c"]


def test_a_claim_of_a_full_queue_takes_no_lock(engine: Engine) -> None:
    """Workers woken for a queue another claim has filled do not queue up behind each
    other for its settings row (migration 0012): the count without the lock says
    full, and the claim gets nothing at once."""
    add(engine, "full", 3)
    configure(engine, "full", concurrency_limit=1)
    assert len(claim_now(engine, ["full"])) == 1
    with engine.begin() as holder:
        holder.execute(text("SELECT 1 FROM eventix_queue WHERE name = 'full' FOR UPDATE"))
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert claim(conn, ["full"], worker="late") == []


@pytest.mark.parametrize("through", ["server", "pgbouncer"])
def test_a_write_back_claims_the_start_it_frees(
    engine: Engine, through: str, request: pytest.FixtureRequest
) -> None:
    """LeaseStore.record_and_claim: the next task of a queue with a concurrency limit
    is claimed in the statement that ends the last one (COMPLETE_AND_CLAIM, also
    through PgBouncer in transaction mode), and nobody is woken while the worker retakes what
    it frees; the start it leaves at the end of the backlog is announced."""
    import asyncio

    from eventix_operator.db.engine import make_async_engine
    from eventix_operator.db.leases import LeaseStore, Success
    from eventix_operator.settings import Settings

    url = request.getfixturevalue("database_url" if through == "server" else "pooled_database_url")
    direct = request.getfixturevalue("database_url").replace("postgresql+psycopg", "postgresql")
    add(engine, "c1", 3)
    configure(engine, "c1", concurrency_limit=1)
    with psycopg.connect(direct, autocommit=True) as listener:
        listener.execute(f"LISTEN {statements.READY_CHANNEL}")

        async def run() -> list[tuple[int, int, int | None]]:
            aengine = make_async_engine(Settings.model_validate({"DATABASE_URL": url}))
            store = LeaseStore(aengine, "w", 30)
            held = await store.claim(["c1"], 5)
            assert len(held) == 1
            rounds = []
            for _ in range(3):
                done, failed, jobs = await store.record_and_claim(
                    [Success(held[0].uid, "1")], ["c1"], 5
                )
                rounds.append((done, failed, None if jobs is None else len(jobs)))
                held = jobs or []
            await aengine.dispose()
            return rounds

        assert asyncio.run(run()) == [(1, 0, 1), (1, 0, 1), (1, 0, 0)]
        notes = [n.payload for n in listener.notifies(timeout=1)]
    assert notes == ["c1"]  # only the last round left its start free
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT count(*) FROM eventix_task WHERE namespace = 'c1' AND status = 'done'")
        ).scalar() == 3  # fmt: skip


def _write_backs(
    url: str, queue: str, held: int, wanted: int, rounds: int, during: Callable[[], Any]
) -> list[int]:
    """Claim ``held`` tasks of ``queue``, call ``during()``, then write back the first
    held task ``rounds`` times, each claiming up to ``wanted``: how many each got.
    Each write-back must finish within 5 s."""
    import asyncio

    from eventix_operator.db.engine import make_async_engine
    from eventix_operator.db.leases import LeaseStore, Success
    from eventix_operator.settings import Settings

    async def run() -> list[int]:
        aengine = make_async_engine(Settings.model_validate({"DATABASE_URL": url}))
        store = LeaseStore(aengine, "w", 30)
        tasks = await store.claim([queue], held)
        during()
        got = []
        for _ in range(rounds):
            task, *tasks = tasks
            write_back = store.record_and_claim([Success(task.uid, "1")], [queue], wanted)
            _, _, jobs = await asyncio.wait_for(write_back, 5)
            got.append(len(jobs or []))
            tasks += jobs or []
        await aengine.dispose()
        return got

    return asyncio.run(run())


def test_a_write_back_retakes_the_start_it_freed_without_the_queues_lock(
    engine: Engine, database_url: str
) -> None:
    """Taking back the start its own success freed leaves the queue's running count
    as it was, so a write-back does not queue for the settings row behind the others
    (migration 0014): it claims while another transaction holds that row."""
    add(engine, "swap", 6)
    configure(engine, "swap", concurrency_limit=2)
    with engine.begin() as holder:

        def lock() -> None:
            holder.execute(text("SELECT 1 FROM eventix_queue WHERE name = 'swap' FOR UPDATE"))

        assert _write_backs(database_url, "swap", 2, 5, 3, lock) == [1, 1, 1]
    assert claim_now(engine, ["swap"]) == []  # still 2 running: full


def test_a_write_back_never_retakes_more_than_a_lowered_limit(
    engine: Engine, database_url: str
) -> None:
    """With its limit lowered below what runs, a queue shrinks as its tasks end: the
    starts they free are not retaken until it is back within the new limit."""
    add(engine, "lower", 8)
    configure(engine, "lower", concurrency_limit=3)

    def lower() -> None:
        configure(engine, "lower", concurrency_limit=1)

    assert _write_backs(database_url, "lower", 3, 5, 3, lower) == [0, 0, 1]
    with engine.connect() as conn:
        running = conn.execute(text(
            "SELECT count(*) FROM eventix_task WHERE namespace = 'lower' AND status = 'processing'"
        )).scalar()  # fmt: skip
    assert running == 1


def test_a_write_back_whose_result_the_database_refuses_fails_that_task_only(
    engine: Engine, database_url: str
) -> None:
    """A success whose result jsonb cannot hold (a NUL) fails the one statement that
    records and claims; its task is recorded failed, saying why, the other success
    is recorded, and nothing is claimed there: the worker claims as usual, and the
    connection it used goes on working."""
    import asyncio

    from eventix_operator.db.engine import make_async_engine
    from eventix_operator.db.leases import LeaseStore, Success
    from eventix_operator.settings import Settings

    add(engine, "nul", 4)
    configure(engine, "nul", concurrency_limit=2)

    async def run() -> tuple[tuple[int, int, int | None], int]:
        aengine = make_async_engine(
            Settings.model_validate({"DATABASE_URL": database_url, "db_pool_size": 1}),
            generic_plans=True,
        )
        store = LeaseStore(aengine, "w", 30)
        good, bad = await store.claim(["nul"], 2)
        outcomes = [Success(good.uid, "1"), Success(bad.uid, '"a\\u0000b"')]
        done, failed, jobs = await store.record_and_claim(outcomes, ["nul"], 2)
        again = await store.claim(["nul"], 5)
        await aengine.dispose()
        return (done, failed, None if jobs is None else len(jobs)), len(again)

    assert asyncio.run(run()) == ((1, 1, None), 2)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT status, error->>'type' FROM eventix_task WHERE namespace = 'nul' "
            "AND status IN ('done', 'error') ORDER BY status"
        )).all()  # fmt: skip
    assert [tuple(r) for r in rows] == [("done", None), ("error", "ResultNotStorable")]


def test_a_write_back_that_claims_records_failures_and_cancels_too(engine: Engine) -> None:
    """Every kind of outcome goes through record_and_claim: a failure to retry, a
    final one and a cancel end their tasks, and the starts they free are claimed."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db.leases import Cancelled, Failure, LeaseStore, Success

    add(engine, "mixed", 8)
    configure(engine, "mixed", concurrency_limit=4)
    url = engine.url.render_as_string(hide_password=False)

    async def run() -> tuple[int, int, int | None]:
        aengine = create_async_engine(url)
        store = LeaseStore(aengine, "w", 30)
        a, b, c, d = await store.claim(["mixed"], 4)
        outcomes = [
            Success(a.uid, "1"),
            Failure(b.uid, {"type": "E", "message": "again"}, 60.0),
            Failure(c.uid, {"type": "E", "message": "final"}, None),
            Cancelled(d.uid),
        ]
        done, failed, jobs = await store.record_and_claim(outcomes, ["mixed"], 4)
        await aengine.dispose()
        return done, failed, None if jobs is None else len(jobs)

    assert asyncio.run(run()) == (1, 3, 4)
    with engine.connect() as conn:
        statuses = dict(conn.execute(text(
            "SELECT status, count(*) FROM eventix_task WHERE namespace = 'mixed' GROUP BY 1"
        )).all())  # fmt: skip
    assert statuses == {"done": 1, "retry": 1, "error": 1, "cancelled": 1, "processing": 4}


def test_a_cancelled_task_ending_in_a_limited_queue_wakes_its_workers(
    engine: Engine, database_url: str
) -> None:
    """A running task of a limited queue that its worker records cancelled, or that
    lease recovery ends cancelled, frees its slot: the queue's workers hear it on
    the ready channel, as they do a success or a failure."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db import admin
    from eventix_operator.db.leases import Cancelled, LeaseStore, recover_expired_leases

    add(engine, "c", 3)
    configure(engine, "c", concurrency_limit=1)
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")

    async def claim_and_cancel(store: LeaseStore) -> str:
        (job,) = await store.claim(["c"], 5)
        with engine.begin() as conn:
            admin.cancel_task(conn, job.uid, by="cli")
        return job.uid

    with psycopg.connect(dsn, autocommit=True) as listener:

        async def run() -> list[list[str]]:
            aengine = create_async_engine(database_url)
            store = LeaseStore(aengine, "w", 30)
            heard = []
            uid = await claim_and_cancel(store)
            listener.execute(f"LISTEN {statements.READY_CHANNEL}")
            await store.record([Cancelled(uid)])
            heard.append([n.payload for n in listener.notifies(timeout=5, stop_after=1)])
            # The worker dies instead: its lease expires, and recovery ends the task.
            uid = await claim_and_cancel(store)
            with engine.begin() as conn:
                conn.execute(
                    text("UPDATE eventix_task SET worker_expires = now() - interval '1 second' "
                         "WHERE uid = CAST(:uid AS uuid)"), {"uid": uid},
                )  # fmt: skip
            assert await recover_expired_leases(aengine) == [(uid, "cancelled")]
            heard.append([n.payload for n in listener.notifies(timeout=5, stop_after=1)])
            await aengine.dispose()
            return heard

        assert asyncio.run(run()) == [["c"], ["c"]]
    with engine.connect() as conn:
        statuses = conn.execute(
            text("SELECT status, count(*) FROM eventix_task GROUP BY status ORDER BY status")
        ).all()  # fmt: skip
    assert [tuple(r) for r in statuses] == [("cancelled", 2), ("scheduled", 1)]


def test_a_cancel_in_a_write_back_that_claims_again_keeps_the_failed_retention(
    engine: Engine, database_url: str
) -> None:
    """LeaseStore.record_and_claim with a cancelled task (a worker held back by a
    limit): the task is kept as the queue's failed retention says, and the start it
    frees is claimed in the same transaction."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db import admin
    from eventix_operator.db.leases import Cancelled, LeaseStore

    add(engine, "c", 2)
    configure(engine, "c", concurrency_limit=1, retain_failed_seconds=20)

    async def run() -> tuple[int, int, int | None]:
        aengine = create_async_engine(database_url)
        store = LeaseStore(aengine, "w", 30)
        (job,) = await store.claim(["c"], 5)
        with engine.begin() as conn:
            admin.cancel_task(conn, job.uid, by="cli")
        done, failed, jobs = await store.record_and_claim([Cancelled(job.uid)], ["c"], 5)
        await aengine.dispose()
        return done, failed, None if jobs is None else len(jobs)

    assert asyncio.run(run()) == (0, 1, 1)
    with engine.connect() as conn:
        kept = conn.execute(
            text("SELECT status, extract(epoch FROM expires - finished_at) FROM eventix_task "
                 "WHERE namespace = 'c' AND status = 'cancelled'")
        ).all()  # fmt: skip
    assert [(s, int(k)) for s, k in kept] == [("cancelled", 20)]


def test_a_full_rate_window_says_when_it_lets_a_start_in(engine: Engine) -> None:
    """What a worker held back by a rate limit waits for: the oldest start of the full
    window leaving it (no notification says so). A window with room, or a queue with
    no rate limit, has no such time."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from eventix_operator.db.notify import due_queues_and_rate_window

    add(engine, "r2", 5)
    add(engine, "free2", 1)
    configure(engine, "r2", rate_count=2, rate_per_seconds=10.0)
    url = engine.url.render_as_string(hide_password=False)

    def look(queue_names: list[str]) -> tuple[list[str], float | None]:
        async def run() -> tuple[list[str], float | None]:
            aengine = create_async_engine(url)
            try:
                return await due_queues_and_rate_window(aengine, queue_names)
            finally:
                await aengine.dispose()

        return asyncio.run(run())

    assert len(claim_now(engine, ["r2"], limit=1)) == 1
    assert look(["r2", "free2"]) == (["r2", "free2"], None)  # room for one more start
    assert len(claim_now(engine, ["r2"], limit=5)) == 1
    due, frees_in = look(["r2", "free2"])
    assert due == ["r2", "free2"]
    assert frees_in is not None
    assert 8.0 < frees_in <= 10.0
    assert look(["free2"]) == (["free2"], None)
