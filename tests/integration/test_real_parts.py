"""The real parts the production-database tests stand on, proven on their own: Debian's
PgBouncer in transaction mode (tests/support/pgbouncer.py) reproduces what the issue
measured through it, and a primary with a synchronous streaming standby behind a failover
proxy or a multi-host URL (tests/support/replication.py) fails over losing no
acknowledged write. Real processes throughout; nothing is mocked."""

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
from tests.support.replication import ReplicatedDatabase, ReplicatedPair

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
        conns = [psycopg.connect(pooled, prepare_threshold=None) for _ in range(3)]
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
            for conn in conns[1:]:
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


# --------------------------------------------------------------------------------------------
# Streaming replication


def test_the_standby_streams_synchronously_and_serves_reads(
    replicated_database: ReplicatedDatabase,
) -> None:
    with psycopg.connect(libpq(replicated_database.url), autocommit=True) as primary:
        primary.execute("CREATE TABLE seen (x int)")
        primary.execute("INSERT INTO seen VALUES (1), (2)")
        state = primary.execute(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'"
        ).fetchone()
    assert state == ("sync",)
    # Synchronous commit waits for the standby's flush, not its replay: read once replayed.
    replicated_database.pair.wait_replayed()
    with psycopg.connect(libpq(replicated_database.read_url), autocommit=True) as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert standby.execute("SELECT count(*) FROM seen").fetchone() == (2,)
        assert standby.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("INSERT INTO seen VALUES (3)")


def test_the_shared_pair_refuses_to_fail_over(replication: ReplicatedPair) -> None:
    with pytest.raises(RuntimeError, match="failover_pair"):
        replication.kill_primary()


class Writer:
    """Commits one row at a time through ``url`` until it fails, remembering each row whose
    commit was acknowledged."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True, prepare_threshold=None) as conn:
                n = 0
                while True:
                    n += 1
                    conn.execute("INSERT INTO acked (n) VALUES (%s)", (n,))
                    self.acknowledged.append(n)
        except psycopg.Error as err:
            self.error = err

    def start(self, at_least: int) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while len(self.acknowledged) < at_least:
            assert self.thread.is_alive(), self.error
            assert time.monotonic() < deadline, "the writer made too few commits"
            time.sleep(0.01)


@pytest.fixture
def acked_table(failover_pair: ReplicatedPair) -> ReplicatedPair:
    with failover_pair.primary.connect() as conn:
        conn.execute("CREATE TABLE acked (n int PRIMARY KEY)")
    return failover_pair


def present(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {n for (n,) in conn.execute("SELECT n FROM acked").fetchall()}


@pytest.mark.slow
def test_failover_behind_the_proxy_loses_no_acknowledged_commit(
    acked_table: ReplicatedPair,
) -> None:
    pair = acked_table
    writer = Writer(pair.proxy_url(driver="postgresql"))
    writer.start(at_least=50)
    pair.kill_primary()
    writer.thread.join(30)
    assert isinstance(writer.error, psycopg.OperationalError)
    with pytest.raises(psycopg.OperationalError):  # a dead primary behind the proxy
        psycopg.connect(pair.proxy_url(driver="postgresql"), connect_timeout=5)

    pair.promote()
    pair.proxy.switch_to(pair.standby.port)
    url = pair.proxy_url(driver="postgresql")
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port(), pg_is_in_recovery()").fetchone() == (
            pair.standby.port,
            False,
        )
        conn.execute("INSERT INTO acked (n) VALUES (-1)")
    missing = set(writer.acknowledged) - present(url)
    assert not missing, f"{len(missing)} acknowledged commits lost"


@pytest.mark.slow
def test_multi_host_url_reaches_the_promoted_standby(acked_table: ReplicatedPair) -> None:
    pair = acked_table
    url = pair.multi_host_url()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.info.port == pair.primary.port
    writer = Writer(url)
    writer.start(at_least=20)
    pair.kill_primary()
    writer.thread.join(30)
    pair.promote()  # no proxy: libpq finds the server that accepts writes

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.info.port == pair.standby.port
        conn.execute("INSERT INTO acked (n) VALUES (-1)")
    assert not set(writer.acknowledged) - present(url)
    # SQLAlchemy does not parse libpq's host list in the URL's authority; its own form
    # of the same is one host= query parameter per server.
    engine = create_engine(pair.multi_host_sqlalchemy_url())
    try:
        with engine.begin() as sa_conn:
            assert sa_conn.execute(text("SELECT inet_server_port()")).scalar() == pair.standby.port
            sa_conn.execute(text("INSERT INTO acked (n) VALUES (-2)"))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_pgbouncer_in_front_of_the_proxy_follows_a_failover(failover_pair: ReplicatedPair) -> None:
    pair = failover_pair
    with running_pgbouncer("127.0.0.1", pair.proxy.port) as pb:
        url = pb.url_for("postgres", driver="postgresql")
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            assert conn.execute("SELECT inet_server_port()").fetchone() == (pair.primary.port,)
        pair.failover()
        # The pooler's server connections to the dead primary are gone; it logs in anew
        # (server_login_retry = 1 s) through the switched proxy.
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                    port = conn.execute("SELECT inet_server_port()").fetchone()
                    break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, pb.log_tail()
                time.sleep(0.2)
        assert port == (pair.standby.port,)


def test_each_url_of_a_replicated_database_reaches_its_server(
    replicated_database: ReplicatedDatabase,
) -> None:
    pair = replicated_database.pair
    expected = {
        replicated_database.url: pair.primary.port,
        replicated_database.proxy_url: pair.primary.port,
        replicated_database.multi_host_sqlalchemy_url: pair.primary.port,
        replicated_database.read_url: pair.standby.port,
    }
    for url, port in expected.items():
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT inet_server_port(), current_database()")).one()
        finally:
            engine.dispose()
        assert tuple(row) == (port, replicated_database.name), url
    with psycopg.connect(replicated_database.multi_host_url) as conn:
        assert conn.info.port == pair.primary.port
