"""Eventix's own client, unmodified, against the real server: the whole life of a
task (delay, TaskWorker, result), unique keys, lookups by unique key, events."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import text

from eventix_operator.db.triggers import upsert_trigger
from tests.api.conftest import ApiServer

#: Run once with the server connected directly, once through PgBouncer (transaction mode).
pytestmark = pytest.mark.parametrize(
    "api_connection", ["direct", "pgbouncer"], indirect=True, scope="module"
)


def test_client_life_cycle(api: ApiServer, namespace: str) -> None:
    out = api.eventix("lifecycle.py", EVENTIX_NAMESPACE=namespace)

    assert out["posted"]["status"] == "scheduled"
    assert out["posted"]["namespace"] == namespace
    assert len(out["posted"]["uid"]) == 32  # Eventix's spelling of a uid
    # A second delay with the same unique key updated the pending task: newest args.
    assert out["unique"] == {"same_uid": True, "args": ["a", 2]}
    assert out["by_unique_key"]["status"] == "scheduled"
    assert out["missing_key"] == "NoTaskFoundForUniqueKey"

    assert out["add"]["status"] == "done"
    assert out["add"]["result"] == 5
    assert out["keyed"]["status"] == "done"
    assert out["keyed"]["result"] == 2
    # The failing task ran twice (max_retries=1), then failed for good, with
    # Eventix's error document as its result and no retries left.
    flaky = out["flaky"]
    assert flaky["status"] == "error"
    assert flaky["max_retries"] == 0
    assert flaky["result"]["error_class"] == "ValueError"
    assert flaky["result"]["error_message"] == "boom"

    # The rows are the queue's: native fields tell the same story.
    with api.engine.connect() as conn:
        rows = {
            r.task: r
            for r in conn.execute(
                text(
                    "SELECT task, status, attempts, max_retries, error_eta_inc, error, result "
                    "FROM eventix_task WHERE namespace = :ns"
                ),
                {"ns": namespace},
            )
        }
    assert rows["flaky"].attempts == 2
    assert rows["flaky"].max_retries == 1  # the total, kept fixed
    assert rows["flaky"].error_eta_inc == 1  # the row's own backoff, not Eventix's doubling
    assert rows["flaky"].error["type"] == "ValueError"
    assert rows["add"].result == 5
    assert rows["add"].attempts == 1


def test_event_runs_code_and_table_triggers(api: ApiServer, namespace: str) -> None:
    # Each trigger sees only this test's queue: the module's two runs share a database.
    with api.engine.begin() as conn:
        upsert_trigger(
            conn,
            uid=f"uid-{namespace}",
            name="invoice",
            event_name="order.created",
            template={
                "task": "write_invoice",
                "args": ["{{ payload.order }}"],
                "kwargs": {"customer": "{{ payload.customer.name }}", "fixed": 1},
                "unique_key": "{{ payload.order }}",
            },
            queue_scope=[namespace],
        )
        upsert_trigger(
            conn,
            uid=f"skip-{namespace}",
            name="only-big",
            event_name="order.created",
            filter={"size": "big"},
            template={"task": "big_order"},
            queue_scope=[namespace],
        )
    payload = {"order": 7, "customer": {"name": "Ada"}}
    tasks = api.eventix("events.py", json.dumps(payload), EVENTIX_NAMESPACE=namespace)
    by_task = {t["task"]: t for t in tasks}
    # OrderTrigger (code) and invoice (table) fired; PickyTrigger ignored the event,
    # BrokenTrigger failed, only-big's filter did not match: the others still ran.
    assert sorted(by_task) == ["ship_order", "write_invoice"]
    ship = by_task["ship_order"]
    assert ship["args"] == [7]
    assert ship["kwargs"] == {"by": "alice"}
    invoice = by_task["write_invoice"]
    assert invoice["args"] == [7]
    assert invoice["kwargs"] == {"customer": "Ada", "fixed": 1}
    for t in tasks:  # from the event, as Eventix does
        assert t["namespace"] == namespace
        assert t["priority"] == -3
        assert t["operator"] == "alice"
        assert t["status"] == "scheduled"

    express = api.eventix(
        "events.py", json.dumps({**payload, "express": True}), EVENTIX_NAMESPACE=namespace
    )
    assert sorted(t["task"] for t in express) == ["express_order", "ship_order", "write_invoice"]
    # The invoice's unique key merged the second event's task into the first.
    invoice_uids = {t["uid"] for t in [*tasks, *express] if t["task"] == "write_invoice"}
    assert len(invoice_uids) == 1

    # Counters: table triggers' rows (written about once a second), code triggers in /metrics.
    deadline = time.monotonic() + 10
    while True:
        with api.engine.connect() as conn:
            counts = {
                r.name: (r.fired_count, r.ignored_count, r.failed_count)
                for r in conn.execute(
                    text(
                        "SELECT name, fired_count, ignored_count, failed_count "
                        "FROM eventix_trigger WHERE uid IN (:a, :b)"
                    ),
                    {"a": f"uid-{namespace}", "b": f"skip-{namespace}"},
                )
            }
        if counts.get("invoice") == (2, 0, 0) and counts.get("only-big") == (0, 2, 0):
            break
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
    status, metrics = api.request("GET", "/metrics")
    assert status == 200
    assert metrics["triggers"]["BrokenTrigger"]["failed"] >= 2
    assert metrics["triggers"]["PickyTrigger"]["ignored"] >= 1
