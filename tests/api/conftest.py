"""The REST API as a real server process, and Eventix's own client in its own venv.

One ``eventix api`` (``python -m eventix_operator api``) per test module, on a free loopback
port, against a database of its own (copied from the migrated template), with a
bearer token and a directory of Eventix trigger YAML. Eventix's client (the
unmodified ``eventix`` 3.5.7 from PyPI) runs in a virtual environment cached
outside the repository, keyed by version; programs under ``eventix_programs/``
run there as subprocesses and print JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from tests.support.postgres import TEMPLATE, PostgresServer
from tests.support.processes import ROOT, free_port

EVENTIX_VERSION = "3.5.7"
#: Eventix's client imports these without declaring them.
EVENTIX_EXTRAS = ("pydantic-settings", "pyyaml")
TOKEN = "s3cret-token-of-the-api-tests"
PROGRAMS = Path(__file__).with_name("eventix_programs")
#: Small, so that the size tests send little.
MAX_PAYLOAD_BYTES = 100_000

TRIGGERS_YAML = """\
triggers:
  OrderTrigger:
    event_name: order.created
    trigger_type: default
    namespace: default
    code: |
      def execute(self, event):
          return TEventixTask(task="ship_order", args=[event.payload["order"]],
                              kwargs={"by": event.operator})
  PickyTrigger:
    event_name: order.created
    code: |
      def execute(self, event):
          if event.payload.get("express") is not True:
              self.ignore()
          return TEventixTask(task="express_order", args=[event.payload["order"]])
  BrokenTrigger:
    event_name: order.created
    code: |
      def execute(self, event):
          raise RuntimeError("this trigger always fails")
"""


def eventix_venv() -> Path:
    """``~/.cache/eventix-operator/eventix-client-3.5.7``, made once per machine."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eventix-operator"
    venv = cache / f"eventix-client-{EVENTIX_VERSION}"
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if marker.exists():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / f"eventix-client-{EVENTIX_VERSION}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 f"eventix=={EVENTIX_VERSION}", *EVENTIX_EXTRAS],
                check=True, timeout=600,
            )  # fmt: skip
            marker.write_text(EVENTIX_VERSION)
    return python


@dataclass
class ApiServer:
    url: str
    port: int
    database_url: str
    engine: Engine
    proc: subprocess.Popen[bytes]
    log: Path
    python: Path

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One request; the answer's status and its JSON (None when empty)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        return response.status, json.loads(payload) if payload else None

    def eventix(self, program: str, *args: str, timeout: float = 90, **env: str) -> Any:
        """Run an Eventix client program; its last stdout line is JSON."""
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "EVENTIX_URL": self.url,
            "EVENTIX_NAMESPACE": "default",
            "TEST_TOKEN": TOKEN,
            "EVENTIX_WORKER_LOG_LEVEL": "WARNING",
            **env,
        }
        done = subprocess.run(
            [str(self.python), str(PROGRAMS / program), *args],
            cwd=PROGRAMS, env=full_env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(
                f"{program} exited {done.returncode}\nstdout:\n{done.stdout[-3000:]}\n"
                f"stderr:\n{done.stderr[-5000:]}\nserver log:\n{self.log.read_text()[-3000:]}"
            )
        return json.loads(done.stdout.strip().splitlines()[-1])

    def eventix_process(
        self, program: str, *args: str, log: Path, **env: str
    ) -> subprocess.Popen[bytes]:
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "EVENTIX_URL": self.url,
            "EVENTIX_NAMESPACE": "default",
            "TEST_TOKEN": TOKEN,
            "EVENTIX_WORKER_LOG_LEVEL": "WARNING",
            **env,
        }
        return subprocess.Popen(
            [str(self.python), str(PROGRAMS / program), *args],
            cwd=PROGRAMS, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip


@pytest.fixture(scope="session")
def eventix_python() -> Path:
    return eventix_venv()


@pytest.fixture(scope="module")
def api_database_url(pg_server: PostgresServer) -> Iterator[str]:
    """A migrated database for one module's server (tests use namespaces of their own)."""
    name = f"api_{uuid.uuid4().hex[:12]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_server.url_for(name)
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def launch(database_url: str, python: Path, base: Path, **env: str) -> Iterator[ApiServer]:
    """``eventix api`` on a free port until the block ends."""
    port = free_port()
    full_env = dict(
        os.environ,
        DATABASE_URL=database_url,
        EVENTIX_MAX_PAYLOAD_BYTES=str(MAX_PAYLOAD_BYTES),
        EVENTIX_LOG_LEVEL="INFO",
        EVENTIX_DB_POOL_SIZE="4",
        **env,
    )
    log = base / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventix_operator", "api", "--port", str(port)],
        cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    engine = create_engine(database_url)
    server = ApiServer(f"http://127.0.0.1:{port}", port, database_url, engine, proc, log, python)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the API exited {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if server.request("GET", "/healthz", token=None)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the API did not answer:\n{log.read_text()}")
            time.sleep(0.05)
        yield server
    finally:
        stop(proc)
        engine.dispose()


@pytest.fixture(scope="module")
def api(
    api_database_url: str, eventix_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """The server with a token and Eventix trigger YAML (orders.yaml)."""
    base = tmp_path_factory.mktemp("api")
    (base / "triggers").mkdir()
    (base / "triggers" / "orders.yaml").write_text(TRIGGERS_YAML)
    with launch(
        api_database_url,
        eventix_python,
        base,
        EVENTIX_API_TOKEN=TOKEN,
        EVENTIX_TRIGGER_CONFIG_DIRECTORY=str(base / "triggers"),
    ) as server:
        yield server


@pytest.fixture
def namespace() -> str:
    """A queue of this test's own: modules share one database."""
    return f"ns-{uuid.uuid4().hex[:10]}"
