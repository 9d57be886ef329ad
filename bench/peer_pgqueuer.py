"""PgQueuer's side of the peer comparison: a no-op entrypoint, its schema, its jobs.

The worker runs as ``pgq run bench.peer_pgqueuer:create_pgqueuer --mode drain
--batch-size B`` would run it: ``pgqueuer.run`` (PgQueuer's documented programmatic
form of ``pgq run``) on uvloop, as its CLI does. The CLI itself cannot be used here:
pgqueuer 1.6.0's ``pgq run`` fails with typer 0.29 (``'str' object has no attribute
'name'`` in its log-level option). Start it with::

    BENCH_PEER_DSN=postgresql://... python -m bench.peer_pgqueuer --batch-size 10

It uses asyncpg, PgQueuer's primary driver, when that is installed, and psycopg
otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pgqueuer
import psycopg
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, PsycopgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench_noop"
DSN_VARIABLE = "BENCH_PEER_DSN"
FACTORY = "bench.peer_pgqueuer:create_pgqueuer"
#: Jobs per enqueue call: PgQueuer's enqueue takes parallel lists, one statement each.
ENQUEUE_CHUNK = 10_000

try:
    import asyncpg  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - asyncpg is optional for pgqueuer
    asyncpg = None


def driver_name() -> str:
    return "asyncpg" if asyncpg is not None else "psycopg"


@asynccontextmanager
async def create_pgqueuer() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` takes (pgqueuer 1.6 wants an async context manager):
    one connection, one no-op entrypoint."""
    dsn = os.environ[DSN_VARIABLE]
    driver: AsyncpgDriver | PsycopgDriver
    if asyncpg is not None:
        connection = await asyncpg.connect(dsn)
        driver = AsyncpgDriver(connection)
    else:
        connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        driver = PsycopgDriver(connection)
    pgq = PgQueuer(driver)

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        return None

    try:
        yield pgq
    finally:
        await connection.close()


async def install_and_enqueue(dsn: str, count: int) -> float:
    """Install PgQueuer's schema into ``dsn`` and enqueue ``count`` no-op jobs;
    returns the seconds the enqueue calls took (its batch enqueue, as a peer figure)."""
    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with connection:
        queries = Queries(PsycopgDriver(connection))
        await queries.install()
        started = time.perf_counter()
        for start in range(0, count, ENQUEUE_CHUNK):
            size = min(ENQUEUE_CHUNK, count - start)
            await queries.enqueue([ENTRYPOINT] * size, [None] * size, [0] * size)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="Drain the PgQueuer queue, then exit.")
    parser.add_argument("--batch-size", type=int, default=10)
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    uvloop.run(
        pgqueuer.run(
            FACTORY,  # by path, as `pgq run` loads it
            batch_size=options.batch_size,
            mode=QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=30),
        )
    )


if __name__ == "__main__":
    main()
