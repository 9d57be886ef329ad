"""Passwords masked in texts that may quote a connection string: exception messages
(libpq quotes a URL it cannot parse whole) and every log line of a process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eventix_operator.masking import mask_secrets
from tests.support.processes import ROOT


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (  # psycopg.ProgrammingError for a URL libpq cannot parse
            'end of string reached when looking for matching "]" in IPv6 host address in URI:'
            ' "postgresql://app:hunter2@[::1/db"',
            'end of string reached when looking for matching "]" in IPv6 host address in URI:'
            ' "postgresql://app:***@[::1/db"',
        ),
        ('invalid percent-encoded token: "hunter2%zz"', 'invalid percent-encoded token: "***"'),
        ("host=db password=hunter2 dbname=x", "host=db password=*** dbname=x"),
        ("host=db PassWord = 'hunter 2\\' x' port=5", "host=db PassWord = *** port=5"),
        (
            "at postgresql://db/x?sslmode=verify-full&sslpassword=hunter2&a=b, then"
            " https://user:hunter2@example.com/hook",
            "at postgresql://db/x?sslmode=verify-full&sslpassword=***&a=b, then"
            " https://user:***@example.com/hook",
        ),
        # Nothing secret: left as it is.
        ('password authentication failed for user "app"', None),
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused', None),
        ("postgresql://app@db/x", None),
    ],
)
def test_secrets_in_a_text_are_masked(text: str, shown: str | None) -> None:
    assert mask_secrets(text) == (text if shown is None else shown)


LOGS = """
import logging, sys
from eventix_operator.logs import configure_logging, get_logger
configure_logging("INFO", sys.argv[1])
log = get_logger("eventix.test")
log.warning("listen connection lost", error='in URI: "postgresql://app:hunter2@[::1/db"')
logging.getLogger("kopf.objects").error("Handler failed: %s", "password=hunter2")
try:
    raise RuntimeError("cannot use postgresql://app:hunter2@db/x")
except RuntimeError:
    log.exception("crashed")
"""


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_log_line_shows_a_password(fmt: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOGS, fmt], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stderr
    assert done.stderr.count("app:***@") == 2, done.stderr  # the field and the traceback
    assert "password=***" in done.stderr
    if fmt == "json":
        lines = [json.loads(line) for line in done.stderr.splitlines()]
        assert [line["event"] for line in lines] == [
            "listen connection lost",
            "Handler failed: password=***",
            "crashed",
        ]
