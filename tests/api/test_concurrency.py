"""Concurrent requests share statements on the server (inserts and claims are
coalesced); each request still gets its own, right answer."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from tests.api.conftest import ApiServer

#: Run once with the server connected directly, once through PgBouncer (transaction mode).
pytestmark = pytest.mark.parametrize(
    "api_connection", ["direct", "pgbouncer"], indirect=True, scope="module"
)

THREADS = 32


def test_concurrent_posts_each_get_their_answer(api: ApiServer, namespace: str) -> None:
    taken = uuid.uuid4().hex
    assert (
        api.request("POST", "/task", {"task": "t", "uid": taken, "namespace": namespace})[0] == 200
    )
    bodies: list[dict[str, Any]] = []
    for n in range(200):
        if n % 10 == 0:
            bodies.append({"task": "t", "namespace": namespace, "uid": taken})  # exists: 409
        elif n % 10 == 1:
            bodies.append({"task": "t", "namespace": namespace, "unique_key": "k", "args": [n]})
        else:
            bodies.append({"task": "t", "namespace": namespace, "args": [n]})
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda b: api.request("POST", "/task", b), bodies))

    merged: set[str] = set()
    for body, (status, answer) in zip(bodies, answers, strict=True):
        if body.get("uid") == taken:
            assert status == 409
            assert answer["error_class"] == "AlreadyExists"
        elif "unique_key" in body:
            assert status == 200
            merged.add(answer["uid"])
        else:
            assert status == 200
            assert answer["args"] == body["args"]
    assert len(merged) == 1  # every keyed post landed on one pending task
    with api.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT count(*) FROM eventix_task WHERE namespace = :ns"), {"ns": namespace}
        ).scalar_one()
    assert rows == 1 + 1 + 160


def test_concurrent_claims_hand_each_task_to_one_request(api: ApiServer, namespace: str) -> None:
    for n in range(40):
        api.request("POST", "/task", {"task": "t", "namespace": namespace, "args": [n]})
    path = f"/tasks/next_scheduled?worker_id=default&namespace={namespace}"
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda _: api.request("GET", path), range(60)))
    claimed = [a for s, a in answers if s == 200]
    assert sorted(s for s, _ in answers) == [200] * 40 + [204] * 20
    assert Counter(a["uid"] for a in claimed).most_common(1)[0][1] == 1
    assert sorted(a["args"][0] for a in claimed) == list(range(40))
    assert {a["status"] for a in claimed} == {"processing"}


def test_concurrent_write_backs_one_winner_per_revision(api: ApiServer, namespace: str) -> None:
    for n in range(20):
        api.request("POST", "/task", {"task": "t", "namespace": namespace, "args": [n]})
    path = f"/tasks/next_scheduled?worker_id=w&namespace={namespace}"
    claimed = [api.request("GET", path)[1] for _ in range(20)]
    # Each task written back twice at once with the revision read: one write wins.
    writes = [
        (task["uid"], {**task, "status": "done", "result": attempt})
        for task in claimed
        for attempt in ("first", "second")
    ]
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda w: api.request("PUT", f"/task/{w[0]}", w[1]), writes))
    by_uid: dict[str, list[int]] = {}
    for (uid, _), (status, _) in zip(writes, answers, strict=True):
        by_uid.setdefault(uid, []).append(status)
    assert all(sorted(s) == [200, 409] for s in by_uid.values()), by_uid
    for task in claimed:
        status, stored = api.request("GET", f"/task/{task['uid']}")
        assert stored["status"] == "done"
        assert stored["result"] in ("first", "second")
        assert stored["revision"] == str(int(task["revision"]) + 1)
