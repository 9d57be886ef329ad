"""The `eventix` command line in a subprocess, as a person or a script uses it."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text

from tests.support.processes import Processes

#: Every command runs twice: connected directly, and through PgBouncer in transaction mode.
pytestmark = pytest.mark.parametrize("connection", ["direct", "pgbouncer"], indirect=True)


def test_enqueue_run_show_retry(processes: Processes, engine: Engine) -> None:
    enqueued = processes.cli("enqueue", "tests.record", "--args", "[41]", "--priority", "-3")
    assert enqueued.returncode == 0, enqueued.stderr
    uid = enqueued.stdout.strip()

    listed = processes.cli("tasks", "list", "--status", "scheduled", "--output", "json")
    assert [t["uid"] for t in json.loads(listed.stdout)] == [uid]

    assert processes.worker("--burst").wait(60) == 0
    shown = json.loads(processes.cli("tasks", "show", uid, "--output", "json").stdout)
    assert (shown["status"], shown["result"], shown["priority"]) == ("done", 41, -3)

    retried = processes.cli("tasks", "retry", uid)
    assert retried.returncode == 0, retried.stderr
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM eventix_task WHERE uid = :u"), {"u": uid})
        assert status.scalar() == "scheduled"


def test_cancel_only_pending(processes: Processes) -> None:
    uid = processes.cli("enqueue", "tests.record", "--args", "[1]", "--delay", "600").stdout.strip()
    assert processes.cli("tasks", "cancel", uid).returncode == 0
    again = processes.cli("tasks", "cancel", uid)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: task {uid} is cancelled"


def test_queue_stats(processes: Processes) -> None:
    for queue in ("mail", "mail", "reports"):
        assert processes.cli("enqueue", "x", "--queue", queue).returncode == 0
    assert processes.cli("enqueue", "x", "--queue", "mail", "--delay", "600").returncode == 0
    stats = json.loads(processes.cli("queue", "stats", "--output", "json").stdout)
    by_queue = {(s["queue"], s["status"]): s for s in stats}
    assert by_queue[("mail", "scheduled")]["count"] == 3
    assert by_queue[("mail", "scheduled")]["due"] == 2
    assert by_queue[("reports", "scheduled")]["due"] == 1
    assert by_queue[("mail", "scheduled")]["oldest_due_seconds"] >= 0


def test_unique_key_from_the_cli(processes: Processes) -> None:
    first = processes.cli("enqueue", "x", "--unique-key", "nightly", "--args", "[1]")
    second = processes.cli("enqueue", "x", "--unique-key", "nightly", "--args", "[2]")
    assert first.stdout == second.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "x", "--args", "[1,"], "error: --args is not valid JSON"),
        (["enqueue", "x", "--args", '{"a": 1}'], "error: --args must be a JSON array"),
        (["enqueue", "x", "--kwargs", "[1]"], "error: --kwargs must be a JSON object"),
        (["enqueue", "x", "--eta", "tomorrow"], "error: --eta is not an ISO 8601 time"),
        (["enqueue", "x", "--eta", "2030-01-01T00:00", "--delay", "5"], "error: give eta or delay"),
        (["tasks", "show", "not-a-uid"], "error: no task not-a-uid"),
        (["worker", "--tasks", "no.such.module"], "error: cannot import task module"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    processes: Processes, engine: Engine, args: list[str], message: str
) -> None:
    result = processes.cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with engine.connect() as conn:  # nothing half-written
        assert conn.execute(text("SELECT count(*) FROM eventix_task")).scalar() == 0


def test_oversized_payload_is_refused(processes: Processes) -> None:
    result = processes.cli(
        "enqueue", "x", "--kwargs", json.dumps({"blob": "x" * 2000}),
        EVENTIX_MAX_PAYLOAD_BYTES="1000",
    )  # fmt: skip
    assert result.returncode == 2
    assert "over the 1000 byte limit" in result.stderr


def test_unreachable_database_is_a_clear_error(processes: Processes) -> None:
    result = processes.cli(
        "tasks", "list", DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        EVENTIX_DB_CONNECT_TIMEOUT="2",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach the database")


def test_migrate_twice_is_a_no_op(processes: Processes) -> None:
    first = processes.cli("migrate")
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout  # the test database is migrated already


def test_a_schema_newer_than_this_version_is_one_line(processes: Processes, engine: Engine) -> None:
    """A database migrated by a newer eventix-operator (the embedded one in the user's
    data directory is shared by every checkout) is refused in a line saying what to do."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    result = processes.cli("migrate")
    assert result.returncode == 2
    assert result.stderr.startswith("error: the database's schema is at revision 9999")
    assert "--data-dir" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_masks_the_password(processes: Processes) -> None:
    result = processes.cli("config", DATABASE_URL="postgresql://app:s3cret@db:5432/eventix")
    settings = json.loads(result.stdout)
    assert "s3cret" not in result.stdout
    assert settings["database_url"] == "postgresql+psycopg://app:***@db:5432/eventix"
    assert settings["db_pool_size"] == 10


def test_config_masks_password_query_parameters(processes: Processes) -> None:
    url = "postgresql://app@db:5432/eventix?sslmode=verify-full&password=s3cret&sslpassword=k3y"
    result = processes.cli("config", DATABASE_URL=url)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "k3y" not in result.stdout
    assert json.loads(result.stdout)["database_url"] == (
        "postgresql+psycopg://app@db:5432/eventix?sslmode=verify-full&password=***&sslpassword=***"
    )


def test_schedule_preview_shows_the_zone_and_utc(processes: Processes) -> None:
    result = processes.cli(
        "schedule", "preview", "30 2 * * *", "--tz", "Europe/Berlin",
        "--from", "2026-03-28T00:00", "--count", "2", "--output", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # 02:30 does not exist on 2026-03-29 in Berlin: it fires once, right after the gap
    assert json.loads(result.stdout) == [
        {"local": "2026-03-28T02:30:00+01:00", "utc": "2026-03-28T01:30:00+00:00"},
        {"local": "2026-03-29T03:00:00+02:00", "utc": "2026-03-29T01:00:00+00:00"},
    ]


def test_schedule_preview_rejects_a_bad_expression(processes: Processes) -> None:
    result = processes.cli("schedule", "preview", "* * *")
    assert result.returncode == 2
    assert result.stderr.startswith("error: schedule '* * *' has 3 fields")


def test_schedule_backfill_creates_each_tick_once(processes: Processes, engine: Engine) -> None:
    from datetime import UTC, datetime

    from eventix_operator.resources import schedule_definition
    from eventix_operator.schedules.scheduler import apply_schedule

    created = datetime(2026, 1, 1, tzinfo=UTC)
    definition = schedule_definition(
        {"schedule": "0 * * * *", "template": {"task": "t"}},
        uid="u1", namespace="team", name="hourly", generation=1, created_at=created,
    )  # fmt: skip
    with engine.begin() as conn:
        apply_schedule(conn, definition, created)
    args = ["schedule", "backfill", "hourly", "--from", "2026-01-01T00:00:00Z",
            "--to", "2026-01-01T05:00:00Z"]  # fmt: skip
    first = processes.cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "6 run(s) created, 0 tick(s) had run already"
    again = processes.cli(*args)
    assert again.stdout.strip() == "0 run(s) created, 6 tick(s) had run already"
    missing = processes.cli("schedule", "backfill", "nope", "--from", "2026-01-01", "--to",
                            "2026-01-02")  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no schedule named 'nope'"


@pytest.mark.parametrize("command", ["retry", "cancel"])
def test_retry_and_cancel_of_an_unknown_uid(processes: Processes, command: str) -> None:
    for uid in ("not-a-uid", "00000000-0000-0000-0000-000000000000"):
        result = processes.cli("tasks", command, uid)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: no task {uid}"
