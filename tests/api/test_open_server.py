"""Without EVENTIX_API_TOKEN the API needs no token, and says so in its OpenAPI
document; a trigger directory that does not load stops the start, loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import ApiServer, launch
from tests.support.processes import ROOT


@pytest.fixture(scope="module")
def open_api(
    api_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    base = tmp_path_factory.mktemp("open-api")
    with launch(api_database_url, Path(sys.executable), base) as server:
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


def test_broken_trigger_config_stops_the_start(api_database_url: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "triggers:\n  Bad:\n    event_name: e\n    code: |\n      def execute(self, event:\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "eventix_operator.api.serve", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": api_database_url,
             "EVENTIX_TRIGGER_CONFIG_DIRECTORY": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "bad.yaml: trigger Bad: code does not load" in done.stderr
