"""`eventix local` with its embedded PostgreSQL, as a newcomer runs it: from a
private (mode 0700) directory, as root on CI and these machines, as a normal user
elsewhere. The server starts, the example tasks and the schedule run, Ctrl-C stops
both, and no directory that eventix did not create changes mode. When the server
cannot start, the command says why in one line and exits 2."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eventix_operator.embedded import postgres_bin_dir, scratch_directory
from tests.support.processes import ROOT, free_port


def private_installation(private: Path) -> Path:
    """A copy of the PostgreSQL installation inside ``private``, laid out as in
    site-packages (the binaries find their libraries beside the package); its bin
    directory. This is where a venv in a mode-0700 clone keeps them."""
    bin_dir = postgres_bin_dir()
    install, package = bin_dir.parent, bin_dir.parent.parent
    site = private / "site"
    shutil.copytree(install, site / package.name / install.name, symlinks=True)
    for libs in package.parent.glob(f"{package.name}.libs"):
        shutil.copytree(libs, site / libs.name, symlinks=True)
    return site / package.name / install.name / "bin"


def watched_directories(*paths: Path) -> dict[Path, int]:
    """Modes of every existing directory on the way to each of ``paths``."""
    modes: dict[Path, int] = {}
    for path in paths:
        for directory in [path, *path.parents]:
            with contextlib.suppress(OSError):
                if directory.is_dir():
                    modes[directory] = directory.stat().st_mode & 0o7777
    return modes


@pytest.fixture
def private() -> Iterator[Path]:
    """A mode-0700 directory (a clone in a home directory) under open ones."""
    scratch = scratch_directory("eventix-private-")
    path = scratch / "clone"
    path.mkdir()
    path.chmod(0o700)
    yield path
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    scratch = scratch_directory("eventix-local-test-")
    yield scratch / "data"
    shutil.rmtree(scratch, ignore_errors=True)


def local(
    *args: str, cwd: Path, bindir: Path | None = None, **popen: object
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EVENTIX_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("EVENTIX_DATABASE_URL", None)
    if bindir is not None:
        env["EVENTIX_PG_BINDIR"] = str(bindir)
    return subprocess.Popen(
        [sys.executable, "-m", "eventix_operator", "local", "--tasks", "examples.tasks", *args],
        cwd=cwd, env=env, text=True, **popen,  # type: ignore[call-overload]
    )  # fmt: skip


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_local_runs_from_a_private_directory_and_changes_no_modes(
    private: Path, data_dir: Path, tmp_path: Path
) -> None:
    bindir = private_installation(private)
    watched = watched_directories(
        private, bindir, Path.home(), Path(sys.prefix), ROOT, Path(tempfile.gettempdir()),
        Path("/var/lib"), data_dir.parent,
    )  # fmt: skip
    port = free_port()
    log = tmp_path / "local.log"
    with log.open("w") as out:
        proc = local(
            "--manifests", str(ROOT / "examples" / "manifests"),
            "--data-dir", str(data_dir), "--port", str(port),
            cwd=private, bindir=bindir, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 90
        done = runs = 0
        while time.monotonic() < deadline and not (done >= 4 and runs >= 2):
            assert proc.poll() is None, log.read_text()
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(url, connect_timeout=2) as conn,
            ):
                done, runs = conn.execute(
                    # finished: the flaky example may spend its retries and fail
                    "SELECT count(*) FILTER (WHERE source = 'k8s' AND status IN ('done', 'error')),"
                    " count(*) FILTER (WHERE schedule_uid IS NOT NULL AND status = 'done')"
                    " FROM eventix_task"
                ).fetchone() or (0, 0)
            time.sleep(0.2)
        assert (done, runs) >= (4, 2), (
            f"tasks done {done}, schedule runs {runs}:\n{log.read_text()}"
        )
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(60)
    assert code == 0, log.read_text()
    assert not port_open(port), "the embedded server outlived eventix local"
    assert not (data_dir / "postmaster.pid").exists()
    assert "Traceback" not in log.read_text()
    changed = {
        str(d): f"{mode:04o} -> {d.stat().st_mode & 0o7777:04o}"
        for d, mode in watched.items()
        if d.stat().st_mode & 0o7777 != mode
    }
    assert not changed, changed


def run_local(
    *args: str, cwd: Path, bindir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = local(*args, cwd=cwd, bindir=bindir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=90)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def assert_one_line(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(pattern, errors[0]), errors[0]


def test_no_binaries_is_one_line(tmp_path: Path) -> None:
    result = run_local("--data-dir", str(tmp_path / "d"), cwd=tmp_path, bindir=tmp_path / "none")
    assert_one_line(result, r"EVENTIX_PG_BINDIR=.*holds no pg_ctl")


def test_a_port_in_use_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_local("--data-dir", str(data_dir), "--port", str(port), cwd=tmp_path)
    assert_one_line(result, rf"port {port} on 127.0.0.1 is in use; choose another --port")


def test_data_of_another_major_version_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("9\n")
    result = run_local("--data-dir", str(data_dir), cwd=tmp_path)
    assert_one_line(result, r"holds PostgreSQL 9 data, and no PostgreSQL 9 is installed")


@pytest.mark.skipif(os.geteuid() != 0, reason="as root only: the server runs as another user")
def test_a_data_directory_the_server_cannot_reach_is_one_line(private: Path) -> None:
    before = private.stat().st_mode
    result = run_local("--data-dir", str(private / "data"), cwd=private)
    assert_one_line(result, rf"cannot enter {re.escape(str(private))} \(mode 0700\)")
    assert private.stat().st_mode == before
    assert not (private / "data").exists()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system: too small for initdb."""
    mount = scratch_directory("eventix-full-disk-")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        shutil.rmtree(mount)
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def test_a_full_disk_is_one_line(tmp_path: Path, full_disk: Path) -> None:
    result = run_local("--data-dir", str(full_disk / "data"), cwd=tmp_path)
    assert_one_line(result, r"No space left on device")
