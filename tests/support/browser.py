"""A real browser for the dashboard's tests: Debian's Chromium, driven by Selenium
through Debian's chromedriver, one browser per test session.

Nothing is downloaded: the driver's path is given, so Selenium Manager is never
asked for one (and ``SE_OFFLINE`` forbids it anyway). ``scripts/test`` installs
the ``chromium`` and ``chromium-driver`` packages when they are missing (as root,
or through passwordless sudo). Without them the browser tests are skipped, saying
so; ``EVENTIX_TEST_CHROMIUM`` and ``EVENTIX_TEST_CHROMEDRIVER`` point at other
binaries. The machines here have no network: the flags keep Chromium from trying
(first-run, sync, component updates, QUIC), where it would hang.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM = os.environ.get("EVENTIX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EVENTIX_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
#: The window the screenshots and the tests see.
WIDTH, HEIGHT = 1280, 800

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in containers; the tests load only our own pages
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--metrics-recording-only",
    "--password-store=basic",
    "--hide-scrollbars",
    "--lang=en-US",
)


def missing_browser() -> str | None:
    """Why no browser test can run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return (
                f"{path} is missing: scripts/test installs Debian's chromium and "
                "chromium-driver as root or with passwordless sudo (apt-get); unpacked as a "
                "user they lack too many libraries to run"
            )
    return None


def start_browser(user_data: Path) -> Any:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download
    os.environ.setdefault("SE_AVOID_STATS", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data}")
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # The viewport itself at WIDTH x HEIGHT (the window's size would include its frame).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One Chromium for the session; each test starts with its cookies cleared."""
    why = missing_browser()
    if why is not None:
        pytest.skip(why)
    user_data = Path(tempfile.mkdtemp(prefix="eventix-chromium-"))
    driver = start_browser(user_data)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(user_data, ignore_errors=True)


def gone(error: Exception) -> bool:
    """Whether a WebDriver error says that the element read is no longer in the page: a stale
    reference, or chromedriver's inspector error for the same when it is asked in the middle
    of a document swap ("Node with given id does not belong to the document")."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    if isinstance(error, StaleElementReferenceException):
        return True
    return isinstance(error, WebDriverException) and "does not belong to the document" in str(
        error.msg
    )


def settled(read: Callable[[], T], attempts: int = 20) -> T:
    """``read()``, again if the live refresh replaced an element it was reading
    (the dashboard swaps its live regions every second in the tests)."""
    from selenium.common.exceptions import WebDriverException

    for attempt in range(attempts):
        try:
            return read()
        except WebDriverException as exc:
            if not gone(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 20) -> Any:
    """Poll ``predicate`` until it returns something true; that value. A read of
    an element the live refresh replaced meanwhile counts as not yet."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except WebDriverException as exc:
            if not gone(exc):
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
