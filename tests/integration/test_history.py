"""History at scale: expired rows go in bounded batches that lock nothing a claim
waits for, and the task table has autovacuum settings fit for a queue. (Rates with
ten million finished rows: `python bench/production.py history`, figures in
bench/README.md.)"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventix_operator import enqueue_many
from eventix_operator.db import statements
from eventix_operator.db.leases import LeaseStore, Success, purge_expired

#: Finished rows whose result expired an hour ago, made by SQL as the bench makes them.
EXPIRED_ROWS = """
INSERT INTO eventix_task (task, namespace, status, finished_at, expires, result)
SELECT 'old', 'history', 'done', now() - interval '2 hours', now() - interval '1 hour', 'null'
FROM generate_series(1, :n)
"""


@pytest.fixture
def aengine(database_url: str) -> Iterator[AsyncEngine]:
    eng = create_async_engine(database_url)
    yield eng
    asyncio.run(eng.dispose())


def count(engine: Engine, where: str = "true") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM eventix_task WHERE {where}")).scalar())


def test_purge_goes_batch_after_batch_within_its_time(engine: Engine, aengine: AsyncEngine) -> None:
    with engine.begin() as conn:
        conn.execute(text(EXPIRED_ROWS), {"n": 2500})
        enqueue_many([{"task": "kept", "result_ttl_seconds": None}], connection=conn)
    # No time left after the first batch: one batch, the rest for the next call.
    assert asyncio.run(purge_expired(aengine, limit=1000, max_seconds=0)) == 1000
    assert asyncio.run(purge_expired(aengine, limit=1000)) == 1500  # two more, the last short
    assert count(engine) == 1


def test_a_purge_in_progress_holds_up_no_claim(engine: Engine, aengine: AsyncEngine) -> None:
    """A purge batch whose transaction is still open locks only finished rows: a
    claim, a heartbeat and a recorded result go through, under a lock timeout that
    would fail them if they had to wait."""
    with engine.begin() as conn:
        conn.execute(text(EXPIRED_ROWS), {"n": 500})
        enqueue_many([{"task": "t", "queue": "history"} for _ in range(5)], connection=conn)
        database = conn.execute(text("SELECT current_database()")).scalar()
        conn.execute(text(f"ALTER DATABASE {database} SET lock_timeout = '3s'"))
    purging, release = threading.Event(), threading.Event()

    def purge_and_hold() -> None:
        with engine.begin() as conn:
            conn.execute(statements.PURGE_EXPIRED, {"limit": 1000})
            purging.set()
            release.wait(30)

    holder = threading.Thread(target=purge_and_hold)
    holder.start()
    try:
        assert purging.wait(30)

        async def claim_heartbeat_record() -> tuple[str, int, tuple[int, int]]:
            store = LeaseStore(aengine, "w1", 30)
            async with aengine.connect() as conn:  # a new session: the database's setting
                timeout = (await conn.execute(text("SHOW lock_timeout"))).scalar_one()
            claimed = await store.claim(["history"], 10)
            renewed = await store.heartbeat()
            recorded = await store.record([Success(c.uid, "null") for c in claimed])
            return timeout, renewed, recorded

        assert asyncio.run(claim_heartbeat_record()) == ("3s", 5, (5, 0))
    finally:
        release.set()
        holder.join(30)
    assert count(engine, "task = 'old'") == 0


def test_the_task_table_has_queue_autovacuum_settings(engine: Engine) -> None:
    with engine.connect() as conn:
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'eventix_task'")
        ).scalar()
    settings = dict(option.split("=", 1) for option in options)
    assert settings["autovacuum_vacuum_scale_factor"] == "0.01"
    assert settings["autovacuum_vacuum_insert_scale_factor"] == "0.01"
    assert settings["autovacuum_analyze_scale_factor"] == "0.02"
    assert settings["autovacuum_vacuum_cost_delay"] == "0"
