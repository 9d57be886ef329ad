"""An outcome the database cannot store, written back by an Eventix worker over
HTTP among 200 ordinary write-backs that share its statements: the 200 are
recorded, the bad one ends `error` saying why, and the server goes on serving."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from eventix_operator.db.enqueue import NewTask, insert_tasks
from tests.api.conftest import ApiServer

ORDINARY = 200
THREADS = 32
ERROR_DOC = {"error_class": "ValueError", "error_payload": {}, "error_status_code": 500}


def bad_write(kind: str, task: dict[str, Any]) -> dict[str, Any]:
    done = {**task, "status": "done", "worker_id": None, "worker_expires": None}
    return {
        "nul": {**done, "result": {"a": [1, 2, "a\x00b"]}},
        "nul_key": {**done, "result": {"k\x00": 1}},
        "nan": {**done, "result": [1.0, float("nan")]},
        "inf": {**done, "result": {"x": float("inf")}},
        "large": {**done, "result": "x" * 150_000},  # under the body limit, over the payload's
        "kwargs_nul": {**done, "kwargs": {"x": "a\x00b"}, "result": 1},
        "poison": {**done, "result": "poison"},  # refused by a CHECK constraint the test adds
        "error_nul": {
            **done, "status": "error",
            "result": {**ERROR_DOC, "error_message": "a\x00b", "error_traceback": []},
        },
        "traceback_nul": {
            **done, "status": "error",
            "result": {**ERROR_DOC, "error_message": "m", "error_traceback": ["at \x00 here"]},
        },
    }[kind]  # fmt: skip


#: (kind, what the stored error's message says)
CASES = [
    ("nul", 'contains a character PostgreSQL cannot store (NUL, \\x00) at result["a"][2]'),
    ("nul_key", "(NUL, \\x00) in the key 'k\\x00' at result"),
    ("nan", "not JSON-serialisable: Out of range float values are not JSON compliant"),
    ("inf", "not JSON-serialisable: Out of range float values are not JSON compliant"),
    ("large", "over the 100000 byte limit"),
    ("kwargs_nul", 'kwargs of t contains a character PostgreSQL cannot store (NUL, \\x00) at kw'),
    ("poison", "the database refused this write-back: new row for relation"),
    ("error_nul", "a\\x00b"),
    ("traceback_nul", "m"),
]  # fmt: skip


@pytest.fixture
def poison_refused(api: ApiServer) -> Iterator[None]:
    """A constraint a DBA might add: the real server refuses one result value, a
    refusal no check in Python foresees."""
    with api.engine.begin() as conn:
        conn.execute(text(
            "ALTER TABLE eventix_task ADD CONSTRAINT no_poison "
            "CHECK (result IS DISTINCT FROM '\"poison\"'::jsonb)"
        ))  # fmt: skip
    yield
    with api.engine.begin() as conn:
        conn.execute(text("ALTER TABLE eventix_task DROP CONSTRAINT no_poison"))


@pytest.mark.usefixtures("poison_refused")
@pytest.mark.parametrize(("kind", "message"), CASES, ids=[k for k, _ in CASES])
def test_a_bad_write_back_fails_alone(
    api: ApiServer, namespace: str, kind: str, message: str
) -> None:
    with api.engine.begin() as conn:
        tasks = [NewTask("t", args=(i,), kwargs={"x": i}, queue=namespace) for i in range(201)]
        insert_tasks(conn, tasks, payload_limit=10**6)
    path = f"/tasks/next_scheduled?worker_id=http&namespace={namespace}"
    with ThreadPoolExecutor(THREADS) as pool:
        claimed = [body for status, body in pool.map(lambda _: api.request("GET", path), tasks)]
    bad_uid = next(t["uid"] for t in claimed if t["args"] == [ORDINARY])
    writes = [
        bad_write(kind, t)
        if t["uid"] == bad_uid
        else {**t, "status": "done", "result": t["args"][0]}
        for t in claimed
    ]
    with ThreadPoolExecutor(THREADS) as pool:
        answers = list(pool.map(lambda w: api.request("PUT", f"/task/{w['uid']}", w), writes))

    assert [status for status, _ in answers] == [200] * len(writes), answers
    with api.engine.connect() as conn:
        counts = dict(conn.execute(
            text("SELECT status, count(*) FROM eventix_task WHERE namespace = :ns GROUP BY status"),
            {"ns": namespace},
        ).all())  # fmt: skip
    assert counts == {"done": ORDINARY, "error": 1}
    status, stored = api.request("GET", f"/task/{bad_uid}")
    assert status == 200
    assert stored["status"] == "error"
    assert message in stored["result"]["error_message"], stored["result"]
    if kind == "kwargs_nul":
        assert 'at kwargs["x"]' in stored["result"]["error_message"]
        assert stored["kwargs"] == {"x": ORDINARY}  # what could not be stored was not
    if kind == "traceback_nul":
        assert "at \\x00 here" in stored["result"]["error_traceback"]
    # the server goes on: a new task is claimed and written back
    assert api.request("POST", "/task", {"task": "t", "namespace": namespace})[0] == 200
    status, next_task = api.request("GET", path)
    assert status == 200
    status, _ = api.request("PUT", f"/task/{next_task['uid']}", {**next_task, "status": "done"})
    assert status == 200
