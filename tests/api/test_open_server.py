"""When the API serves without a token, and when it refuses to start: never open by
accident. Without EVENTIX_API_TOKEN it starts only with EVENTIX_API_ALLOW_ANONYMOUS=true,
says so in its log and declares no security in its OpenAPI document; an empty or short
token stops the start with one line, whatever the anonymous switch says. A trigger
directory that does not load stops the start, loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ApiServer, launch
from tests.support.processes import ROOT, free_port


@pytest.fixture(scope="module")
def open_api(
    api_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    base = tmp_path_factory.mktemp("open-api")
    with launch(
        api_database_url, Path(sys.executable), base, EVENTIX_API_ALLOW_ANONYMOUS="true"
    ) as server:
        yield server


def test_no_token_needed(open_api: ApiServer, namespace: str) -> None:
    status, task = open_api.request(
        "POST", "/task", {"task": "t", "namespace": namespace}, token=None
    )
    assert status == 200
    assert open_api.request("GET", f"/task/{task['uid']}", token=None)[0] == 200
    status, doc = open_api.request("GET", "/openapi.json", token=None)
    assert status == 200
    assert "security" not in doc
    assert "securitySchemes" not in doc.get("components", {})
    log = open_api.log.read_text()
    assert "auth=False" in log
    assert "serving without authentication (EVENTIX_API_ALLOW_ANONYMOUS)" in log


def test_a_token_server_says_so(api: ApiServer) -> None:
    log = api.log.read_text()
    assert "auth=True" in log
    assert "without authentication" not in log
    status, doc = api.request("GET", "/openapi.json")
    assert status == 200
    assert doc["security"] == [{"bearerAuth": []}]


START_COMMANDS = {
    "eventix api": ["-m", "eventix_operator", "api"],
    "eventix api --workers 2": ["-m", "eventix_operator", "api", "--workers", "2"],
    "python -m eventix_operator.api.serve": ["-m", "eventix_operator.api.serve"],
}


@pytest.mark.parametrize("command", list(START_COMMANDS))
@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({}, "error: EVENTIX_API_TOKEN is not set: set a bearer token of at least 16"),
        (
            {"EVENTIX_API_TOKEN": ""},
            "error: EVENTIX_API_TOKEN is empty: it would let every request in",
        ),
        (
            {"EVENTIX_API_TOKEN": "   \n", "EVENTIX_API_ALLOW_ANONYMOUS": "true"},
            "error: EVENTIX_API_TOKEN is empty",
        ),
        (
            {"EVENTIX_API_TOKEN": "s3cret-token\n"},
            "error: EVENTIX_API_TOKEN has 12 characters, fewer than 16",
        ),
    ],
    ids=["unset", "empty", "blank-even-with-anonymous", "short"],
)
def test_the_api_does_not_start_open_by_accident(
    command: str, env: dict[str, str], complaint: str
) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EVENTIX_API_")}
    done = subprocess.run(
        [sys.executable, *START_COMMANDS[command], "--port", str(free_port())],
        cwd=ROOT,
        # Refused before anything connects: no database is needed to see it.
        env={**base, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(complaint), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_broken_trigger_config_stops_the_start(api_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "triggers:\n  Bad:\n    event_name: e\n    code: |\n      def execute(self, event:\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "eventix_operator.api.serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": api_database_url,
             "EVENTIX_API_ALLOW_ANONYMOUS": "true",
             "EVENTIX_TRIGGER_CONFIG_DIRECTORY": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "bad.yaml: trigger Bad: code does not load" in done.stderr
