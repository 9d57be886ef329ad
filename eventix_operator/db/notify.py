"""Wake-ups: the NOTIFY that tells workers and pool scalers that tasks became
ready, and the cheap look for due tasks that stands in for it where LISTEN
cannot work.

A process holds at most one listening connection (:class:`Listener`), shared by
all its loops, on ``EVENTIX_LISTEN_DATABASE_URL`` (a direct URL that bypasses
the pooler, such as CloudNativePG's ``-rw`` Service) or else on DATABASE_URL.
Through a transaction pooler LISTEN hears nothing (the LISTEN registers on a
server connection that the pooler then lends to other clients), so a listener
whose connection turns out to go through one says so once and gives up: the
process polls with :func:`due_queues`, a one-round-trip read of the partial
ready index, every ``EVENTIX_POLL_ONLY_INTERVAL`` (jittered).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from eventix_operator.db import statements
from eventix_operator.db.engine import behind_pooler, connect_async
from eventix_operator.logs import get_logger
from eventix_operator.settings import Settings, mask_url

if TYPE_CHECKING:  # the asyncio extension loads the ORM: only processes that need it pay
    from sqlalchemy.ext.asyncio import AsyncEngine

log = get_logger("eventix.notify")

#: Channel that carries the queue name of newly ready tasks.
READY_CHANNEL = statements.READY_CHANNEL
#: Channel that carries the uid of a running task to stop (cancelled, or deleted).
CANCEL_CHANNEL = statements.CANCEL_CHANNEL

#: How often the listener looks for channels subscribed since it connected.
SUBSCRIBE_CHECK = 0.5


@dataclass(frozen=True, eq=False)
class Subscription:
    channel: str
    on_notify: Callable[[str], None]
    on_listening: Callable[[], None]


class Listener:
    """One LISTEN connection for the whole process.

    Loops :meth:`subscribe` to a channel with ``on_notify(payload)`` and
    ``on_listening()``; the latter runs after every (re)connection, since what was
    notified while nobody listened reached no one, so callers look once then.
    :attr:`listening` is set while notifications can arrive; :attr:`poll_only`
    once it is known that they never will (the URL goes through a pooler).
    """

    def __init__(self, settings: Settings, url: str | None = None) -> None:
        self.settings = settings
        self.url = url or settings.listen_url()
        self.subscriptions: list[Subscription] = []
        self.listening = asyncio.Event()
        self.poll_only = False
        self.reconnect_after = 1.0
        self._task: asyncio.Task[None] | None = None

    def subscribe(
        self,
        channel: str,
        on_notify: Callable[[str], None],
        on_listening: Callable[[], None] = lambda: None,
    ) -> Callable[[], None]:
        """Hear ``channel`` until the returned function is called."""
        sub = Subscription(channel, on_notify, on_listening)
        self.subscriptions.append(sub)
        self.start()
        return lambda: self.subscriptions.remove(sub) if sub in self.subscriptions else None

    def start(self) -> None:
        """Connect in the background (once; the first subscription does it too)."""
        if self._task is None and not self.poll_only:
            self._task = asyncio.create_task(self.run(), name="eventix-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.listening.clear()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after connection losses (polling covers
        the gap meanwhile); return for good if the URL goes through a pooler."""
        while True:
            try:
                async with await connect_async(self.settings, self.url, autocommit=True) as conn:
                    if await behind_pooler(conn):
                        self._give_up()
                        return
                    await self._listen(conn)
            except (psycopg.Error, OSError) as exc:
                self.listening.clear()
                log.info("listen connection lost, reconnecting", error=str(exc).splitlines()[0])
                await asyncio.sleep(self.reconnect_after)

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        heard: set[str] = set()
        told: set[Subscription] = set()
        while True:
            for sub in list(self.subscriptions):
                if sub.channel not in heard:
                    await conn.execute(f"LISTEN {sub.channel}")
                    heard.add(sub.channel)
            self.listening.set()
            for sub in list(self.subscriptions):
                if sub not in told:
                    told.add(sub)
                    sub.on_listening()
            async for note in conn.notifies(timeout=SUBSCRIBE_CHECK):
                for sub in list(self.subscriptions):
                    if sub.channel == note.channel:
                        sub.on_notify(note.payload)

    def _give_up(self) -> None:
        self.poll_only = True
        self.listening.clear()
        log.warning(
            "the listen URL goes through a connection pooler, where LISTEN hears nothing: "
            "polling instead; set EVENTIX_LISTEN_DATABASE_URL to a direct URL (bypassing "
            "the pooler) for immediate wake-ups",
            url=mask_url(self.url),
            poll_interval=self.settings.poll_only_interval,
        )
        for sub in list(self.subscriptions):
            sub.on_listening()  # one look now, then the pollers take over


def jittered(interval: float) -> float:
    """``interval`` ±50 %, so that a hundred pollers started together spread out."""
    return interval * random.uniform(0.5, 1.5)


async def due_queues(engine: AsyncEngine, queues: Sequence[str]) -> list[str]:
    """Which of ``queues`` hold a task that is due now: one autocommit statement on
    the partial ready index, cheap enough to run every 100 ms from a hundred workers
    (see bench/README.md, "Wake-ups")."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = await conn.execute(statements.DUE_QUEUES, {"queues": list(queues)})
        return [queue for (queue,) in rows]


async def due_queues_and_rate_window(
    engine: AsyncEngine, queues: Sequence[str]
) -> tuple[list[str], float | None]:
    """:func:`due_queues`, and the seconds until the first of them whose rate limit
    holds its starts back lets one in again (None: no rate window is full)."""
    params = {"queues": list(queues)}
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        due, frees_in = (await conn.execute(statements.DUE_QUEUES_AND_RATE_WINDOW, params)).one()
    return list(due), None if frees_in is None else max(0.0, float(frees_in))


async def wait_for_work(
    wakeup: asyncio.Event,
    *,
    listener: Listener | None,
    poll_interval: float,
    poll_only_interval: float,
    look: Callable[[], Awaitable[bool]],
) -> None:
    """Return when ``wakeup`` is set or, while nothing is listening, when ``look()``
    finds work (every ``poll_only_interval``, jittered); listening, return at the
    latest after ``poll_interval`` (the safety net against a lost notification)."""
    if listener is not None and listener.listening.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), poll_interval)
        return
    while not wakeup.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), jittered(poll_only_interval))
        if wakeup.is_set() or (listener is not None and listener.listening.is_set()):
            return
        if await look():
            return
