"""The dashboard as a person meets it: a real ``eventix api`` process (or ``eventix
dashboard``) on a database of its own, real worker processes, and Chromium.

One server and one worker per test module; tests use queues of their own.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

from tests.support.browser import gone, settled, wait_until
from tests.support.postgres import TEMPLATE, PostgresServer
from tests.support.processes import ROOT, Processes, free_port, make_processes

TOKEN = "ui-test-token-0123456789"
#: The queue the module's worker serves; tests that want tasks left alone use others.
WORK_QUEUE = "ui-work"


@dataclass
class Server:
    url: str
    port: int
    database_url: str
    engine: Engine
    proc: subprocess.Popen[bytes]
    log: Path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: str | None = None,
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        """One HTTP request; status, headers (lower-case names; Set-Cookie joined) and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = dict(headers or {})
        if cookie is not None:
            sent["Cookie"] = f"eventix_session={cookie}"
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode()
            found: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                found[key] = f"{found[key]}\n{value}" if key in found else value
            return response.status, found, text
        finally:
            conn.close()

    def sign_in(self, token: str = TOKEN) -> str:
        """A session cookie's value, as the login form gets it."""
        status, headers, _ = self.request("POST", "/ui/login", body=f"token={token}&next=/ui/")
        assert status == 303, status
        cookie = headers["set-cookie"].split(";")[0]
        name, _, value = cookie.partition("=")
        assert name == "eventix_session"
        return value


@contextlib.contextmanager
def launch(database_url: str, base: Path, *, command: str = "api", **env: str) -> Iterator[Server]:
    """``eventix api`` (or ``eventix dashboard``) on a free port until the block ends."""
    port = free_port()
    full_env = dict(
        os.environ,
        DATABASE_URL=database_url,
        EVENTIX_LOG_LEVEL="INFO",
        EVENTIX_DB_POOL_SIZE="4",
        EVENTIX_UI_REFRESH_SECONDS="1",
        **env,
    )
    log = base / f"{command}-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventix_operator", command, "--port", str(port)],
        cwd=ROOT, env=full_env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    engine = create_engine(database_url)
    server = Server(f"http://127.0.0.1:{port}", port, database_url, engine, proc, log)
    try:
        deadline = time.monotonic() + 90  # a loaded machine starts it slowly
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited {proc.returncode}:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                if server.request("GET", "/healthz")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer:\n{log.read_text()}")
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        engine.dispose()


@pytest.fixture(scope="module")
def ui_database(pg_server: PostgresServer) -> Iterator[str]:
    name = f"ui_{uuid.uuid4().hex[:12]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_server.url_for(name)
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def workers(ui_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """A real worker on :data:`WORK_QUEUE`, polling fast."""
    procs = make_processes(ui_database, tmp_path_factory.mktemp("ui-procs"))
    procs.worker("--queues", WORK_QUEUE, EVENTIX_WORKER_POLL_INTERVAL="0.2")
    yield procs
    procs.stop_all()


@pytest.fixture(scope="module")
def server(ui_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with launch(ui_database, tmp_path_factory.mktemp("ui"), EVENTIX_API_TOKEN=TOKEN) as s:
        yield s


@pytest.fixture
def queue() -> str:
    """A queue of this test's own, which no worker serves."""
    return f"ui-{uuid.uuid4().hex[:8]}"


class Page:
    """The browser on one server: open pages, sign in, read and click."""

    def __init__(self, driver: Any, server: Server) -> None:
        self.driver = driver
        self.server = server

    def open(self, path: str) -> Page:
        self.driver.get(self.server.url + path)
        return self

    def sign_in(self, token: str = TOKEN) -> Page:
        from selenium.webdriver.common.by import By

        self.open("/ui/login")
        self.driver.delete_all_cookies()
        self.open("/ui/login")
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.click("#sign-in")
        return self

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def text(self, selector: str) -> str:
        return str(settled(lambda: self.css(selector).text))

    def texts(self, selector: str) -> list[str]:
        """The text of every element ``selector`` finds, all from one version of the page."""
        return settled(lambda: [str(e.text) for e in self.all(selector)])

    def has(self, selector: str) -> bool:
        return bool(self.all(selector))

    def click(self, selector: str, *, confirm: bool = False) -> None:
        """Click a link or a form's button and wait for the page it leads to; with
        ``confirm``, accept the confirmation first. The click returns before a form's
        answer arrives, and a page opened meanwhile would cancel that answer."""
        self._leave(lambda: self.css(selector).click(), confirm=confirm)

    def submit(self, selector: str) -> None:
        """Submit the form of the field ``selector`` and wait for its answer."""
        self._leave(lambda: self.css(selector).submit())

    def _leave(self, act: Callable[[], Any], *, confirm: bool = False) -> None:
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        before = self.css("html")

        def left(_: Any) -> bool:
            try:
                before.is_enabled()
            except WebDriverException as exc:
                if gone(exc):
                    return True
                raise
            return False

        settled(act)
        if confirm:
            alert = wait_until("the confirmation", self._alert, 5)
            alert.accept()
        WebDriverWait(self.driver, 20).until(left, "the page to be left")

    def _alert(self) -> Any:
        from selenium.common.exceptions import NoAlertPresentException

        try:
            return self.driver.switch_to.alert
        except NoAlertPresentException:
            return None

    @property
    def path(self) -> str:
        current: str = self.driver.current_url
        return current[len(self.server.url) :]

    def arrive(self, wanted: str, *, exact: bool = True, timeout: float = 20) -> str:
        """Wait for the page a click leads to: a submitted form's answer comes after the
        click returns, so reading ``path`` at once can still see the page before it."""

        def there() -> str | None:
            path = self.path
            return path if (path == wanted if exact else path.startswith(wanted)) else None

        return str(wait_until(f"the page at {wanted}", there, timeout))

    def wait_text(self, selector: str, wanted: str, timeout: float = 20) -> str:
        """Reload until ``selector`` contains ``wanted`` (or the live refresh puts it there)."""

        def found() -> str | None:
            elements = self.all(selector)
            if elements and wanted in elements[0].text:
                return str(elements[0].text)
            self.driver.refresh()
            return None

        return str(wait_until(f"{wanted!r} in {selector}", found, timeout))

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e.get("level") == "SEVERE"]


@pytest.fixture
def page(browser: Any, server: Server) -> Page:
    """The browser, signed in to the module's server."""
    return Page(browser, server).sign_in()
