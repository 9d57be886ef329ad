"""Oban's side of the peer comparison: the Python port of Oban (PyPI ``oban``).

A no-op worker, Oban's schema (``oban.schema.install``, what ``oban install`` runs) and
jobs inserted with ``Oban.enqueue_many``. The worker process runs Oban as ``oban start
--queues default:10`` would (its default pool, uvloop, orjson for JSON), but stops once
N job completions have been stored: ``oban start`` has no drain mode, it runs until a
signal. Start it with::

    BENCH_PEER_DSN=postgresql://... python -m bench.peer_oban -n 10000 --limit 10

Oban's Python port needs Python 3.12 or newer: on an older Python it is not installed
(the ``bench`` extra pins it for 3.12+ only) and the bench skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

import orjson
import uvloop
from oban import Job, Oban, telemetry, worker
from oban._config import Config
from oban.schema import install
from psycopg.types.json import set_json_dumps, set_json_loads

DSN_VARIABLE = "BENCH_PEER_DSN"
QUEUE = "default"
#: The worker's name in oban_jobs.worker: the class below, by module and name.
WORKER = "bench.peer_oban.Noop"
#: Jobs per enqueue_many call.
ENQUEUE_CHUNK = 5_000


@worker(queue=QUEUE)
class Noop:
    """Does nothing and succeeds."""

    async def process(self, job: Job) -> None:
        return None


async def install_and_enqueue(dsn: str, count: int) -> None:
    """Install Oban's schema into ``dsn`` and insert ``count`` no-op jobs."""
    pool = await Config(dsn=dsn).create_pool()
    try:
        await install(pool)
        async with Oban(pool=pool) as oban:  # client mode: no queues, inserts only
            for start in range(0, count, ENQUEUE_CHUNK):
                size = min(ENQUEUE_CHUNK, count - start)
                await oban.enqueue_many(Job(worker=WORKER, queue=QUEUE) for _ in range(size))
    finally:
        await pool.close()


async def drain(dsn: str, count: int, limit: int) -> None:
    """Run one Oban queue until ``count`` job completions are stored, then stop it."""
    stored = 0
    done = asyncio.Event()

    def on_ack(_name: str, metadata: dict[str, Any]) -> None:
        nonlocal stored
        stored += int(metadata.get("count", 0))
        if stored >= count:
            done.set()

    telemetry.attach("bench-drain", ["oban.producer.ack.stop"], on_ack)
    config = Config(dsn=dsn, queues={QUEUE: limit})
    pool = await config.create_pool()
    try:
        async with await config.create_oban(pool):
            await done.wait()
    finally:
        telemetry.detach("bench-drain")
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Work N Oban jobs, then exit.")
    parser.add_argument("-n", type=int, required=True, help="jobs to wait for")
    parser.add_argument("--limit", type=int, default=10, help="the queue's limit")
    options = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    set_json_dumps(orjson.dumps)  # as `oban start` does
    set_json_loads(orjson.loads)
    uvloop.run(drain(os.environ[DSN_VARIABLE], options.n, options.limit))


if __name__ == "__main__":
    from bench import peer_oban  # the jobs name bench.peer_oban.Noop, not __main__.Noop

    peer_oban.main()
