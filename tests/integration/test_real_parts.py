"""The real parts the production-database tests stand on, proven on their own: Debian's
PgBouncer in transaction mode (tests/support/pgbouncer.py) reproduces what the issue
measured through it. Real processes throughout; nothing is mocked."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.pgbouncer import PgBouncer, running_pgbouncer
from tests.support.postgres import PostgresServer

PREPARED_CLASH = re.compile(r'prepared statement "_pg3_\w+" (already exists|does not exist)')


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def database_of(url: str) -> str:
    name = make_url(url).database
    assert name
    return name


# --------------------------------------------------------------------------------------------
# PgBouncer in transaction mode


def test_pgbouncer_is_a_transaction_pooler_in_front_of_the_test_database(
    pgbouncer: PgBouncer, pooled_database_url: str
) -> None:
    assert pgbouncer.version >= (1, 18)
    config = {row["key"]: row["value"] for row in pgbouncer.show("CONFIG")}
    assert config["pool_mode"] == "transaction"
    # The test's fresh copy of the migrated template, reached through the wildcard entry.
    with psycopg.connect(libpq(pooled_database_url), autocommit=True) as conn:
        row = conn.execute("SELECT current_database(), count(*) FROM alembic_version").fetchone()
    assert row == (database_of(pooled_database_url), 1)
    assert pgbouncer.server_connections(database_of(pooled_database_url)) >= 1


def test_without_prepared_statements_nothing_fails_through_pgbouncer(
    pgbouncer: PgBouncer, pooled_database_url: str
) -> None:
    mark = pgbouncer.log_mark()
    url = libpq(pooled_database_url)
    conns = [psycopg.connect(url, autocommit=True, prepare_threshold=None) for _ in range(4)]
    try:
        for i in range(20):
            for conn in conns:
                assert conn.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)
    finally:
        for conn in conns:
            conn.close()

    # SQLAlchemy passes the same to psycopg through connect_args, sync and async alike.
    engine = create_engine(pooled_database_url, connect_args={"prepare_threshold": None})
    try:
        for i in range(20):
            with engine.begin() as sa_conn:
                assert sa_conn.execute(text("SELECT :i + 1"), {"i": i}).scalar() == i + 1
    finally:
        engine.dispose()

    async def run_async() -> None:
        aengine = create_async_engine(pooled_database_url, connect_args={"prepare_threshold": None})
        try:
            for i in range(20):
                async with aengine.begin() as aconn:
                    result = await aconn.execute(text("SELECT :i + 1"), {"i": i})
                    assert result.scalar() == i + 1
        finally:
            await aengine.dispose()

    asyncio.run(run_async())
    assert pgbouncer.pooler_errors(mark) == []


def test_psycopg_default_prepared_statements_clash_through_pgbouncer(
    pgbouncer: PgBouncer, pooled_database_url: str
) -> None:
    """psycopg prepares a statement on its sixth execution, on the server connection that
    runs it; through a transaction pooler that connection serves other clients, whose own
    ``_pg3_0`` then already exists, or the next transaction lands where it does not."""
    conns = [psycopg.connect(libpq(pooled_database_url), autocommit=True) for _ in range(4)]
    errors: list[str] = []
    try:
        for i in range(20):
            for conn in conns:
                try:
                    conn.execute("SELECT %s::int + 1", (i,)).fetchone()
                except psycopg.errors.DatabaseError as err:
                    errors.append(str(err))
        # Four clients, fewer server connections: that is what pooling is for.
        assert pgbouncer.server_connections(database_of(pooled_database_url)) < len(conns)
    finally:
        for conn in conns:
            conn.close()
    assert errors, "psycopg's prepared statements went through a transaction pooler unharmed"
    assert all(PREPARED_CLASH.search(error) for error in errors), errors


def test_session_state_outlives_the_transaction_through_pgbouncer(
    pooled_database_url: str,
) -> None:
    """What a session-level advisory lock or a SET does through a transaction pooler: it
    stays on a server connection that the next client is given."""
    url = libpq(pooled_database_url)
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as leader,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as other,
    ):
        assert leader.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)
        # The lock is the server session's, and this client is given that session too:
        # locks are re-entrant within a session, so both "hold" it.
        assert other.execute("SELECT pg_try_advisory_lock(4242)").fetchone() == (True,)
        leader.execute("SET statement_timeout = '4321ms'")
        assert other.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
        other.execute("RESET statement_timeout")
        other.execute("SELECT pg_advisory_unlock_all()")


def test_listen_through_pgbouncer_hears_nothing(pooled_database_url: str) -> None:
    url = libpq(pooled_database_url)
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as listener,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as notifier,
    ):
        listener.execute("LISTEN eventix_test")
        notifier.execute("NOTIFY eventix_test, 'wake up'")
        heard = list(listener.notifies(timeout=1.0, stop_after=1))
    assert heard == []


def test_options_startup_parameter_is_accepted_and_dropped(pooled_database_url: str) -> None:
    """As CloudNativePG configures its Pooler: ``options`` is ignored, not refused, so a
    setting sent in it silently does not apply."""
    with psycopg.connect(
        libpq(pooled_database_url), autocommit=True, options="-c statement_timeout=1234"
    ) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)


def test_pool_size_caps_server_connections_and_pooler_errors_are_reported(
    pg_server: PostgresServer, database_url: str
) -> None:
    url = make_url(pg_server.admin_url)
    database = database_of(database_url)
    with running_pgbouncer(url.host or "127.0.0.1", url.port or 5432, default_pool_size="2") as pb:
        pooled = libpq(pb.pooled(database_url))
        conns = [psycopg.connect(pooled, prepare_threshold=None) for _ in range(4)]
        try:
            for conn in conns[:2]:  # two transactions left open hold both server connections
                conn.execute("SELECT 1")
            waiting = threading.Thread(target=lambda: conns[2].execute("SELECT 1"), daemon=True)
            waiting.start()
            deadline = time.monotonic() + 30
            while not any(pool["cl_waiting"] for pool in pb.pools(database)):
                assert time.monotonic() < deadline, pb.pools(database)
                time.sleep(0.05)
            assert pb.server_connections(database) == 2
            conns[0].commit()  # frees a server connection for the waiting client
            waiting.join(30)
            assert not waiting.is_alive()
            for conn in conns[1:3]:
                conn.commit()
        finally:
            for conn in conns:
                conn.close()
        assert pb.pooler_errors() == []

        mark = pb.log_mark()
        with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
            psycopg.connect(pooled, replication="database")
        errors = pb.pooler_errors(mark)
        assert errors
        assert all("unsupported startup parameter" in line for line in errors)
        pb.release(database)
