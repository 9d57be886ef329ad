"""The operator's reconcile functions under the tenancy rule, on a real PostgreSQL (the same
functions its kopf handlers call; tests/e2e/test_tenancy.py runs them in the real operator)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from eventix_operator.db import schedules as schedule_db
from eventix_operator.db import triggers as trigger_db
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.reconcile import (
    Reconciled,
    apply_schedule_resource,
    enqueue_task,
    pool_spec,
    update_task,
)
from eventix_operator.operator.status import schedule_status
from eventix_operator.operator.triggers import apply_trigger
from eventix_operator.schedules.scheduler import backfill, fire_due
from eventix_operator.tenancy import SHARED, TenancyPolicy

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
NAMESPACED = TenancyPolicy("namespaced", {"*": ["shared"]})
LIMIT = 1_000_000


def ready(result: Reconciled) -> tuple[str, str]:
    [cond] = [c for c in result.status["conditions"] if c["type"] == "Ready"]
    return cond["status"], cond["reason"]


def rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT uid::text, namespace, unique_key, k8s_namespace, k8s_name, args "
                "FROM eventix_task ORDER BY created_at, k8s_name"
            )
        )
        return [dict(r) for r in found.mappings()]


def task(
    engine: Engine,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    policy: TenancyPolicy = NAMESPACED,
    previous: dict[str, Any] | None = None,
    generation: int = 1,
) -> Reconciled:
    ref = ResourceRef("eventixtasks", namespace, name, f"uid-{namespace}-{name}")
    return enqueue_task(
        engine, ref, spec, generation=generation, previous=previous, payload_limit=LIMIT,
        now=NOW, tenancy=policy,
    )  # fmt: skip


def test_a_task_naming_another_namespaces_queue_is_refused_and_enqueues_nothing(
    engine: Engine,
) -> None:
    result = task(engine, "team-a", "steal", {"task": "t", "queue": "team-b"})
    assert ready(result) == ("False", "QueueNotAllowed")
    stalled = next(c for c in result.status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "QueueNotAllowed")
    message = "namespace 'team-a' may not use queue 'team-b'; it may use team-a, team-a.*, shared"
    assert message in result.status["conditions"][0]["message"]
    assert result.events == [("Warning", "QueueNotAllowed", result.events[0][2])]
    assert message in result.events[0][2]
    assert "taskUid" not in result.status
    assert rows(engine) == []
    # A change of a mutable field judges it afresh (and enqueues nothing again).
    changed = update_task(
        engine, ResourceRef("eventixtasks", "team-a", "steal", "uid-team-a-steal"),
        {"task": "t", "queue": "team-b", "priority": 3}, generation=2, previous=result.status,
        payload_limit=LIMIT, now=NOW, tenancy=NAMESPACED,
    )  # fmt: skip
    assert ready(changed) == ("False", "QueueNotAllowed")
    assert changed.status["observedGeneration"] == 2
    assert rows(engine) == []
    # The same resource under a policy that allows it (an operator restarted with other
    # settings resumes it): enqueued.
    allowed = task(engine, "team-a", "steal", {"task": "t", "queue": "team-b"}, policy=SHARED)
    assert allowed.status["taskUid"]
    assert [r["namespace"] for r in rows(engine)] == ["team-b"]


def test_a_task_gets_its_namespaces_queue_or_one_it_may_use(engine: Engine) -> None:
    task(engine, "team-a", "own", {"task": "t"})
    task(engine, "team-a", "below", {"task": "t", "queue": "team-a.reports"})
    task(engine, "team-a", "granted", {"task": "t", "queue": "shared"})
    task(engine, "team-a", "shared-mode", {"task": "t"}, policy=SHARED)
    assert {r["k8s_name"]: r["namespace"] for r in rows(engine)} == {
        "own": "team-a",
        "below": "team-a.reports",
        "granted": "shared",
        "shared-mode": "default",
    }


def test_a_unique_key_never_reaches_across_namespaces(engine: Engine) -> None:
    """Both namespaces may use the queue `shared`; each keeps its own pending task."""
    spec = {"task": "t", "queue": "shared", "uniqueKey": "nightly", "delaySeconds": 3600}
    a = task(engine, "team-a", "first", {**spec, "args": [1]})
    b = task(engine, "team-b", "intruder", {**spec, "args": [666]})
    a2 = task(engine, "team-a", "second", {**spec, "args": [2]})
    assert a.status["taskUid"] != b.status["taskUid"]
    assert a2.status["taskUid"] == a.status["taskUid"]  # the same namespace merges
    assert [e[1] for e in a2.events] == ["Merged"]
    assert [e[1] for e in b.events] == ["Enqueued"]
    found = {r["uid"]: (r["k8s_namespace"], r["args"]) for r in rows(engine)}
    assert found == {a.status["taskUid"]: ("team-a", [2]), b.status["taskUid"]: ("team-b", [666])}


def schedule(
    engine: Engine, name: str, template: dict[str, Any], generation: int = 1
) -> Reconciled:
    ref = ResourceRef("eventixschedules", "team-a", name, f"uid-{name}")
    spec = {"schedule": "*/2 * * * * *", "template": template}
    return apply_schedule_resource(
        engine, ref, spec, generation=generation, created_at=NOW, previous=None, now=NOW,
        tenancy=NAMESPACED,
    )  # fmt: skip


def test_a_schedule_is_refused_as_a_whole_and_fires_nothing_until_fixed(engine: Engine) -> None:
    result = schedule(engine, "nightly", {"task": "t", "queue": "team-b"})
    assert ready(result) == ("False", "QueueNotAllowed")
    assert [e[:2] for e in result.events] == [("Warning", "QueueNotAllowed")]
    with engine.begin() as conn:
        fire_due(conn, NOW + timedelta(minutes=1), payload_limit=LIMIT)
        record = schedule_db.get_schedule(conn, "uid-nightly")
        history = schedule_db.schedule_history(conn, ["uid-nightly"])["uid-nightly"]
    assert rows(engine) == []
    assert record is not None
    assert (record.error_reason, record.next_tick) == ("QueueNotAllowed", None)
    # Status sync says the same as the handler.
    synced = schedule_status(record, history, previous=None, now=NOW)
    assert ready(Reconciled(synced)) == ("False", "QueueNotAllowed")
    assert synced["nextScheduleTime"] is None
    # Nor does a backfill (the CLI's) make its runs.
    with engine.begin() as conn, pytest.raises(ValueError, match="does not fire: namespace"):
        backfill(conn, record, NOW, NOW + timedelta(minutes=1), payload_limit=LIMIT)

    # Fixed: it fires, into the namespace's own queue when it names none.
    fixed = schedule(engine, "nightly", {"task": "t"}, generation=2)
    assert fixed.events == []
    with engine.begin() as conn:
        fire_due(conn, NOW + timedelta(seconds=3), payload_limit=LIMIT)
    assert {r["namespace"] for r in rows(engine)} == {"team-a"}
    with engine.connect() as conn:
        record = schedule_db.get_schedule(conn, "uid-nightly")
    assert record is not None
    assert (record.error, record.error_reason, record.template["queue"]) == (None, None, "team-a")


def trigger(
    engine: Engine, namespace: str, name: str, template: dict[str, Any], policy: TenancyPolicy
) -> Reconciled:
    ref = ResourceRef("eventixtriggers", namespace, name, f"uid-{namespace}-{name}")
    spec = {"eventName": "order", "template": template}
    return apply_trigger(engine, ref, spec, generation=1, previous=None, now=NOW, tenancy=policy)


def test_a_trigger_is_scoped_to_its_namespaces_queues(engine: Engine) -> None:
    trigger(engine, "team-a", "ship", {"task": "t", "queue": "default"}, NAMESPACED)
    trigger(engine, "team-b", "ship", {"task": "t", "queue": "team-b.x"}, NAMESPACED)
    trigger(engine, "team-c", "ship", {"task": "t"}, SHARED)
    refused = trigger(engine, "team-d", "steal", {"task": "t", "queue": "team-a"}, NAMESPACED)
    assert ready(refused) == ("False", "QueueNotAllowed")
    assert [e[:2] for e in refused.events] == [("Warning", "QueueNotAllowed")]
    with engine.connect() as conn:
        assert trigger_db.get_trigger(conn, "uid-team-d-steal") is None

        def seen(queue: str) -> list[str]:
            found = trigger_db.list_triggers_for_event(conn, "order", {}, queue)
            return [m.trigger.name for m in found]

        assert seen("team-a") == ["team-a/ship", "team-c/ship"]
        assert seen("team-a.eu") == ["team-a/ship", "team-c/ship"]
        assert seen("shared") == ["team-a/ship", "team-b/ship", "team-c/ship"]
        assert seen("team-b") == ["team-b/ship", "team-c/ship"]
        assert seen("elsewhere") == ["team-c/ship"]


def test_a_pool_without_queues_watches_what_its_namespaces_tasks_get() -> None:
    spec = {"scaleTargetRef": {"name": "w"}}
    assert pool_spec(spec, "team-a", NAMESPACED)["queues"] == ["team-a"]
    assert pool_spec(spec, "team-a", SHARED)["queues"] == ["default"]
    assert pool_spec({**spec, "queues": ["team-b"]}, "team-a", NAMESPACED)["queues"] == ["team-b"]
