"""The one classifier of database errors, fed the exceptions a real server and a
real driver raise: an outage is worth waiting out, a refused value never is."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from eventix_operator.db.errors import database_unavailable, first_line
from eventix_operator.embedded import free_port
from tests.support.postgres import PostgresServer


def raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


@pytest.fixture
def unreachable_url() -> str:
    return f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none?connect_timeout=2"


def run(engine: Engine, *statements: str, **params: object) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


# -- unavailable: the same work may succeed later ------------------------------------


def test_refused_connections(unreachable_url: str) -> None:
    engine = create_engine(unreachable_url)
    wrapped = raised(lambda: engine.connect())
    bare = raised(lambda: psycopg.connect(libpq(unreachable_url)))
    assert database_unavailable(wrapped)
    assert database_unavailable(bare)
    assert "127.0.0.1" in first_line(wrapped)
    engine.dispose()


def test_a_terminated_backend(engine: Engine, pg_server: PostgresServer) -> None:
    def terminated() -> None:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with pg_server.admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.execute(text("SELECT 1"))

    exc = raised(terminated)
    assert database_unavailable(exc)
    assert "terminating connection" in first_line(exc)


def test_a_closed_connection(database_url: str) -> None:
    conn = psycopg.connect(libpq(database_url))
    conn.close()
    assert database_unavailable(raised(lambda: conn.execute("SELECT 1")))


def test_a_pool_with_no_connection_to_give(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    held = engine.connect()
    try:
        assert database_unavailable(raised(lambda: engine.connect()))
    finally:
        held.close()
        engine.dispose()


def test_a_read_only_standby(engine: Engine) -> None:
    # What a client sees when the address it writes to now points at a standby.
    exc = raised(
        lambda: run(engine, "SET TRANSACTION READ ONLY", "DELETE FROM eventix_task WHERE false")
    )
    assert database_unavailable(exc)


def test_a_statement_timeout(engine: Engine) -> None:
    exc = raised(lambda: run(engine, "SET LOCAL statement_timeout = 10", "SELECT pg_sleep(2)"))
    assert database_unavailable(exc)


@pytest.fixture
def role_without_connections(pg_server: PostgresServer, database_url: str) -> Iterator[str]:
    name = f"r_{uuid.uuid4().hex[:10]}"
    with pg_server.admin() as admin:
        admin.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0")
    yield make_url(libpq(database_url)).set(username=name).render_as_string(False)
    with pg_server.admin() as admin:
        admin.execute(f"DROP ROLE {name}")


def test_too_many_connections(role_without_connections: str) -> None:
    exc = raised(lambda: psycopg.connect(role_without_connections))
    assert "too many connections" in first_line(exc)
    assert database_unavailable(exc)


def test_socket_errors() -> None:
    assert database_unavailable(ConnectionResetError("reset by peer"))
    assert database_unavailable(TimeoutError())


# -- about the data or the statement: never worth waiting for -------------------------


@pytest.mark.parametrize(
    ("statement", "value"),
    [
        ("SELECT CAST(:v AS jsonb)", '"a\\u0000b"'),  # NUL: jsonb cannot hold it
        ("SELECT CAST(:v AS jsonb)", '"\\ud800"'),  # a lone surrogate
        ("SELECT CAST(:v AS jsonb)", "[NaN]"),  # not JSON
        ("SELECT CAST(:v AS text)", "a\x00b"),  # refused by psycopg before it is sent
        ("SELECT 1 / CAST(:v AS int)", "0"),
        ("SELEC :v", "1"),
    ],
)
def test_values_and_statements_the_database_refuses(
    engine: Engine, statement: str, value: str
) -> None:
    assert not database_unavailable(raised(lambda: run(engine, statement, v=value)))


def test_a_unique_violation(engine: Engine) -> None:
    uid = str(uuid.uuid4())
    insert = "INSERT INTO eventix_task (uid, task) VALUES (:v, 't')"
    run(engine, insert, v=uid)
    assert not database_unavailable(raised(lambda: run(engine, insert, v=uid)))


def test_text_python_cannot_encode(engine: Engine) -> None:
    assert not database_unavailable(raised(lambda: run(engine, "SELECT :v", v="\ud800")))
