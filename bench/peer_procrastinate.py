"""Procrastinate's side of the peer comparison: a no-op task, its schema, its jobs.

The worker runs the way Procrastinate documents it, from its own CLI::

    procrastinate --app bench.peer_procrastinate.app worker --concurrency 10 --one-shot

with ``BENCH_PEER_DSN`` naming the database (``--one-shot`` exits once no job is left).
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

DSN_VARIABLE = "BENCH_PEER_DSN"
#: Jobs per batch_defer call.
DEFER_CHUNK = 10_000

app = App(connector=PsycopgConnector(conninfo=os.environ.get(DSN_VARIABLE, "")))


@app.task(name="bench_noop")
async def noop() -> None:
    return None


async def install_and_enqueue(dsn: str, count: int) -> None:
    """Apply Procrastinate's schema to ``dsn`` and defer ``count`` no-op jobs there."""
    with app.replace_connector(PsycopgConnector(conninfo=dsn)):
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            for start in range(0, count, DEFER_CHUNK):
                size = min(DEFER_CHUNK, count - start)
                await noop.batch_defer_async(*({} for _ in range(size)))
