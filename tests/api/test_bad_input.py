"""Bad input gets the right status and a clear message, and writes nothing."""

from __future__ import annotations

import http.client
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.conftest import MAX_PAYLOAD_BYTES, TOKEN, ApiServer


def count(api: ApiServer, namespace: str) -> int:
    with api.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM eventix_task WHERE namespace = :ns"), {"ns": namespace}
            ).scalar_one()
        )


def task(namespace: str, **fields: Any) -> dict[str, Any]:
    return {"task": "t", "namespace": namespace, **fields}


@pytest.mark.parametrize(
    ("body", "where", "kind"),
    [
        ({"bogus": 1}, ["body", "bogus"], "extra_forbidden"),
        ({"priority": "high"}, ["body", "priority"], "int_parsing"),
        ({"args": "not a list"}, ["body", "args"], "list_type"),
        ({"kwargs": [1]}, ["body", "kwargs"], "dict_type"),
        ({"eta": "tomorrow"}, ["body", "eta"], "datetime_from_date_parsing"),
        ({"status": "sleeping"}, ["body", "status"], "literal_error"),
        ({"max_retries": -1}, ["body", "max_retries"], "greater_than_equal"),
        ({"priority": 2**40}, ["body", "priority"], "less_than_equal"),
        ({"uid": "not-a-uuid"}, ["body", "uid"], "value_error"),
        ({"task": ""}, ["body", "task"], "string_too_short"),
        ({"task": "nul\u0000here"}, ["body", "task"], "value_error"),
    ],
)
def test_invalid_task_is_422_naming_the_field(
    api: ApiServer, namespace: str, body: dict[str, Any], where: list[str], kind: str
) -> None:
    status, answer = api.request("POST", "/task", task(namespace, **body))
    assert status == 422, answer
    assert {"loc": where, "type": kind}.items() <= {
        "loc": answer["detail"][0]["loc"],
        "type": answer["detail"][0]["type"],
    }.items()
    assert answer["detail"][0]["msg"]
    assert count(api, namespace) == 0


def test_malformed_json_is_422(api: ApiServer, namespace: str) -> None:
    status, answer = api.request("POST", "/task", raw=b'{"task": "t", "namespace": ')
    assert status == 422
    assert answer["detail"][0]["type"] == "json_invalid"
    status, answer = api.request("POST", "/event", raw=b"[1, 2")
    assert status == 422
    assert count(api, namespace) == 0


def test_values_the_database_cannot_hold_are_422(api: ApiServer, namespace: str) -> None:
    # JSON that PostgreSQL's jsonb refuses, and NaN (not JSON at all).
    status, answer = api.request("POST", "/task", task(namespace, args=["a\u0000b"]))
    assert status == 422, answer
    assert answer["error_class"] == "InvalidRequest"
    status, answer = api.request(
        "POST", "/task", raw=b'{"task": "t", "namespace": "%s", "args": [NaN]}' % namespace.encode()
    )
    assert status == 422, answer
    assert "JSON" in answer["error_message"]
    assert count(api, namespace) == 0


def test_oversized_bodies_are_413(api: ApiServer, namespace: str) -> None:
    # Over the body limit: refused on its Content-Length, before it is read.
    huge = task(namespace, args=["x" * (3 * MAX_PAYLOAD_BYTES)])
    status, answer = api.request("POST", "/task", huge)
    assert status == 413
    assert "limit" in answer["detail"]
    # The same without Content-Length (chunked): refused while it arrives.
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    chunk = b'{"task": "t", "args": ["' + b"x" * (3 * MAX_PAYLOAD_BYTES) + b'"]}'
    conn.request(
        "POST",
        "/task",
        body=iter([chunk]),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    assert conn.getresponse().status == 413
    conn.close()
    # Under the body limit but args over EVENTIX_MAX_PAYLOAD_BYTES.
    status, answer = api.request(
        "POST", "/task", task(namespace, args=["x" * (MAX_PAYLOAD_BYTES + 10)])
    )
    assert status == 413
    assert answer["error_class"] == "PayloadTooLarge"
    assert count(api, namespace) == 0


def test_token_is_required_except_for_healthz(api: ApiServer, namespace: str) -> None:
    assert api.request("GET", "/healthz", token=None) == (200, {"status": "healthy"})
    status, answer = api.request("POST", "/task", task(namespace), token=None)
    assert status == 401
    assert answer == {"detail": "Not authenticated"}
    status, answer = api.request("POST", "/task", task(namespace), token="wrong")
    assert status == 401
    for path in ("/version", "/metrics", "/namespaces", "/openapi.json", f"/task/{uuid.uuid4()}"):
        assert api.request("GET", path, token=None)[0] == 401, path
    status, _ = api.request(
        "GET", "/version", token=None, headers={"Authorization": "Basic czNjcmV0LXRva2Vu"}
    )
    assert status == 401
    assert count(api, namespace) == 0


def test_bad_queries_and_paths(api: ApiServer, namespace: str) -> None:
    status, answer = api.request("GET", f"/tasks/next_scheduled?namespace={namespace}")
    assert status == 422
    assert answer["detail"][0]["loc"] == ["query", "worker_id"]
    status, answer = api.request("GET", f"/task/by_unique_key/{namespace}/k?stati=bogus")
    assert status == 422
    status, answer = api.request("PUT", "/task/not-a-uid", {"task": "t"})
    assert status == 422
    assert "UUID" in answer["error_message"]
    status, answer = api.request("GET", f"/task/{uuid.uuid4().hex}/reschedule?eta=never")
    assert status == 422
    status, answer = api.request("PUT", "/tasks/by_status", {"sort": "password"})
    assert status == 422
    assert "cannot sort by 'password'" in answer["error_message"]
    status, answer = api.request("PUT", "/tasks/by_status", {"filter": {"task": {"$regex": "."}}})
    assert status == 422
    status, answer = api.request("PUT", "/tasks/by_task", {"namespace": namespace})
    assert status == 422
    assert answer["detail"][0]["loc"] == ["body", "task"]
    status, answer = api.request("POST", "/event", {"name": "x", "unknown": 1})
    assert status == 422
    assert count(api, namespace) == 0
