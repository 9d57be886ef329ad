"""Every connection eventix opens works through PgBouncer in transaction mode: no
server-side prepared statement where a pooler sits (detected per connection), no
session state, LISTEN only where it can hear, and a cap on each process's pool.
Real PgBouncer (Debian's 1.18) in front of the session's PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from eventix_operator.api.hotpath import make_autocommit_engine
from eventix_operator.client import enqueue_many
from eventix_operator.db.engine import connect, connect_async, make_async_engine, make_engine
from eventix_operator.db.notify import READY_CHANNEL, Listener, due_queues
from eventix_operator.settings import Settings
from tests.support.pgbouncer import PgBouncer

#: More runs of one statement than psycopg's prepare threshold (5), on each connection.
RUNS = 12


def settings_for(url: str, **values: Any) -> Settings:
    return Settings.model_validate({"DATABASE_URL": url, **values})


def threshold(engine: Engine) -> int | None:
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        return driver.prepare_threshold  # type: ignore[no-any-return]


@pytest.fixture
def pooled_engine(pooled_database_url: str) -> Iterator[Engine]:
    engine = make_engine(settings_for(pooled_database_url))
    yield engine
    engine.dispose()


def test_auto_mode_prepares_nothing_through_the_pooler_and_keeps_it_direct(
    pgbouncer: PgBouncer, pooled_database_url: str, database_url: str
) -> None:
    mark = pgbouncer.log_mark()
    pooled = make_engine(settings_for(pooled_database_url, db_pool_size=3))
    direct = make_engine(settings_for(database_url))
    try:
        assert threshold(pooled) is None
        assert threshold(direct) == 5  # psycopg's default: a direct connection prepares
        # Several clients taking turns on fewer server connections: without the switch
        # this is where "prepared statement _pg3_0 already exists" comes from.
        for i in range(RUNS):
            with pooled.begin() as conn:
                assert conn.execute(text("SELECT :i + 1"), {"i": i}).scalar() == i + 1
    finally:
        pooled.dispose()
        direct.dispose()
    assert pgbouncer.pooler_errors(mark) == []


def test_async_and_autocommit_engines_and_raw_connections_through_the_pooler(
    pgbouncer: PgBouncer, pooled_database_url: str
) -> None:
    mark = pgbouncer.log_mark()
    settings = settings_for(pooled_database_url, db_pool_size=2)

    async def run() -> None:
        for engine in (make_async_engine(settings), make_autocommit_engine(settings)):
            try:
                conns = [await engine.connect() for _ in range(2)]
                for i in range(RUNS):
                    for conn in conns:
                        result = await conn.execute(text("SELECT :i * 2"), {"i": i})
                        assert result.scalar() == i * 2
                        await conn.commit()
                for conn in conns:
                    driver: Any = conn.sync_connection.connection.driver_connection  # type: ignore[union-attr]
                    assert driver.prepare_threshold is None
                    await conn.close()
            finally:
                await engine.dispose()
        raw = await connect_async(settings, autocommit=True)
        async with raw:
            assert raw.prepare_threshold is None
            for i in range(RUNS):
                cursor = await raw.execute("SELECT %s::int", (i,))
                assert await cursor.fetchone() == (i,)

    asyncio.run(run())
    with connect(settings) as conn:  # not in autocommit: the probe's transaction is ended
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.prepare_threshold is None
        for i in range(RUNS):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            conn.commit()
    assert pgbouncer.pooler_errors(mark) == []


def test_prepared_statements_can_be_switched_off_and_on(
    database_url: str, pooled_database_url: str
) -> None:
    off = make_engine(settings_for(database_url, db_prepared_statements=False))
    on = make_engine(settings_for(pooled_database_url, db_prepared_statements=True))
    try:
        assert threshold(off) is None  # never, not even directly
        assert threshold(on) == 5  # as told: for a pooler that tracks them (PgBouncer 1.21+)
    finally:
        off.dispose()
        on.dispose()


def test_the_connection_cap_holds(pooled_database_url: str) -> None:
    engine = make_engine(
        settings_for(
            pooled_database_url, db_pool_size=10, db_max_connections=2, db_connect_timeout=1
        )
    )
    try:
        first, second = engine.connect(), engine.connect()
        with pytest.raises(PoolTimeout):
            engine.connect()
        first.close()
        second.close()
    finally:
        engine.dispose()


def test_multi_host_database_url_reaches_the_server(
    database_url: str, pooled_database_url: str
) -> None:
    """A libpq host list in DATABASE_URL (here the pooler first, then the server)."""
    from sqlalchemy.engine import make_url

    server, pooler = make_url(database_url), make_url(pooled_database_url)
    url = (
        f"postgresql://{server.username}@{pooler.host}:{pooler.port},{server.host}:{server.port}"
        f"/{server.database}?target_session_attrs=read-write"
    )
    engine = make_engine(settings_for(url))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == server.database
    finally:
        engine.dispose()
    with connect(settings_for(url), autocommit=True) as conn:
        assert conn.info.port == pooler.port


def test_listen_through_the_pooler_gives_up_and_the_cheap_look_finds_due_tasks(
    db_env: str, pgbouncer: PgBouncer, pooled_database_url: str
) -> None:
    settings = settings_for(pooled_database_url)

    async def run() -> tuple[bool, list[str], list[str]]:
        listener = Listener(settings)
        heard: list[str] = []
        looked = asyncio.Event()
        listener.subscribe(READY_CHANNEL, heard.append, looked.set)
        await asyncio.wait_for(looked.wait(), 30)  # told once, when it gave up
        await listener.stop()
        engine = make_async_engine(settings)
        try:
            before = await due_queues(engine, ["mail", "other"])
            enqueue_many([{"task": "t", "queue": "mail"}, {"task": "t", "queue": "x"}])
            after = await due_queues(engine, ["mail", "other"])
        finally:
            await engine.dispose()
        return listener.poll_only, before, after

    poll_only, before, after = asyncio.run(run())
    assert poll_only
    assert (before, after) == ([], ["mail"])


def test_a_direct_listen_url_hears_what_is_enqueued_through_the_pooler(
    db_env: str, pooled_database_url: str
) -> None:
    """EVENTIX_LISTEN_DATABASE_URL bypasses the pooler; the NOTIFY of an enqueue made
    through the pooler reaches it (it is the server's, sent at commit)."""
    settings = settings_for(pooled_database_url, listen_database_url=db_env)
    pooled = make_engine(settings)

    async def run() -> list[str]:
        listener = Listener(settings)
        heard: list[str] = []
        listening = asyncio.Event()
        listener.subscribe(READY_CHANNEL, heard.append, listening.set)
        await asyncio.wait_for(listening.wait(), 30)
        assert listener.listening.is_set()
        assert not listener.poll_only
        from eventix_operator.client import enqueue

        await asyncio.to_thread(enqueue, "t", queue="wake-me", connection=None)
        with pooled.begin() as conn:  # and an enqueue through the pooler
            enqueue_many([{"task": "t", "queue": "pooled"}], connection=conn)
        for _ in range(100):
            if len(heard) >= 2:
                break
            await asyncio.sleep(0.05)
        await listener.stop()
        return heard

    try:
        assert sorted(asyncio.run(run())) == ["pooled", "wake-me"]
    finally:
        pooled.dispose()


def test_a_workers_direct_connections_run_generic_plans_and_pooled_ones_set_nothing(
    pooled_database_url: str, database_url: str
) -> None:
    """A worker's engine puts its direct connections on generic plans (its write-back
    would be planned at every run); through the pooler it sets nothing, which would
    stay on a server connection other clients are given."""

    async def mode(url: str, **values: Any) -> str:
        engine = make_async_engine(settings_for(url, **values), generic_plans=True)
        try:
            async with engine.connect() as conn:
                return str((await conn.execute(text("SHOW plan_cache_mode"))).scalar())
        finally:
            await engine.dispose()

    assert asyncio.run(mode(database_url)) == "force_generic_plan"
    assert asyncio.run(mode(pooled_database_url)) == "auto"
    # Told to prepare through the pooler, it still asks before it sets anything.
    assert asyncio.run(mode(pooled_database_url, db_prepared_statements=True)) == "auto"


def test_a_connection_broken_while_idle_in_the_pool_is_replaced_before_use(
    database_url: str,
) -> None:
    """The pre-ping tests a pooled connection that sat idle (a failover, an idle
    timeout or a restart breaks connections while they wait), and the caller gets a
    working one."""
    import time

    from eventix_operator.db.engine import PING_AFTER_IDLE

    engine = make_engine(settings_for(database_url, db_pool_size=1, db_max_overflow=0))
    direct = database_url.replace("postgresql+psycopg", "postgresql")
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with psycopg.connect(direct, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [first])
        time.sleep(PING_AFTER_IDLE + 0.2)
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second != first
    finally:
        engine.dispose()
