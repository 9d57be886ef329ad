"""Every route, its status codes, error documents and shapes, over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.conftest import ApiServer

#: Run once with the server connected directly, once through PgBouncer (transaction mode).
pytestmark = pytest.mark.parametrize(
    "api_connection", ["direct", "pgbouncer"], indirect=True, scope="module"
)


def post(api: ApiServer, namespace: str, **fields: Any) -> dict[str, Any]:
    status, body = api.request("POST", "/task", {"task": "t", "namespace": namespace, **fields})
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def test_post_get_delete(api: ApiServer, namespace: str) -> None:
    uid = uuid.uuid4().hex
    created = post(api, namespace, uid=uid, args=[1, "a"], kwargs={"k": None}, priority=-2)
    assert created["uid"] == uid
    assert created["revision"] == "1"
    assert created["status"] == "scheduled"
    assert created["eta"].endswith("Z")
    assert (created["args"], created["kwargs"], created["priority"]) == ([1, "a"], {"k": None}, -2)
    assert api.request("GET", f"/task/{uid}") == (200, created)
    # Dashes are the same uid.
    assert api.request("GET", f"/task/{uuid.UUID(uid)}")[1]["uid"] == uid

    status, body = api.request("POST", "/task", {"task": "t", "uid": uid})
    assert status == 409
    assert body["error_class"] == "AlreadyExists"
    assert body["error_payload"] == {"uid": uid}

    assert api.request("DELETE", f"/task/{uid}") == (200, None)
    status, body = api.request("DELETE", f"/task/{uid}")
    assert status == 404
    assert body["error_class"] == "NotFound"
    status, body = api.request("GET", f"/task/{uid}")
    assert status == 404
    assert body == {
        "error_class": "NotFound",
        "error_message": f"Entry with uid '{uid}' not found.",
        "error_status_code": 404,
        "error_traceback": "",
        "error_payload": {"uid": uid},
    }
    assert api.request("GET", "/task/whatever")[0] == 404


def test_unique_key_merge_keeps_earliest_eta_and_lowest_priority(
    api: ApiServer, namespace: str
) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    later = soon + timedelta(hours=1)
    first = post(api, namespace, unique_key="u", eta=soon.isoformat(), priority=5, args=[1])
    second = post(api, namespace, unique_key="u", eta=later.isoformat(), priority=1, args=[2])
    assert second["uid"] == first["uid"]
    assert datetime.fromisoformat(second["eta"]) == soon
    assert second["priority"] == 1
    assert second["args"] == [2]
    assert int(second["revision"]) > int(first["revision"])
    # Another namespace has a key space of its own.
    other = post(api, namespace + "-b", unique_key="u")
    assert other["uid"] != first["uid"]

    status, body = api.request("GET", "/task/by_unique_key/u")
    assert status == 409
    assert body["error_class"] == "TaskUniqueKeyNotUnique"
    status, body = api.request("GET", f"/task/by_unique_key/{namespace}/u")
    assert (status, body["uid"]) == (200, first["uid"])
    status, body = api.request("GET", f"/task/by_unique_key/{namespace}/u?stati=done")
    assert status == 404
    assert body["error_class"] == "NoTaskFoundForUniqueKey"
    api.request("DELETE", f"/task/{other['uid']}")
    assert api.request("GET", "/task/by_unique_key/u")[1]["uid"] == first["uid"]
    assert api.request("DELETE", "/task/by_unique_key/u") == (200, None)
    assert api.request("GET", "/task/by_unique_key/u")[0] == 404


def test_worker_cycle_conflicts_and_reschedule(api: ApiServer, namespace: str) -> None:
    created = post(api, namespace, max_retries=2, error_eta_inc=10)
    assert (
        api.request("GET", f"/tasks/next_scheduled?worker_id=w&namespace={namespace}-x")[0] == 204
    )
    status, claimed = api.request("GET", f"/tasks/next_scheduled?worker_id=w&namespace={namespace}")
    assert status == 200
    assert claimed["uid"] == created["uid"]
    assert (claimed["status"], claimed["worker_id"]) == ("processing", "w")
    assert claimed["worker_expires"] is not None
    assert api.request("GET", f"/tasks/next_scheduled?worker_id=v&namespace={namespace}")[0] == 204

    # Eventix's retry write-back: one retry fewer, the increment doubled, due later.
    retry = {
        **claimed,
        "status": "retry",
        "max_retries": 1,
        "error_eta_inc": 20,
        "eta": (datetime.now(UTC) + timedelta(seconds=10)).isoformat(),
        "worker_id": None,
        "worker_expires": None,
        "result": {"error_class": "KeyError", "error_message": "'x'", "error_payload": {}},
    }
    status, written = api.request("PUT", f"/task/{claimed['uid']}", retry)
    assert status == 200, written
    assert written["status"] == "retry"
    assert written["max_retries"] == 1
    assert written["error_eta_inc"] == 20  # what the next failure waits
    assert written["result"]["error_class"] == "KeyError"
    # A write with the old revision loses.
    status, body = api.request("PUT", f"/task/{claimed['uid']}", {**claimed, "status": "done"})
    assert status == 409
    assert body["error_class"] == "RevisionConflict"
    assert body["error_payload"] == {"revision": written["revision"]}

    status, body = api.request("GET", f"/task/{claimed['uid']}/reschedule")
    assert status == 200
    assert body["status"] == "scheduled"
    status, body = api.request("GET", f"/task/{claimed['uid']}/reschedule")
    assert status == 422
    assert body["error_class"] == "WrongTaskStatus"
    assert body["error_payload"] == {"uid": claimed["uid"], "status": "scheduled"}
    assert api.request("GET", f"/task/{uuid.uuid4().hex}/reschedule")[0] == 404

    # PUT of a task that does not exist creates it, as Eventix's backend does.
    uid = uuid.uuid4().hex
    status, body = api.request(
        "PUT", f"/task/{uid}", {"task": "restored", "namespace": namespace, "status": "done",
                                "result": [1, 2]}
    )  # fmt: skip
    assert status == 200
    assert (body["uid"], body["status"], body["result"]) == (uid, "done", [1, 2])


def test_listings(api: ApiServer, namespace: str) -> None:
    uids = [post(api, namespace, task=f"job{i % 2}", priority=i)["uid"] for i in range(5)]
    status, page = api.request(
        "PUT", "/tasks/by_status", {"status": "scheduled", "namespace": namespace,
                                    "skip": 1, "limit": 2, "sort": "-priority"}
    )  # fmt: skip
    assert status == 200
    assert page["max_results"] == 5
    assert (page["skip"], page["limit"], page["sort"]) == (1, 2, "-priority")
    assert page["ids"] == [uids[3], uids[2]]
    assert set(page["data"]) == set(page["ids"])
    assert page["data"][uids[3]]["priority"] == 3

    status, page = api.request("PUT", "/tasks/by_task", {"task": "job1", "namespace": namespace})
    assert status == 200
    assert page["max_results"] == 2
    assert sorted(page["ids"]) == sorted([uids[1], uids[3]])

    status, page = api.request(
        "PUT", "/tasks/dump", {"limit": 3, "filter": {"namespace": namespace}}
    )
    assert status == 200
    assert page["ids"] == sorted(uids)[:3]
    assert page["max_results"] == 5


def test_namespaces_task_types_metrics_version(api: ApiServer, namespace: str) -> None:
    post(api, namespace, task="alpha")
    post(api, namespace, task="beta")
    status, body = api.request("GET", "/namespaces")
    assert status == 200
    assert namespace in body["namespaces"]
    assert api.request("GET", f"/namespace/{namespace}/task_types") == (
        200,
        {"task_types": ["alpha", "beta"]},
    )
    status, metrics = api.request("GET", "/metrics")
    assert status == 200
    assert set(metrics["memory"]) == {"rss", "vms", "data"}
    assert metrics["memory"]["rss"] > 0
    assert metrics["worker"]["number_of_worker"] >= 0
    with api.engine.connect() as conn:
        scheduled = conn.execute(
            text("SELECT count(*) FROM eventix_task WHERE status = 'scheduled'")
        ).scalar_one()
    assert metrics["tasks"]["scheduled"] == scheduled
    status, body = api.request("GET", "/version")
    assert status == 200
    assert body["version"]


def test_openapi_describes_every_route(api: ApiServer) -> None:
    status, doc = api.request("GET", "/openapi.json")
    assert status == 200
    expected = {
        "/task": {"post"},
        "/task/{uid}": {"get", "put", "delete"},
        "/task/{uid}/reschedule": {"get"},
        "/task/{uid}/cancel": {"post"},
        "/task/by_unique_key/{unique_key}": {"get", "delete"},
        "/task/by_unique_key/{namespace}/{unique_key}": {"get"},
        "/tasks/next_scheduled": {"get"},
        "/tasks/by_status": {"put"},
        "/tasks/by_task": {"put"},
        "/tasks/dump": {"put"},
        "/event": {"post"},
        "/healthz": {"get"},
        "/version": {"get"},
        "/metrics": {"get"},
        "/namespaces": {"get"},
        "/namespace/{namespace}/task_types": {"get"},
        # Not Eventix routes (docs/eventix-compatibility.md): queue settings.
        "/queues": {"get"},
        "/queues/{name}": {"get", "put"},
        "/queues/{name}/pause": {"post"},
        "/queues/{name}/resume": {"post"},
    }
    assert {p: set(ops) for p, ops in doc["paths"].items()} == expected
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    post_task = doc["paths"]["/task"]["post"]
    assert {"200", "409", "413", "422", "401"} <= set(post_task["responses"])
    assert post_task["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventixTask"
    }
    assert doc["components"]["schemas"]["EventixTask"]["title"] == "TEventixTask"
