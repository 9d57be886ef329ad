"""EventixTask resources through a real API server, operator and worker."""

from __future__ import annotations

import uuid

import pytest
from kubernetes.client.exceptions import ApiException
from sqlalchemy import create_engine, text

from tests.e2e.conftest import Cluster, Operators
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.kube
TASKS = "eventixtasks"


def phase(cluster: Cluster, name: str) -> str | None:
    value: str | None = cluster.status(TASKS, name).get("phase")
    return value


def test_applied_task_runs_and_reports_its_result(cluster: Cluster) -> None:
    cluster.create(TASKS, "add", {"task": "tests.record", "args": [42]})
    cluster.wait("Succeeded", lambda: phase(cluster, "add") == "Succeeded")
    status = cluster.status(TASKS, "add")
    assert status["result"] == 42
    assert status["attempts"] == 1
    assert status["finishedAt"]
    assert status["taskUid"]
    assert status["observedGeneration"] == 1
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True"
    cluster.wait(
        "events", lambda: {"Enqueued", "Succeeded"} <= {r for _, r, _ in cluster.events("add")}
    )


def test_failing_task_retries_then_fails_with_the_error(cluster: Cluster) -> None:
    cluster.create(
        TASKS,
        "broken",
        {
            "task": "tests.fail",
            "args": ["disk full"],
            "retry": {"maxRetries": 1, "backoffSeconds": 2, "maxBackoffSeconds": 2},
        },
    )
    cluster.wait("Retrying", lambda: phase(cluster, "broken") == "Retrying")
    retrying = cluster.status(TASKS, "broken")
    assert retrying["error"]["message"] == "disk full"
    assert retrying["nextAttemptAt"]
    cluster.wait("Failed", lambda: phase(cluster, "broken") == "Failed")
    status = cluster.status(TASKS, "broken")
    assert status["attempts"] == 2
    assert status["error"] == {"type": "ValueError", "message": "disk full"}
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "TaskFailed")
    warnings = lambda: [(r, m) for t, r, m in cluster.events("broken") if t == "Warning"]  # noqa: E731
    cluster.wait(
        "a Failed event", lambda: any(r == "Failed" and "disk full" in m for r, m in warnings())
    )


def test_unique_key_merges_two_resources_into_one_task(cluster: Cluster) -> None:
    spec = {"task": "tests.record", "args": [1], "uniqueKey": "nightly", "delaySeconds": 3600}
    cluster.create(TASKS, "first", spec)
    cluster.wait("first enqueued", lambda: cluster.status(TASKS, "first").get("taskUid"))
    cluster.create(TASKS, "second", {**spec, "args": [2]})
    second = cluster.wait("second", lambda: cluster.status(TASKS, "second").get("taskUid"))
    assert second == cluster.status(TASKS, "first")["taskUid"]
    cluster.wait("Merged event", lambda: any(r == "Merged" for _, r, _ in cluster.events("second")))


def test_priority_change_reaches_a_pending_task(cluster: Cluster, e2e_database: str) -> None:
    cluster.create(TASKS, "later", {"task": "tests.record", "args": [5], "delaySeconds": 3600})
    uid = cluster.wait("enqueued", lambda: cluster.status(TASKS, "later").get("taskUid"))
    cluster.patch(TASKS, "later", {"priority": -7})
    engine = create_engine(e2e_database)
    try:

        def priority() -> bool:
            with engine.connect() as conn:
                value = conn.execute(
                    text("SELECT priority FROM eventix_task WHERE uid = :u"), {"u": uid}
                ).scalar()
            return value == -7

        cluster.wait("priority updated", priority)
    finally:
        engine.dispose()


def test_deleting_a_pending_task_removes_its_row(cluster: Cluster, e2e_database: str) -> None:
    cluster.create(TASKS, "doomed", {"task": "tests.record", "args": [9], "delaySeconds": 3600})
    uid = cluster.wait("enqueued", lambda: cluster.status(TASKS, "doomed").get("taskUid"))
    cluster.delete(TASKS, "doomed")
    cluster.wait("resource gone", lambda: cluster.get(TASKS, "doomed") is None)
    engine = create_engine(e2e_database)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM eventix_task WHERE uid = :u"), {"u": uid}
            ).scalar()
        assert count == 0
    finally:
        engine.dispose()


def test_deleting_a_running_task_stops_it_and_removes_its_row(
    cluster: Cluster, e2e_database: str
) -> None:
    """The worker hears of the deletion (docs/cancelling.md): a sync task that checks
    its flag stops, and its result goes nowhere."""
    n = uuid.uuid4().int % 10**9  # its own marker in the session's record files
    runs = cluster.procs.executions
    cluster.create(TASKS, "long", {"task": "tests.cooperative", "args": [n, 300]})
    uid = cluster.wait("enqueued", lambda: cluster.status(TASKS, "long").get("taskUid"))
    cluster.wait("started", lambda: runs()[f"start {n}"] == 1)
    cluster.delete(TASKS, "long")
    cluster.wait("resource gone", lambda: cluster.get(TASKS, "long") is None)
    cluster.wait("the task to stop", lambda: runs()[f"stopped {n}"] == 1)
    engine = create_engine(e2e_database)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM eventix_task WHERE uid = :u"), {"u": uid}
            ).scalar()
        assert count == 0
    finally:
        engine.dispose()
    assert runs()[f"end {n}"] == 0


def test_finished_task_is_deleted_after_its_ttl(cluster: Cluster) -> None:
    cluster.create(
        TASKS,
        "short-lived",
        {
            "task": "tests.record",
            "args": [3],
            "ttlSecondsAfterFinished": 1,
        },
    )
    cluster.wait("deleted after TTL", lambda: cluster.get(TASKS, "short-lived") is None, 30)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"args": [1]}, "task: Required value"),
        ({"task": "x", "eta": "2030-01-01T00:00:00Z", "delaySeconds": 5}, "not both"),
        ({"task": "x", "priority": "high"}, "priority"),
        ({"task": "x", "retry": {"maxRetries": -1}}, "maxRetries"),
        ({"task": "not a name"}, "task"),
    ],
)
def test_invalid_tasks_are_rejected_by_the_api_server(
    cluster: Cluster, spec: dict[str, object], message: str
) -> None:
    with pytest.raises(ApiException) as error:
        cluster.create(TASKS, "invalid", spec)
    assert error.value.status == 422
    assert message in str(error.value.body)


def test_deletion_is_not_held_forever_by_a_lost_database(
    cluster: Cluster, operators: Operators, pg_server: PostgresServer
) -> None:
    if pg_server.embedded is None:
        pytest.skip("needs the embedded server")
    impatient = operators.another_replica(EVENTIX_OPERATOR_DELETE_TIMEOUT="3")
    try:
        cluster.create(TASKS, "orphan", {"task": "tests.record", "delaySeconds": 3600})
        cluster.wait("enqueued", lambda: cluster.status(TASKS, "orphan").get("taskUid"))
        pg_server.embedded.stop("fast")
        try:
            cluster.delete(TASKS, "orphan")
            cluster.wait("released", lambda: cluster.get(TASKS, "orphan") is None, 40)
        finally:
            pg_server.embedded.start()
    finally:
        operators.procs.stop(impatient)
    abandoned = [m for t, r, m in cluster.events("orphan") if r == "CleanupAbandoned"]
    assert abandoned
    assert "unreachable" in abandoned[0]
