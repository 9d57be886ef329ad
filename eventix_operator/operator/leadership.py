"""Which jobs this operator replica leads: the leases it wants, renewed together.

Status sync with the queue metrics (:data:`LEADER`) and the scaler of each
worker pool (:func:`pool_lease`) are jobs that one replica at a time may do.
Each is a lease row (:mod:`eventix_operator.db.leadership`): one statement
every quarter of the lease takes or renews all the names this replica wants.

Why lease rows rather than advisory locks: a session advisory lock does not hold
through a transaction pooler (it stays on a server connection other clients are
given); a transaction-scoped one holds only while a transaction stays open,
which would keep a server connection of the pooler for every replica's whole
turn, and hand leadership back and forth between passes. A row with an expiry
holds through any pooler, costs one short statement per renewal, survives a
failover (it is replicated like any row) and can be read by anyone.

Never two at once: the database's clock alone decides when a lease expires and
another replica may take it. The holder counts its lease from the moment it
*sent* the renewal (before the database's ``now()``), and stops acting a
quarter of the lease before that: :meth:`Leadership.holds` turns false and
the callbacks hear of the loss then, whether or not the database could be
reached. A replica that is killed stops renewing; the other takes the lease at
its first try after expiry, within 1¼ leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable

from sqlalchemy import Engine

from eventix_operator.db import leadership as lease_db
from eventix_operator.db.errors import DATABASE_ERRORS, log_failure
from eventix_operator.logs import get_logger

log = get_logger("eventix.leadership")

#: The lease of status sync and the queue metrics.
LEADER = "status-sync"


def pool_lease(namespace: str, name: str) -> str:
    """The lease of one worker pool's scaler."""
    return f"pool-scaler:{namespace}/{name}"


def make_holder_id() -> str:
    """This replica's name in the lease table: the pod's name (the host name) first."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Leadership:
    """The leases this replica wants, renewed every ``seconds / 4``.

    ``on_change(name, held)`` runs on the event loop when a lease is won or lost.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        seconds: float,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.seconds = seconds
        self.holder = holder or make_holder_id()
        self.clock = clock
        self.wanted: set[str] = set()
        self.until: dict[str, float] = {}  # name -> when this replica stops acting on it
        self.listeners: list[Callable[[str, bool], None]] = []
        self.wakeup = asyncio.Event()
        self.stopping = asyncio.Event()
        self.unwanted: set[str] = set()  # to release at the next renewal
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    @property
    def interval(self) -> float:
        return self.seconds / 4

    def holds(self, name: str) -> bool:
        """Whether this replica may act on ``name`` now."""
        return self.until.get(name, -math.inf) > self.clock()

    def want(self, name: str) -> None:
        if name not in self.wanted:
            self.wanted.add(name)
            self.wakeup.set()

    def unwant(self, name: str) -> None:
        """Stop wanting ``name``; it is released at the next renewal."""
        if name in self.wanted:
            self.wanted.discard(name)
            self.unwanted.add(name)
            self._lose(name, "released")
            self.wakeup.set()

    def on_change(self, listener: Callable[[str, bool], None]) -> None:
        self.listeners.append(listener)

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    async def run(self) -> None:
        """Renew until stopped; then give every lease back."""
        try:
            while not self.stopping.is_set():
                self.wakeup.clear()
                wanted = set(self.wanted)
                give_back = self.unwanted - wanted
                sent = self.clock()
                try:
                    held = await asyncio.to_thread(self._renew, wanted, give_back)
                except Exception as exc:
                    log_failure(log, "leases not renewed", exc)
                else:
                    self.unwanted -= give_back
                    self._renewed(held & self.wanted, sent)
                    for name in wanted - held:
                        self._lose(name, "held by another replica")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.interval)
        finally:
            for name in list(self.until):
                self._lose(name, "released")
            with contextlib.suppress(*DATABASE_ERRORS):
                await asyncio.to_thread(self._release, self.wanted | self.unwanted)

    def _renew(self, wanted: set[str], give_back: set[str]) -> set[str]:
        with self.engine.begin() as conn:
            if give_back:
                lease_db.release(conn, give_back, self.holder)
            return lease_db.acquire(conn, wanted, self.holder, self.seconds)

    def _release(self, names: set[str]) -> None:
        with self.engine.begin() as conn:
            lease_db.release(conn, names, self.holder)

    def _renewed(self, held: set[str], sent: float) -> None:
        # Counted from when the renewal was sent, which is before the database's now():
        # this replica stops acting before the database lets another replica in.
        until = sent + self.seconds - self.interval
        delay = until - self.clock()
        if delay <= 0:
            return  # the renewal took most of the lease: not worth acting on
        loop = asyncio.get_running_loop()
        for name in held:
            gained = not self.holds(name)
            self.until[name] = until
            if name in self._expiry:
                self._expiry[name].cancel()
            self._expiry[name] = loop.call_later(delay, self._lapse, name)
            if gained:
                log.info("lease acquired", lease=name, holder=self.holder)
                self._notify(name, True)

    def _lapse(self, name: str) -> None:
        if name in self.until and not self.holds(name):
            self._lose(name, "not renewed in time")

    def _lose(self, name: str, why: str) -> None:
        timer = self._expiry.pop(name, None)
        if timer is not None:
            timer.cancel()
        if self.until.pop(name, None) is not None:
            if why == "released":
                log.info("lease released", lease=name, holder=self.holder)
            else:
                log.info("lease lost", lease=name, holder=self.holder, reason=why)
            self._notify(name, False)

    def _notify(self, name: str, held: bool) -> None:
        for listener in self.listeners:
            try:
                listener(name, held)
            except Exception:
                log.exception("leadership listener failed", lease=name)
