"""EventixTrigger resources end to end: the operator registers them, a real ``eventix api``
process fires them on ``POST /event``, the session's worker runs the tasks, and the status
sync shows the counts."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine, create_engine, text

from tests.api.conftest import TOKEN, ApiServer, launch
from tests.e2e.conftest import GROUP, VERSION, Cluster

pytestmark = pytest.mark.kube
TRIGGERS = "eventixtriggers"


@pytest.fixture(scope="module")
def api(e2e_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """``eventix api`` on the operator's database (with a token, no code triggers)."""
    base = tmp_path_factory.mktemp("api")
    with launch(e2e_database, Path(sys.executable), base, EVENTIX_API_TOKEN=TOKEN) as server:
        yield server


@pytest.fixture
def db(e2e_database: str) -> Iterator[Engine]:
    engine = create_engine(e2e_database)
    yield engine
    engine.dispose()


def create_trigger(cluster: Cluster, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EventixTrigger",
        "metadata": {"name": name},
        "spec": spec,
    }
    created: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, TRIGGERS, body
    )
    return created


def post_event(api: ApiServer, name: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """POST /event as Eventix's client sends it; the tasks the triggers enqueued."""
    event = {"name": name, "namespace": "default", "priority": 0, "payload": payload}
    status, answer = api.request("POST", "/event", event)
    assert status == 200, (status, answer, api.log.read_text()[-3000:])
    tasks: list[dict[str, Any]] = answer
    return tasks


def row(db: Engine, uid: str) -> dict[str, Any] | None:
    with db.connect() as conn:
        found = conn.execute(
            text("SELECT * FROM eventix_trigger WHERE uid = :uid"), {"uid": uid}
        ).mappings()
        first = found.first()
        return dict(first) if first else None


def task_row(db: Engine, uid: str) -> dict[str, Any]:
    with db.connect() as conn:
        return dict(
            conn.execute(
                text(
                    "SELECT status, args, kwargs, result, source FROM eventix_task WHERE uid = :u"
                ),
                {"u": uid},
            )
            .mappings()
            .one()
        )


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def test_trigger_fires_on_a_matching_event_and_counts(
    cluster: Cluster, api: ApiServer, db: Engine
) -> None:
    event = f"order.created.{uuid.uuid4().hex[:8]}"
    n = 4242
    created = create_trigger(
        cluster,
        "ship",
        {
            "eventName": event,
            "filter": {"kind": "express"},
            "template": {"task": "tests.record", "args": ["{{ payload.order.n }}"]},
        },
    )
    uid = created["metadata"]["uid"]
    cluster.wait("the trigger's row", lambda: row(db, uid))
    cluster.wait(
        "Ready", lambda: conditions(cluster.status(TRIGGERS, "ship")).get("Ready", {}).get("status")
    )
    ready = conditions(cluster.status(TRIGGERS, "ship"))["Ready"]
    assert (ready["status"], ready["reason"]) == ("True", "Registered")
    expected = {
        "name": f"{cluster.namespace}/ship",
        "k8s_namespace": cluster.namespace,
        "k8s_name": "ship",
        "generation": 1,
        "event_name": event,
        "filter": {"kind": "express"},
        "template": {
            "task": "tests.record",
            "args": ["{{ payload.order.n }}"],
            "namespace": "default",
            "error_eta_inc": 15,
            "error_eta_max": 300,
            "store_result": True,
        },
    }
    found = row(db, uid) or {}
    assert {k: found.get(k) for k in expected} == expected

    # A matching event: one task, with the payload's value as its argument, run by the worker.
    [task] = post_event(api, event, {"kind": "express", "order": {"n": n, "id": "A-1"}})
    assert (task["task"], task["args"]) == ("tests.record", [n])
    cluster.wait("the task to run", lambda: task_row(db, task["uid"])["status"] == "done")
    assert task_row(db, task["uid"]) == {
        "status": "done",
        "args": [n],
        "kwargs": {},
        "result": n,
        "source": "trigger",
    }
    assert cluster.procs.executions()[f"run {n}"] == 1
    cluster.wait("firedCount 1", lambda: cluster.status(TRIGGERS, "ship").get("firedCount") == 1)
    status = cluster.status(TRIGGERS, "ship")
    assert (status["ignoredCount"], status["failedCount"]) == (0, 0)
    assert status["lastFiredTime"]
    assert "lastError" not in status

    # A payload that does not pass the filter: no task, counted as ignored.
    assert post_event(api, event, {"kind": "slow", "order": {"n": n}}) == []
    cluster.wait("ignoredCount 1", lambda: cluster.status(TRIGGERS, "ship").get("ignoredCount"))
    # Another event name: the trigger is not even asked.
    assert post_event(api, f"{event}.other", {"kind": "express", "order": {"n": n}}) == []

    # A matching payload without the key the template names: no task, a failure with the reason.
    assert post_event(api, event, {"kind": "express", "order": {}}) == []
    cluster.wait("failedCount 1", lambda: cluster.status(TRIGGERS, "ship").get("failedCount"))
    status = cluster.status(TRIGGERS, "ship")
    assert "'n'" in status["lastError"]["message"]
    assert status["lastError"]["time"]
    assert (status["firedCount"], status["ignoredCount"], status["failedCount"]) == (1, 1, 1)
    assert conditions(status)["Ready"]["status"] == "True"
    cluster.wait(
        "a FiringFailed event",
        lambda: any(r == "FiringFailed" and "'n'" in m for _, r, m in cluster.events("ship")),
    )
    assert ("Normal", "Registered") in {(t, r) for t, r, _ in cluster.events("ship")}

    # Deleting the resource removes its row: the next event creates nothing.
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, TRIGGERS, "ship"
    )
    cluster.wait("the resource to go", lambda: cluster.get(TRIGGERS, "ship") is None)
    assert row(db, uid) is None
    assert post_event(api, event, {"kind": "express", "order": {"n": n}}) == []


def test_invalid_template_is_reported_and_registers_nothing(
    cluster: Cluster, api: ApiServer, db: Engine
) -> None:
    event = f"invoice.paid.{uuid.uuid4().hex[:8]}"
    # A placeholder that names neither the payload nor the event: only the operator can tell.
    created = create_trigger(
        cluster,
        "bad",
        {"eventName": event, "template": {"task": "tests.record", "args": ["{{ order.n }}"]}},
    )
    uid = created["metadata"]["uid"]

    def ready() -> dict[str, Any]:
        return conditions(cluster.status(TRIGGERS, "bad")).get("Ready") or {}

    cluster.wait("Ready=False", lambda: ready().get("status") == "False")
    assert ready()["reason"] == "InvalidSpec"
    assert "{{ order.n }}" in ready()["message"]
    stalled = conditions(cluster.status(TRIGGERS, "bad"))["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert cluster.status(TRIGGERS, "bad")["observedGeneration"] == 1
    cluster.wait(
        "an InvalidSpec warning",
        lambda: ("Warning", "InvalidSpec") in {(t, r) for t, r, _ in cluster.events("bad")},
    )
    assert row(db, uid) is None
    assert post_event(api, event, {"order": {"n": 1}}) == []

    # Fixed: registered, Ready, and it fires.
    cluster.patch(
        TRIGGERS, "bad", {"template": {"task": "tests.record", "args": ["{{ payload.order.n }}"]}}
    )
    cluster.wait("Ready=True", lambda: ready().get("status") == "True")
    assert cluster.status(TRIGGERS, "bad")["observedGeneration"] == 2
    assert conditions(cluster.status(TRIGGERS, "bad"))["Stalled"]["status"] == "False"
    [task] = post_event(api, event, {"order": {"n": 77}})
    assert task["args"] == [77]

    # Broken again: unregistered, so the old template no longer fires.
    cluster.patch(TRIGGERS, "bad", {"template": {"args": ["hello {{ payload.order.n }}"]}})
    cluster.wait("Ready=False again", lambda: ready().get("status") == "False")
    assert cluster.status(TRIGGERS, "bad")["observedGeneration"] == 3
    assert row(db, uid) is None
    assert post_event(api, event, {"order": {"n": 78}}) == []


def test_the_schema_refuses_what_it_can_judge(cluster: Cluster) -> None:
    refused: list[tuple[dict[str, Any], str]] = [
        ({"template": {"task": "tests.record"}}, "spec.eventName"),
        ({"eventName": "x", "template": {"args": []}}, "spec.template.task"),
        ({"eventName": "x", "template": {"task": "not a task"}}, "spec.template.task"),
        ({"eventName": "x", "filter": [1], "template": {"task": "t"}}, "spec.filter"),
        ({"eventName": "x", "template": {"task": "t", "uniqueKey": "id-{{ payload.id }}"}},
         "a placeholder must be the whole string"),
        ({"eventName": "x", "template": {"task": "t", "retry": {"backoffSeconds": 9,
                                                               "maxBackoffSeconds": 1}}},
         "maxBackoffSeconds must be at least backoffSeconds"),
    ]  # fmt: skip
    for spec, reason in refused:
        with pytest.raises(ApiException) as caught:
            create_trigger(cluster, "refused", spec)
        assert caught.value.status == 422, spec
        assert reason in str(caught.value.body), (spec, caught.value.body)
    accepted = {
        "task": "t",
        "uniqueKey": "{{ payload.id }}",
        "kwargs": {"at": "{{ event.timestamp }}"},
    }
    create_trigger(cluster, "accepted", {"eventName": "x", "template": accepted})
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, TRIGGERS, "accepted"
    )
