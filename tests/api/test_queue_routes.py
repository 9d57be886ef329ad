"""Queue settings over HTTP: not Eventix routes, behind the same token."""

from __future__ import annotations

from sqlalchemy import text

from tests.api.conftest import ApiServer


def test_put_get_pause_resume_and_list(api: ApiServer, namespace: str) -> None:
    spec = {"concurrencyLimit": 3, "rateLimit": {"count": 10, "perSeconds": 1},
            "retention": {"succeeded": 60}}  # fmt: skip
    status, body = api.request("PUT", f"/queues/{namespace}", spec)
    assert status == 200, body
    assert body["concurrencyLimit"] == 3
    assert body["rateLimit"] == {"count": 10, "perSeconds": 1.0}
    assert body["retention"] == {"succeeded": 60, "failed": None}
    assert (body["paused"], body["due"], body["running"]) == (False, 0, 0)

    status, body = api.request("POST", f"/queues/{namespace}/pause")
    assert (status, body["paused"], body["concurrencyLimit"]) == (200, True, 3)
    with api.engine.connect() as conn:
        paused = conn.execute(text("SELECT paused FROM eventix_queue WHERE name = :n"),
                              {"n": namespace}).scalar_one()  # fmt: skip
    assert paused is True
    status, body = api.request("POST", f"/queues/{namespace}/resume")
    assert (status, body["paused"]) == (200, False)

    status, listed = api.request("GET", "/queues")
    assert status == 200
    assert namespace in [q["name"] for q in listed]
    assert api.request("GET", f"/queues/{namespace}")[1]["rateLimit"]["count"] == 10


def test_bad_settings_and_unknown_queues(api: ApiServer, namespace: str) -> None:
    assert api.request("GET", f"/queues/{namespace}")[0] == 404
    assert api.request("PUT", f"/queues/{namespace}", {"concurrencyLimit": 0})[0] == 422
    assert api.request("PUT", f"/queues/{namespace}", {"rateLimit": {"count": 5}})[0] == 422
    assert api.request("PUT", f"/queues/{namespace}", {"pause": True})[0] == 422


def test_the_routes_need_the_token(api: ApiServer, namespace: str) -> None:
    assert api.request("GET", "/queues", token=None)[0] == 401
    assert api.request("POST", f"/queues/{namespace}/pause", token=None)[0] == 401
