"""The command line loads only what a command needs: `eventix --help` or a query
must not pay for kopf, the Kubernetes client, FastAPI, uvicorn or alembic.
(How long that takes is measured by bench/startup.py, never asserted.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules only the long-running processes (operator, API, worker, migrations) need.
PROCESS_ONLY = (
    "kopf",
    "kubernetes",
    "fastapi",
    "uvicorn",
    "alembic",
    "prometheus_client",
    "structlog",
    "rich",
    "jinja2",
)

PROBE = """
import json, sys
from eventix_operator.cli.main import app
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, check=True, env=env, timeout=60,
    )  # fmt: skip
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["tasks", "list", "--help"],
        ["tasks", "show", "--help"],
        ["enqueue", "--help"],
        ["queue", "stats", "--help"],
        ["queue", "set", "--help"],
        ["queue", "pause", "--help"],
        ["worker", "--help"],
        ["operator", "--help"],
        ["api", "--help"],
        ["dashboard", "--help"],
        ["schedule", "preview", "0 2 * * *", "--tz", "Europe/Berlin", "--count", "3"],
    ],
)
def test_help_and_preview_load_no_process_modules(args: list[str]) -> None:
    loaded = loaded_by(*args)
    assert not loaded & set(PROCESS_ONLY), sorted(loaded & set(PROCESS_ONLY))
    assert "sqlalchemy" not in loaded
    assert "psycopg" not in loaded


def test_config_loads_settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    env = {**os.environ, "DATABASE_URL": "postgresql://app:secret@db/x?password=also"}
    loaded = loaded_by("config", env=env)
    assert not loaded & {*PROCESS_ONLY, "sqlalchemy", "psycopg"}


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "list", "--limit", "5"],
        ["tasks", "list", "--status", "scheduled", "--queue", "default"],
        ["tasks", "show", "00000000-0000-0000-0000-000000000000"],
        ["queue", "stats"],
        ["enqueue", "cli.task", "--args", "[1]", "--unique-key", "k"],
    ],
)
def test_one_shot_commands_load_no_sqlalchemy_once_the_statements_are_cached(
    args: list[str], database_url: str, tmp_path: Path
) -> None:
    """The statements of one-shot commands run on plain psycopg from texts compiled
    once (db/oneshot.py): SQLAlchemy is imported by the first run only."""
    import os

    env = {**os.environ, "DATABASE_URL": database_url, "XDG_CACHE_HOME": str(tmp_path)}
    first = loaded_by(*args, env=env)
    assert "sqlalchemy" in first
    loaded = loaded_by(*args, env=env)
    assert "psycopg" in loaded
    assert not loaded & {*PROCESS_ONLY, "sqlalchemy"}, sorted(
        loaded & {*PROCESS_ONLY, "sqlalchemy"}
    )
