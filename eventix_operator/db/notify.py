"""Listening for tasks that became ready: the NOTIFY that wakes workers and pools."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg

from eventix_operator.db.statements import READY_CHANNEL
from eventix_operator.logs import get_logger

log = get_logger("eventix.notify")


async def listen_ready(
    database_url: str,
    *,
    on_listening: Callable[[], None],
    on_ready: Callable[[str], None],
    reconnect_after: float = 1.0,
) -> None:
    """Call ``on_ready(queue)`` for each notification until cancelled.

    ``on_listening`` runs after every (re)connection: what was enqueued while
    nobody listened sent its notification to no one, so callers look once then.
    Connection losses are waited out; polling covers the gap meanwhile.
    """
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {READY_CHANNEL}")
                on_listening()
                async for note in conn.notifies():
                    on_ready(note.payload)
        except (psycopg.Error, OSError) as exc:
            log.info("listen connection lost, reconnecting", error=str(exc).splitlines()[0])
            await asyncio.sleep(reconnect_after)
