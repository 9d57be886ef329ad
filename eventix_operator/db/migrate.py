"""Schema upgrades through Alembic, callable from the CLI, the operator and tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer eventix-operator than this one."""


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to ``revision``; returns (before, after). A second run is a no-op.

    A schema at a revision this version does not know was made by a newer one:
    that is :class:`SchemaTooNew` with what to do (the command line's one line),
    not Alembic's traceback."""
    before = current_revision(engine)
    config = alembic_config()
    if before is not None:
        try:
            ScriptDirectory.from_config(config).get_revision(before)
        except CommandError:
            raise SchemaTooNew(
                f"the database's schema is at revision {before}, which this version of "
                f"eventix-operator does not know (its newest is {head_revision()}): a newer "
                "version migrated it. Run that version, or use another database "
                "(`eventix local --data-dir DIR` for the embedded one)"
            ) from None
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    return before, current_revision(engine)
