"""pytest plugin: a real PostgreSQL primary with a streaming standby, and a failover proxy.

Both servers run the embedded binaries (``eventix_operator.embedded``; as root, as the
account ``eventix-pg``), on loopback ports, with their data in a scratch directory:

- the **primary** (``wal_level = replica``) streams to the **standby**, made by
  ``pg_basebackup -R`` through a replication slot; ``synchronous_standby_names`` names the
  standby, so a commit is acknowledged only once the standby has flushed it (what a
  CloudNativePG ``Cluster`` with synchronous replicas promises). The standby is a hot
  standby: it serves reads (the read-replica URL).
- a **TCP proxy** on its own loopback port stands in for CloudNativePG's ``-rw`` Service:
  it forwards to the current primary; :meth:`ReplicatedPair.failover` (or ``kill_primary``,
  ``promote`` and ``proxy.switch_to`` one by one) moves it to the promoted standby, closing
  every connection it held, as a Service whose endpoint moved does.
- a **libpq multi-host URL** (``postgresql://…@127.0.0.1:P1,127.0.0.1:P2/db?
  target_session_attrs=read-write``) reaches whichever server accepts writes, without a
  proxy.

The standby runs without ``synchronous_standby_names``: once promoted it is a primary
without a standby, whose commits do not wait (CloudNativePG, too, relaxes the
synchronous standby names of a primary left alone).

Fixtures: ``replication`` (session: one pair shared by the tests that only read and
write, never fail it over) with ``replicated_database`` (function: a fresh database on
it, optionally migrated), and ``failover_pair`` (function: a pair of the test's own, with
fsync on, to kill and promote). :func:`replicated_pair` starts one anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eventix_operator.embedded import (
    SYSTEM_USER,
    EmbeddedPostgres,
    postgres_bin_dir,
    runnable_installation,
    scratch_directory,
    server_account,
)

TEMPLATE = "eventix_template"
STANDBY_NAME = "standby"  # its application_name, which synchronous_standby_names names
SLOT = "standby"
READY_TIMEOUT = 60.0


class ReplicationError(RuntimeError):
    """The pair could not be set up, or did not reach the state asked for in time."""


# --------------------------------------------------------------------------------------------
# The proxy


class TcpProxy:
    """A TCP forwarder on ``127.0.0.1:port`` to ``127.0.0.1:target``, run by an asyncio loop
    in a thread of its own. A connection to a target that refuses it (a dead primary) is
    closed at once; :meth:`switch_to` points new connections elsewhere and closes the
    existing ones, as a Kubernetes Service whose endpoint changed leaves its clients."""

    def __init__(self, target: int | None) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0  # connections accepted, forwarded or not
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def start(self) -> int:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        target = self.target
        if target is None:
            client_w.transport.abort()
            return
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.transport.abort()
            return
        if self.target != target:  # switched while connecting: not to the old one
            for writer in (client_w, server_w):
                writer.transport.abort()
            return
        self._open |= {client_w, server_w}
        try:
            pumps = [
                asyncio.ensure_future(self._pump(client_r, server_w)),
                asyncio.ensure_future(self._pump(server_r, client_w)),
            ]
            # PostgreSQL's protocol has no half-closed connections: one side done, both done.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
        finally:
            for writer in (client_w, server_w):
                self._open.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _close_all(self) -> int:
        closed = len(self._open)
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        return closed // 2

    def switch_to(self, target: int | None) -> int:
        """Forward new connections to ``target`` (None: close them at once, a Service with
        no endpoint) and close every open one; returns how many were closed."""
        self.target = target
        closed: int = self._call(self._close_all())
        return closed

    def open_connections(self) -> int:
        return len(self._open) // 2

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        server = self._server

        async def shutdown() -> None:
            if server is not None:
                server.close()
            await self._close_all()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# --------------------------------------------------------------------------------------------
# The pair


@dataclass
class Node:
    """One server of the pair."""

    name: str
    server: EmbeddedPostgres

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.url(database, driver="postgresql"), **kwargs)

    def in_recovery(self) -> bool:
        with self.connect() as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])

    def log(self) -> str:
        try:
            return (self.server.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class ReplicatedPair:
    """A primary, its streaming standby and the proxy in front of the primary.

    ``durable`` keeps fsync and full_page_writes on (the failover tests); without it they
    are off, as in the session's server. ``shared`` pairs refuse to be failed over.
    """

    durable: bool = True
    shared: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    base: Path = field(init=False)
    primary: Node = field(init=False)
    standby: Node = field(init=False)
    proxy: TcpProxy = field(init=False)
    promoted: bool = field(init=False, default=False)

    # -- set-up ----------------------------------------------------------------------------

    def _settings(self) -> dict[str, str]:
        settings = {
            "shared_buffers": "16MB",
            "max_connections": "100",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "max_replication_slots": "5",
            "hot_standby": "on",
            "wal_receiver_status_interval": "1s",
            "hot_standby_feedback": "on",
            "synchronous_commit": "on",
        }
        if not self.durable:
            settings |= {"fsync": "off", "full_page_writes": "off"}
        return settings | self.settings

    def start(self) -> None:
        self.base = scratch_directory("eventix-test-replication-")
        common = self._settings()
        primary = EmbeddedPostgres(
            self.base / "primary",
            settings=common | {"synchronous_standby_names": STANDBY_NAME},
        )
        self.primary = Node("primary", primary)
        primary.start()
        standby = EmbeddedPostgres(self.base / "standby", settings=common)
        self.standby = Node("standby", standby)
        self._base_backup(standby)
        standby.start()
        self.proxy = TcpProxy(self.primary.port)
        self.proxy.start()
        self.wait_streaming()

    def _base_backup(self, standby: EmbeddedPostgres) -> None:
        """``pg_basebackup -R`` into the standby's (new, empty) data directory, run as the
        servers' account, with a replication slot made for it; the connection string it
        writes to ``primary_conninfo`` names the standby for synchronous_standby_names."""
        account = server_account()
        bin_dir = runnable_installation(postgres_bin_dir(), account)
        data = standby.data_dir
        data.mkdir(mode=0o700)
        as_user: dict[str, Any] = {}
        if account is not None:
            os.chown(data, account.uid, -1)
            as_user = {"user": account.uid, "group": SYSTEM_USER, "extra_groups": []}
        conninfo = (
            f"host=127.0.0.1 port={self.primary.port} user=postgres application_name={STANDBY_NAME}"
        )
        result = subprocess.run(
            [str(bin_dir / "pg_basebackup"), "-D", str(data), "-d", conninfo,
             "-R", "-C", "-S", SLOT, "-X", "stream", "-c", "fast", "--no-sync"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=data,
            check=False, **as_user,
        )  # fmt: skip
        if result.returncode != 0:
            raise ReplicationError(f"pg_basebackup failed: {result.stderr.strip()}")
        # Copied with the data: the primary's log and owner file are not the standby's.
        for name in ("server.log", EmbeddedPostgres.OWNER_FILE):
            with contextlib.suppress(OSError):
                (data / name).unlink()

    def wait_streaming(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the primary sees the standby streaming as its synchronous standby."""
        deadline = time.monotonic() + timeout
        state: object = None
        while time.monotonic() < deadline:
            with self.primary.connect() as conn:
                state = conn.execute(
                    "SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s",
                    (STANDBY_NAME,),
                ).fetchone()
            if state == ("streaming", "sync"):
                return
            time.sleep(0.1)
        raise ReplicationError(
            f"the standby is not streaming synchronously after {timeout}s (state {state}):\n"
            f"{self.standby.log()[-3000:]}"
        )

    def destroy(self) -> None:
        with contextlib.suppress(AttributeError):
            self.proxy.stop()
        for node in ("standby", "primary"):
            with contextlib.suppress(AttributeError):
                getattr(self, node).server.destroy()
        with contextlib.suppress(AttributeError):
            shutil.rmtree(self.base, ignore_errors=True)

    # -- URLs ----------------------------------------------------------------------------

    def proxy_url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """Through the proxy: the address that stays the primary's across a failover."""
        return f"{driver}://postgres@127.0.0.1:{self.proxy.port}/{database}"

    def multi_host_url(self, database: str = "postgres") -> str:
        """A libpq multi-host URL, as a user writes it in ``DATABASE_URL``: primary first,
        then the standby, whichever accepts writes (``target_session_attrs=read-write``).
        psycopg takes it; SQLAlchemy does not parse hosts listed this way (see
        :meth:`multi_host_sqlalchemy_url`)."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def multi_host_sqlalchemy_url(self, database: str = "postgres") -> str:
        """The same servers in SQLAlchemy's form: one ``host=`` query parameter each."""
        hosts = f"host=127.0.0.1:{self.primary.port}&host=127.0.0.1:{self.standby.port}"
        return f"postgresql+psycopg://postgres@/{database}?{hosts}&target_session_attrs=read-write"

    def read_url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """The hot standby, for reads that tolerate replication lag."""
        return self.standby.url(database, driver)

    # -- data ------------------------------------------------------------------------------

    def create_database(
        self, name: str, *, template: str | None = None, migrate: bool = False
    ) -> None:
        """``CREATE DATABASE`` on the primary (a copy of ``template``; migrated by eventix's
        Alembic migrations when ``migrate``), waiting until the standby has replayed it."""
        with self.current_primary().connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        if migrate:
            from sqlalchemy import create_engine

            from eventix_operator.db.migrate import upgrade

            engine = create_engine(self.current_primary().url(name))
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        if not self.promoted:
            self.wait_replayed()

    def drop_database(self, name: str) -> None:
        with self.current_primary().connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def wait_replayed(self, timeout: float = READY_TIMEOUT) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with self.primary.connect() as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.standby.connect() as conn:
                done = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)
                ).fetchone()
            if done and done[0]:
                return
            time.sleep(0.05)
        raise ReplicationError(f"the standby did not replay up to {target} in {timeout}s")

    # -- failing over --------------------------------------------------------------------

    def current_primary(self) -> Node:
        return self.standby if self.promoted else self.primary

    def _refuse_if_shared(self, what: str) -> None:
        if self.shared:
            raise ReplicationError(
                f"{what}: the session's pair is shared by other tests; use failover_pair"
            )

    def kill_primary(self) -> None:
        """The primary dies: an immediate shutdown (every backend killed, no checkpoint,
        what a crash leaves), its port closed. Connections to it, direct or through the
        proxy, fail; the proxy refuses new ones until it is switched."""
        self._refuse_if_shared("kill_primary")
        self.primary.server.stop("immediate")

    def promote(self, timeout: float = READY_TIMEOUT) -> None:
        """``pg_ctl promote`` the standby and wait until it accepts writes."""
        self._refuse_if_shared("promote")
        account = server_account()
        bin_dir = runnable_installation(postgres_bin_dir(), account)
        as_user: dict[str, Any] = (
            {"user": account.uid, "group": SYSTEM_USER, "extra_groups": []} if account else {}
        )
        result = subprocess.run(
            [str(bin_dir / "pg_ctl"), "promote", "-w", "-t", str(int(timeout)),
             "-D", str(self.standby.server.data_dir)],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
            cwd=self.standby.server.data_dir, check=False, **as_user,
        )  # fmt: skip
        if result.returncode != 0:
            raise ReplicationError(f"pg_ctl promote failed: {result.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while self.standby.in_recovery():
            if time.monotonic() > deadline:
                raise ReplicationError(f"the standby still in recovery after {timeout}s")
            time.sleep(0.05)
        self.promoted = True

    def failover(self) -> None:
        """Kill the primary, promote the standby, point the proxy at it."""
        self.kill_primary()
        self.promote()
        self.proxy.switch_to(self.standby.port)


@contextlib.contextmanager
def replicated_pair(
    *, durable: bool = True, shared: bool = False, **settings: str
) -> Iterator[ReplicatedPair]:
    """A started :class:`ReplicatedPair` for the ``with`` block, destroyed afterwards."""
    pair = ReplicatedPair(durable=durable, shared=shared, settings=dict(settings))
    try:
        pair.start()
        yield pair
    finally:
        pair.destroy()


# --------------------------------------------------------------------------------------------
# Fixtures


@dataclass(frozen=True)
class ReplicatedDatabase:
    """A database of its own on the session's pair, with its URLs (SQLAlchemy's form
    unless said otherwise)."""

    name: str
    pair: ReplicatedPair

    @property
    def url(self) -> str:
        """The primary, directly."""
        return self.pair.primary.url(self.name)

    @property
    def read_url(self) -> str:
        """The hot standby."""
        return self.pair.read_url(self.name)

    @property
    def proxy_url(self) -> str:
        return self.pair.proxy_url(self.name)

    @property
    def multi_host_url(self) -> str:
        """libpq's form (``postgresql://…@h1:p1,h2:p2/db?target_session_attrs=…``)."""
        return self.pair.multi_host_url(self.name)

    @property
    def multi_host_sqlalchemy_url(self) -> str:
        return self.pair.multi_host_sqlalchemy_url(self.name)


def _skip_if_external() -> None:
    if os.environ.get("EVENTIX_TEST_DATABASE_URL"):
        pytest.skip("starts its own PostgreSQL servers (EVENTIX_TEST_DATABASE_URL is set)")


@pytest.fixture(scope="session")
def replication() -> Iterator[ReplicatedPair]:
    """A primary and its synchronous hot standby shared by the session (fsync off), with
    the schema built once into a template database. Tests that fail a pair over use
    ``failover_pair`` instead: this one refuses."""
    _skip_if_external()
    with replicated_pair(durable=False, shared=True) as pair:
        pair.create_database(TEMPLATE, migrate=True)
        yield pair


@pytest.fixture
def replicated_database(replication: ReplicatedPair) -> Iterator[ReplicatedDatabase]:
    """A fresh, migrated database on the session's pair, replayed on the standby before
    the test begins."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    replication.create_database(name, template=TEMPLATE)
    yield ReplicatedDatabase(name, replication)
    replication.drop_database(name)


@pytest.fixture
def failover_pair() -> Iterator[ReplicatedPair]:
    """A pair of this test's own (fsync on), to kill, promote and switch over."""
    _skip_if_external()
    with replicated_pair(durable=True) as pair:
        yield pair
