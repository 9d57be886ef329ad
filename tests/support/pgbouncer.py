"""pytest plugin: Debian's PgBouncer in transaction mode in front of the test PostgreSQL.

The pooler most platform teams put between eventix and PostgreSQL (CloudNativePG's
``Pooler`` is PgBouncer) runs here as a real process: the ``pgbouncer`` of the Debian
package (1.18 on Debian 12), installed by ``scripts/test`` when it is missing (see
``ensure_debian_packages`` in ``scripts/lib/setup.sh``; these fixtures run that too when
pytest is started by hand). PgBouncer 1.18 does not track protocol-level prepared
statements, so a client that prepares them through it fails the way the issue measured.

Its configuration follows a CloudNativePG ``Pooler`` in transaction mode: one wildcard
database entry (every database of the server is reachable, so is each test's fresh one),
``ignore_startup_parameters = extra_float_digits,options`` (what CloudNativePG always
adds: a libpq ``options=-c …`` is accepted and silently dropped, so nothing may rely on
it), ``auth_type = trust`` with the user in an auth file (the embedded server trusts
loopback connections), and the connecting user as admin of the console, which reports
the server connections in use (``SHOW POOLS`` / ``SHOW SERVERS``).

PgBouncer refuses to run as root: as root it runs as the embedded server's account
(``eventix-pg``), with its configuration in a directory that account can read.

Fixtures: ``pgbouncer`` (session: in front of the session's server) and
``pooled_database_url`` (function: the test's fresh database through it). Other tests
start their own with :func:`running_pgbouncer` (in front of any host and port, such as
the failover proxy of ``tests.support.replication``, with their own pool settings).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from sqlalchemy.engine import make_url

from eventix_operator.embedded import SYSTEM_USER, free_port, scratch_directory, server_account
from tests.support.postgres import PostgresServer
from tools.kube.controlplane import die_with_parent

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SH = REPO_ROOT / "scripts" / "lib" / "setup.sh"
START_TIMEOUT = 30.0

#: What every PgBouncer of the tests is configured with, unless a fixture says otherwise.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "pool_mode": "transaction",
    "default_pool_size": "20",
    "max_client_conn": "2000",
    "ignore_startup_parameters": "extra_float_digits,options",
    # A server that refused a login is tried again after this many seconds (default 15):
    # short, so that a pooler in front of a failover proxy finds the new primary soon.
    "server_login_retry": "1",
    "log_stats": "0",
}

#: Why PgBouncer closes a connection in the normal course of things, or because a test
#: asked it to (KILL, RECONNECT); any other reason is a pooler error.
BENIGN_CLOSE_REASONS = (
    "client close request",
    "client unexpected eof",  # a client process that exited or was killed
    "server idle timeout",
    "server lifetime over",
    "database configuration changed",
    "obsolete connection",  # RECONNECT
    "database removed",  # KILL at the end of a test
    "successfully sent cancel request",
    "not sending cancel request for client that is now idle",
    "cancel request for idle client",  # the same, as PgBouncer 1.18 says it
    # A client that went away mid-statement (a process cancelling its loops as it exits):
    # the server connection is closed rather than handed on; no client sees an error.
    "client disconnect while server was not ready",
    "evicted",  # an idle server closed to make room in a full pool
)

_LOG_LINE = re.compile(r"^\S+ \S+ \S+ \[\d+\] (?P<level>[A-Z]+) (?P<text>.*)$")
_CLOSING = re.compile(r"closing because: (?P<reason>.*?) \(age=")
_POOLER_ERROR = re.compile(r"pooler error: (?P<reason>.*)$")


#: What a pooler-related failure looks like in an eventix process's log: a prepared
#: statement another client's transaction left behind (or took away), session state.
POOLER_TROUBLE = re.compile(
    r'prepared statement "?_pg3_|advisory lock|pooler error|server conn crashed|'
    r"unsupported startup parameter",
    re.IGNORECASE,
)


def pooler_trouble(*logs: Path) -> list[str]:
    """The lines of the given process logs that tell of a pooler-related failure."""
    found = []
    for path in logs:
        with contextlib.suppress(OSError):
            found += [f"{path.name}: {line}" for line in path.read_text(errors="replace")
                      .splitlines() if POOLER_TROUBLE.search(line)]  # fmt: skip
    return found


class PgBouncerError(RuntimeError):
    """PgBouncer could not be found, installed or started; the message says why."""


# --------------------------------------------------------------------------------------------
# The binary


def _debs_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "eventix-operator" / "debs"


def find_pgbouncer() -> Path | None:
    """The ``pgbouncer`` to run: on PATH, in /usr/sbin (not on a user's PATH), or the one
    ``ensure_debian_packages`` unpacked into the user's cache (a wrapper that sets
    LD_LIBRARY_PATH for the libraries unpacked beside it)."""
    on_path = shutil.which("pgbouncer")
    for candidate in (on_path, "/usr/sbin/pgbouncer", str(_debs_dir() / "bin" / "pgbouncer")):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def _to_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def ensure_pgbouncer(progress: Callable[[str], None] = _to_stderr) -> Path:
    """The path of ``pgbouncer``, installed first by ``scripts/lib/setup.sh`` when missing
    (its own one-line steps go to ``progress``; apt-get's output only on failure)."""
    found = find_pgbouncer()
    if found is not None:
        return found
    proc = subprocess.run(
        ["bash", "-c", '. "$1" && ensure_debian_packages pgbouncer', "bash", str(SETUP_SH)],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    for line in proc.stderr.splitlines():
        if line.startswith("== "):
            progress(line.removeprefix("== "))
    if proc.returncode != 0:
        raise PgBouncerError(
            f"installing Debian's pgbouncer failed (exit {proc.returncode}):\n{proc.stderr}"
        )
    found = find_pgbouncer()
    if found is None:
        raise PgBouncerError("ensure_debian_packages pgbouncer left no pgbouncer to run")
    return found


def pgbouncer_version(binary: Path) -> tuple[int, int]:
    out = subprocess.run(
        [str(binary), "-V"], capture_output=True, text=True, check=False
    ).stdout  # "PgBouncer 1.18.0\nlibevent …"
    match = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    if match is None:
        raise PgBouncerError(f"{binary} -V printed no version: {out!r}")
    return int(match.group(1)), int(match.group(2))


# --------------------------------------------------------------------------------------------
# One running PgBouncer


def _quote(value: str) -> str:
    """A field of PgBouncer's auth file: in double quotes, inner ones doubled."""
    return '"' + value.replace('"', '""') + '"'


@dataclass
class PgBouncer:
    """A PgBouncer on ``127.0.0.1:port`` in front of ``server_host:server_port``.

    ``user`` (and ``password``, empty for a trusting server) is the one account it lets
    in; the same account logs into the server and may use the admin console.
    """

    binary: Path
    server_host: str
    server_port: int
    user: str = "postgres"
    password: str = ""
    settings: Mapping[str, str] = field(default_factory=dict)
    port: int = field(init=False, default=0)
    workdir: Path = field(init=False)
    log_path: Path = field(init=False)
    version: tuple[int, int] = field(init=False, default=(0, 0))
    _popen: subprocess.Popen[bytes] | None = field(init=False, default=None)

    # -- life cycle ----------------------------------------------------------------------

    def start(self, attempts: int = 3) -> None:
        """Write the configuration and start; a port taken between choosing and binding it
        means another try on another port."""
        self.version = pgbouncer_version(self.binary)
        self.workdir = scratch_directory("eventix-test-pgbouncer-")
        self.log_path = self.workdir / "pgbouncer.log"
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            try:
                self._start_once()
                return
            except PgBouncerError as err:
                self.stop()
                if attempt == attempts or "Address already in use" not in str(err):
                    raise

    def _config(self) -> str:
        settings: dict[str, str] = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",  # TCP only: /tmp may hold another's socket of the same port
            "auth_type": "trust",
            "auth_file": str(self.workdir / "userlist.txt"),
            "admin_users": self.user,
            **DEFAULT_SETTINGS,
        }
        if self.version >= (1, 21):
            # Newer PgBouncers can track protocol-level prepared statements (from 1.22 on
            # by default): off, so that any PgBouncer behaves as Debian 12's 1.18 does.
            settings["max_prepared_statements"] = "0"
        settings.update(self.settings)
        target = f"host={self.server_host} port={self.server_port}"
        lines = ["[databases]", f"* = {target}", "", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _start_once(self) -> None:
        (self.workdir / "userlist.txt").write_text(f"{_quote(self.user)} {_quote(self.password)}\n")
        (self.workdir / "userlist.txt").chmod(0o644)
        ini = self.workdir / "pgbouncer.ini"
        ini.write_text(self._config())
        ini.chmod(0o644)
        account = server_account()  # None unless we are root: PgBouncer refuses root
        as_user: dict[str, Any] = (
            {"user": account.uid, "group": SYSTEM_USER, "extra_groups": []} if account else {}
        )
        # Its log goes to stderr, into a file this process opened: the account it runs
        # as needs to write nothing, only to read the two files above.
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                [str(self.binary), str(ini)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, start_new_session=True, preexec_fn=die_with_parent,
                **as_user,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                raise PgBouncerError(
                    f"pgbouncer exited with status {self._popen.returncode}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise PgBouncerError(f"pgbouncer did not listen on {self.port}:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._popen
        if proc is None:
            return
        if proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM: "immediate shutdown"
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout / 2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._popen = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    # -- URLs ----------------------------------------------------------------------------

    def url_for(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        """The URL of ``database`` through the pooler (SQLAlchemy's form by default; pass
        ``driver="postgresql"`` for libpq and psycopg)."""
        return (
            make_url(f"{driver}://")
            .set(username=self.user, password=self.password or None, host="127.0.0.1")
            .set(port=self.port, database=database)
            .render_as_string(False)
        )

    def pooled(self, url: str) -> str:
        """``url`` (of a database on the pooler's server) with the pooler's host and port."""
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(False)

    # -- the admin console ---------------------------------------------------------------

    def admin(self) -> psycopg.Connection[dict[str, Any]]:
        """A connection to the admin console (database ``pgbouncer``). It speaks only the
        simple query protocol: psycopg uses it for statements without parameters."""
        return psycopg.connect(
            self.url_for("pgbouncer", driver="postgresql"),
            autocommit=True, prepare_threshold=None, row_factory=dict_row,
        )  # fmt: skip

    def show(self, what: str) -> list[dict[str, Any]]:
        """The rows of ``SHOW <what>`` (POOLS, SERVERS, CLIENTS, STATS, DATABASES, …)."""
        if not re.fullmatch(r"[A-Za-z_]+", what):
            raise ValueError(f"not a SHOW command: {what!r}")
        with self.admin() as conn:
            return conn.execute(f"SHOW {what}").fetchall()

    def command(self, statement: str) -> None:
        """An admin command such as ``KILL db``, ``RECONNECT``, ``PAUSE``, ``RESUME``."""
        with self.admin() as conn:
            conn.execute(statement)

    def server_connections(self, database: str | None = None) -> int:
        """Server connections open now (active, idle, used, tested or logging in), of one
        database or of all: what the pooler holds on PostgreSQL."""
        rows = self.show("SERVERS")
        return sum(1 for row in rows if database is None or row["database"] == database)

    def pools(self, database: str | None = None) -> list[dict[str, Any]]:
        """``SHOW POOLS`` rows (cl_active, cl_waiting, sv_active, sv_idle, sv_used, …), of
        one database or of all but the console's."""
        return [
            row
            for row in self.show("POOLS")
            if row["database"] != "pgbouncer" and database in (None, row["database"])
        ]

    def release(self, database: str) -> None:
        """Drop every client and server connection of ``database`` (``KILL``), so that the
        database can be dropped without PgBouncer finding its server connections killed."""
        with contextlib.suppress(psycopg.Error):  # not known to the pooler: nothing to do
            self.command(f'KILL "{database}"')

    # -- the log -------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    def log_mark(self) -> int:
        """Where the log ends now: pass it to :meth:`pooler_errors` to see only later lines."""
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def pooler_errors(self, since: int = 0) -> list[str]:
        """The log lines (from byte ``since`` on) that tell of an error: each WARNING, ERROR
        or FATAL (``pooler error: …``, an unsupported startup parameter, a failed server
        login), and each connection closed for a reason not in BENIGN_CLOSE_REASONS
        (``server conn crashed?``, ``query_wait_timeout``, ``idle transaction timeout``…).
        Not what :meth:`release` (KILL) tells a client still connected at a test's end."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(since)
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        errors = []
        for line in text.splitlines():
            match = _LOG_LINE.match(line)
            if match is None:
                continue
            if match["level"] in ("WARNING", "ERROR", "FATAL"):
                told = _POOLER_ERROR.search(match["text"])  # what a KILL tells its clients
                if told is None or told["reason"] not in BENIGN_CLOSE_REASONS:
                    errors.append(line)
                continue
            closing = _CLOSING.search(match["text"])
            if closing is not None and closing["reason"] not in BENIGN_CLOSE_REASONS:
                errors.append(line)
        return errors


@contextlib.contextmanager
def running_pgbouncer(
    server_host: str,
    server_port: int,
    *,
    user: str = "postgres",
    password: str = "",
    binary: Path | None = None,
    **settings: str,
) -> Iterator[PgBouncer]:
    """A PgBouncer in front of ``server_host:server_port`` for the ``with`` block, with
    DEFAULT_SETTINGS overridden by ``settings`` (``default_pool_size="10"``, …)."""
    bouncer = PgBouncer(
        binary or ensure_pgbouncer(), server_host, server_port, user, password, settings
    )
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.destroy()


# --------------------------------------------------------------------------------------------
# pytest hooks and fixtures


_INSTALL_ERROR = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Install a missing pgbouncer before the first test, outside any per-test timeout,
    with our one line on the terminal. A failed install fails the tests that need it."""
    config = session.config
    if config.option.collectonly or find_pgbouncer() is not None:
        return
    if not any(
        name in getattr(item, "fixturenames", ())
        for item in session.items
        for name in ("pgbouncer", "pooled_database_url")
    ):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"pgbouncer: {line}")
        else:
            _to_stderr(line)

    try:
        ensure_pgbouncer(progress)
    except PgBouncerError as err:
        config.stash[_INSTALL_ERROR] = str(err)


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the session's PostgreSQL."""
    install_error = request.config.stash.get(_INSTALL_ERROR, None)
    if install_error is not None:
        pytest.fail(install_error, pytrace=False)
    url = make_url(pg_server.admin_url)
    with running_pgbouncer(
        url.host or "127.0.0.1",
        url.port or 5432,
        user=url.username or "postgres",
        password=url.password if isinstance(url.password, str) else "",
    ) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_database_url(database_url: str, pgbouncer: PgBouncer) -> Iterator[str]:
    """The URL of this test's fresh, migrated database (``database_url``) through PgBouncer.

    At the end its connections in the pooler are dropped (``KILL``) before the database is.
    """
    yield pgbouncer.pooled(database_url)
    database = make_url(database_url).database
    if database:
        pgbouncer.release(database)
