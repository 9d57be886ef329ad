"""Start a worker process: settings in, signals wired, engine disposed at the end."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

from eventix_operator.db.engine import make_async_engine
from eventix_operator.db.notify import Listener
from eventix_operator.metrics import serve
from eventix_operator.registry import Registry
from eventix_operator.settings import Settings
from eventix_operator.worker.worker import Worker, WorkerConfig


def worker_config(
    settings: Settings,
    *,
    queues: Sequence[str],
    concurrency: int | None = None,
    burst: bool = False,
    announce_tasks: bool = False,
) -> WorkerConfig:
    return WorkerConfig(
        queues=tuple(queues),
        concurrency=concurrency or settings.worker_concurrency,
        batch_size=settings.worker_batch_size,
        lease_seconds=settings.worker_lease_seconds,
        poll_interval=settings.worker_poll_interval,
        poll_only_interval=settings.poll_only_interval,
        shutdown_grace=settings.worker_shutdown_grace,
        cancel_grace=settings.worker_cancel_grace,
        cancel_poll_interval=settings.worker_cancel_poll_interval,
        purge_interval=settings.worker_purge_interval,
        payload_limit=settings.max_payload_bytes,
        burst=burst,
        progress_interval=settings.worker_progress_interval,
        announce_tasks=announce_tasks,
    )


async def run_worker(
    settings: Settings, registry: Registry, config: WorkerConfig, database_url: str
) -> Worker:
    """Run until SIGTERM/SIGINT (or an empty queue in burst mode).

    ``database_url`` overrides DATABASE_URL (and, unless the settings name a
    listen URL, is listened on too).
    """
    engine = make_async_engine(settings, database_url, generic_plans=True)
    listen_url = settings.listen_url() if settings.listen_database_url else database_url
    listener = Listener(settings, listen_url)
    worker = Worker(engine, registry, config, listener=listener)
    metrics = serve(settings.metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        await listener.stop()
        await engine.dispose()
    return worker
