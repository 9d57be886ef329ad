"""Real eventix processes (`python -m eventix_operator …`: workers, the CLI, the
operator) against the test database, with their logs kept for failure messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eventix_operator.embedded import free_port

__all__ = ["Processes", "free_port", "make_processes", "operators_frozen"]

ROOT = Path(__file__).resolve().parents[2]

#: Every operator process the session's tests started (see :func:`operators_frozen`).
_OPERATORS: list[subprocess.Popen[bytes]] = []


class Processes:
    def __init__(self, database_url: str, record_dir: Path, log_dir: Path) -> None:
        self.database_url = database_url
        self.record_dir = record_dir
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            EVENTIX_TEST_RECORD_DIR=str(self.record_dir),
            EVENTIX_LOG_LEVEL="WARNING",
            EVENTIX_WORKER_POLL_INTERVAL="0.5",
        )
        env.update(extra)
        return env

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "eventix_operator", *args],
            cwd=ROOT, env=self.env(**env), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append(proc)
        if args[:1] == ("operator",):
            _OPERATORS.append(proc)
        return proc

    def worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return self.start(
            "worker", "worker", "--tasks", "tests.acceptance.worker_tasks", *args, **env
        )

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eventix_operator", *args],
            cwd=ROOT, env=self.env(**env), capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def executions(self) -> Counter[str]:
        lines: Counter[str] = Counter()
        for path in self.record_dir.glob("*.log"):
            lines.update(path.read_text().splitlines())
        return lines

    def wait_for(self, predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; logs: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.log_dir.glob("*.log"))
        )

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(10)


@contextmanager
def operators_frozen() -> Iterator[None]:
    """Freeze (SIGSTOP) every operator process of the session that still runs, until the block
    ends (SIGCONT). The session's operator watches the whole cluster; a test that plays the
    operator itself, writing status as the operator does, would otherwise race it."""
    frozen = [proc for proc in _OPERATORS if proc.poll() is None]
    for proc in frozen:
        proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in frozen:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)


def make_processes(database_url: str, base: Path) -> Processes:
    (base / "records").mkdir(parents=True)
    (base / "logs").mkdir()
    return Processes(database_url, base / "records", base / "logs")
