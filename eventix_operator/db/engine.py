"""Engines built from the settings object; nothing connects at import time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine

from eventix_operator.settings import Settings, normalise_database_url

if TYPE_CHECKING:  # the asyncio extension loads the ORM: only processes that need it pay
    from sqlalchemy.ext.asyncio import AsyncEngine


def _options(settings: Settings) -> dict[str, object]:
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "connect_args": {"connect_timeout": max(1, int(settings.db_connect_timeout))},
    }


def make_engine(settings: Settings, url: str | None = None) -> Engine:
    return create_engine(
        normalise_database_url(url or settings.require_database_url()), **_options(settings)
    )


def make_async_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(
        normalise_database_url(url or settings.require_database_url()), **_options(settings)
    )


def libpq_url(url: str) -> str:
    """The URL without SQLAlchemy's driver suffix, for psycopg and PostgreSQL tools."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg_async://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url
