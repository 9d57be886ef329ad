"""Alembic environment: migrations run on the connection handed over by
:func:`eventix_operator.db.migrate.upgrade`, or on ``DATABASE_URL``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from eventix_operator.db import trigger_schema  # noqa: F401  (adds the trigger table to metadata)
from eventix_operator.db.engine import make_engine
from eventix_operator.db.schema import metadata
from eventix_operator.settings import get_settings

config = context.config
target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        # Two operator replicas may start at once; the second waits and finds nothing to do.
        context.execute("SELECT pg_advisory_xact_lock(7321001)")
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(get_settings())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
