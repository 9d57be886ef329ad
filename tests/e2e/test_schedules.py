"""EventixSchedule resources: firing on time, exactly once, through restarts,
replicas, policies and a database outage."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine, create_engine, text

from tests.e2e.conftest import Cluster, Operators
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.kube
SCHEDULES = "eventixschedules"
EVERY_2S = "*/2 * * * * *"


@pytest.fixture
def db(e2e_database: str) -> Iterator[Engine]:
    engine = create_engine(e2e_database)
    yield engine
    engine.dispose()


def runs(db: Engine, cluster: Cluster, name: str) -> list[tuple[datetime, datetime, str]]:
    """(tick, row created, status) of a schedule's runs, oldest first."""
    with db.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.schedule_time, t.created_at, t.status FROM eventix_task t "
                "JOIN eventix_schedule s ON s.uid = t.schedule_uid "
                "WHERE s.k8s_namespace = :ns AND s.k8s_name = :n ORDER BY schedule_time"
            ),
            {"ns": cluster.namespace, "n": name},
        )
        return [(r[0], r[1], r[2]) for r in rows]


def assert_every_tick_once(ticks: list[datetime], step: float = 2.0) -> None:
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]
    assert all(g == step for g in gaps), f"missed ticks: gaps {gaps}"


def every_2s(**extra: object) -> dict[str, object]:
    return {
        "schedule": EVERY_2S,
        "successfulRunsHistoryLimit": 1000,
        "template": {"task": "tests.record", "args": [0]},
        **extra,
    }


def test_fires_every_tick_on_time_exactly_once(cluster: Cluster, db: Engine) -> None:
    cluster.create(SCHEDULES, "tick", every_2s())
    time.sleep(20)
    found = runs(db, cluster, "tick")
    assert len(found) >= 9
    assert_every_tick_once([t for t, _, _ in found])
    lateness = sorted((created - tick).total_seconds() for tick, created, _ in found)
    assert lateness[-1] < 1.0, lateness  # the row exists within a second of its tick
    status = cluster.wait("status", lambda: cluster.status(SCHEDULES, "tick").get("recentRuns"))
    assert status[0]["phase"] in ("Pending", "Running", "Succeeded")
    full = cluster.status(SCHEDULES, "tick")
    assert full["lastScheduleTime"]
    assert full["nextScheduleTime"] > full["lastScheduleTime"]


def test_no_tick_lost_or_doubled_across_an_operator_restart(
    cluster: Cluster, db: Engine, operators: Operators
) -> None:
    # catchUp All: the ticks of the operator's downtime must run too, each once
    cluster.create(SCHEDULES, "restart", every_2s(catchUp="All"))
    time.sleep(6)
    operators.restart(down_seconds=5)  # SIGKILL: no clean shutdown
    # The new operator catches up once it serves, which a loaded machine delays.
    deadline = time.monotonic() + 60
    while len(ticks := [t for t, _, _ in runs(db, cluster, "restart")]) < 9:
        assert time.monotonic() < deadline, f"no catch-up after the restart: {ticks}"
        time.sleep(0.5)
    assert_every_tick_once(ticks)


def test_two_replicas_fire_each_tick_once(
    cluster: Cluster, db: Engine, operators: Operators
) -> None:
    second = operators.another_replica()
    try:
        cluster.create(SCHEDULES, "twice", every_2s())
        time.sleep(16)
    finally:
        operators.procs.stop(second)
    found = runs(db, cluster, "twice")
    assert len(found) >= 6
    assert_every_tick_once([t for t, _, _ in found])


def test_forbid_never_overlaps_runs(cluster: Cluster, db: Engine) -> None:
    cluster.create(
        SCHEDULES,
        "forbid",
        every_2s(
            concurrencyPolicy="Forbid",
            template={"task": "tests.sleep", "args": [0, 5]},
        ),
    )
    time.sleep(13)
    found = runs(db, cluster, "forbid")
    ticks = [t for t, _, _ in found]
    assert 2 <= len(ticks) <= 3  # a 5 s run every 2 s: most ticks are skipped
    assert all((b - a).total_seconds() >= 5 for a, b in itertools.pairwise(ticks))
    cluster.wait(
        "SkippedRun event", lambda: any(r == "SkippedRun" for _, r, _ in cluster.events("forbid"))
    )


def test_replace_cancels_the_waiting_run(cluster: Cluster, db: Engine) -> None:
    cluster.create(
        SCHEDULES,
        "replace",
        every_2s(
            concurrencyPolicy="Replace",
            failedRunsHistoryLimit=100,
            template={"task": "tests.record", "queue": "nobody-serves-this"},
        ),
    )
    time.sleep(9)
    statuses = [s for _, _, s in runs(db, cluster, "replace")]
    assert len(statuses) >= 3
    assert statuses[-1] == "scheduled"
    assert set(statuses[:-1]) == {"cancelled"}


def test_suspend_and_resume(cluster: Cluster, db: Engine) -> None:
    cluster.create(SCHEDULES, "paused", every_2s(suspend=True))

    def suspended() -> bool:
        conditions = cluster.status(SCHEDULES, "paused").get("conditions", [])
        return any(c["reason"] == "Suspended" for c in conditions)

    cluster.wait("Suspended", suspended)
    time.sleep(5)
    assert runs(db, cluster, "paused") == []
    cluster.patch(SCHEDULES, "paused", {"suspend": False})
    cluster.wait("runs after resume", lambda: len(runs(db, cluster, "paused")) >= 2, 15)


def test_deleting_a_schedule_removes_its_runs(cluster: Cluster, db: Engine) -> None:
    cluster.create(SCHEDULES, "gone", every_2s(template={"task": "t", "queue": "nobody"}))
    cluster.wait("runs", lambda: len(runs(db, cluster, "gone")) >= 2, 15)
    cluster.delete(SCHEDULES, "gone")
    cluster.wait("resource deleted", lambda: cluster.get(SCHEDULES, "gone") is None)
    with db.connect() as conn:
        left = conn.execute(
            text(
                "SELECT count(*) FROM eventix_task "
                "WHERE k8s_namespace = :ns AND source = 'schedule'"
            ),
            {"ns": cluster.namespace},
        ).scalar()
    assert left == 0


@pytest.mark.parametrize(
    ("schedule", "zone", "reason_text"),
    [("61 * * * *", "UTC", "minute"), ("@daily", "Mars/Olympus_Mons", "Mars/Olympus_Mons")],
)
def test_what_only_the_operator_can_judge_is_reported(
    cluster: Cluster, schedule: str, zone: str, reason_text: str
) -> None:
    cluster.create(
        SCHEDULES, "bad", {"schedule": schedule, "timeZone": zone, "template": {"task": "t"}}
    )

    def ready() -> dict[str, str] | None:
        conditions = cluster.status(SCHEDULES, "bad").get("conditions", [])
        return next((c for c in conditions if c["type"] == "Ready"), None)

    condition = cluster.wait("Ready condition", ready)
    assert condition["status"] == "False"
    assert condition["reason"] == "InvalidSchedule"
    assert reason_text in condition["message"]
    cluster.wait(
        "Warning event",
        lambda: any(t == "Warning" and r == "InvalidSchedule" for t, r, _ in cluster.events("bad")),
    )


def test_a_malformed_time_zone_is_rejected_by_the_api_server(cluster: Cluster) -> None:
    with pytest.raises(ApiException) as error:
        cluster.create(
            SCHEDULES,
            "x",
            {"schedule": "@daily", "timeZone": "../../etc/passwd", "template": {"task": "t"}},
        )
    assert error.value.status == 422


def test_database_outage_loses_nothing(
    cluster: Cluster, db: Engine, pg_server: PostgresServer
) -> None:
    if pg_server.embedded is None:
        pytest.skip("needs the embedded server")
    cluster.create(SCHEDULES, "steady", every_2s())
    cluster.wait("first runs", lambda: len(runs(db, cluster, "steady")) >= 2, 15)
    db.dispose()
    pg_server.embedded.stop("fast")
    outage_start = datetime.now().astimezone()
    try:
        cluster.create("eventixtasks", "during-outage", {"task": "tests.record", "args": [77]})
        time.sleep(20)
    finally:
        pg_server.embedded.start()
    outage_end = datetime.now().astimezone()
    cluster.wait(
        "the task applied during the outage ran",
        lambda: cluster.status("eventixtasks", "during-outage").get("phase") == "Succeeded",
        60,
    )
    assert cluster.status("eventixtasks", "during-outage")["result"] == 77
    time.sleep(5)
    ticks = [t for t, _, _ in runs(db, cluster, "steady")]
    assert len(ticks) == len(set(ticks))
    after = [t for t in ticks if t > outage_end + timedelta(seconds=2)]
    assert len(after) >= 1, "the schedule did not resume"
    assert_every_tick_once(after)
    assert any(outage_start <= t <= outage_end for t in ticks), "Latest catch-up should fire"
