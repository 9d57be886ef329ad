"""The schema the migrations build is the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text

from eventix_operator.db.migrate import current_revision, head_revision, upgrade
from eventix_operator.db.schema import metadata
from tests.support.postgres import PostgresServer


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_from_empty_then_again_is_a_no_op(pg_server: PostgresServer) -> None:
    with pg_server.admin() as admin:
        admin.execute("DROP DATABASE IF EXISTS empty_db")
        admin.execute("CREATE DATABASE empty_db")
    engine = create_engine(pg_server.url_for("empty_db"))
    try:
        assert upgrade(engine) == (None, head_revision())
        assert upgrade(engine) == (head_revision(), head_revision())
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            triggers = conn.execute(
                text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'eventix_task'::regclass")
            ).scalars()
            assert list(triggers) == ["eventix_task_notify_ready"]
    finally:
        engine.dispose()
        with pg_server.admin() as admin:
            admin.execute("DROP DATABASE empty_db WITH (FORCE)")
