"""EventixQueue reconciling on a real PostgreSQL: the settings row, tenancy, one
resource per queue, deletion, and the status the sync computes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from eventix_operator import enqueue_many
from eventix_operator.db import queues as queue_db
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.queues import apply_queue, delete_queue_resource
from eventix_operator.operator.reconcile import Reconciled
from eventix_operator.operator.status import queue_status
from eventix_operator.tenancy import SHARED, TenancyPolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAMESPACED = TenancyPolicy("namespaced", {"*": ["shared"]})


def resource(namespace: str, name: str) -> ResourceRef:
    return ResourceRef("eventixqueues", namespace, name, str(uuid.uuid4()))


def apply(engine: Engine, ref: ResourceRef, spec: dict[str, Any],
          policy: TenancyPolicy = NAMESPACED, generation: int = 1) -> Reconciled:  # fmt: skip
    return apply_queue(engine, ref, spec, generation=generation, previous=None, now=NOW,
                       tenancy=policy)  # fmt: skip


def reason(result: Reconciled) -> str | None:
    ready = [c for c in result.status.get("conditions", []) if c["type"] == "Ready"]
    return ready[0]["reason"] if ready else None


def get(engine: Engine, name: str) -> queue_db.Queue | None:
    with engine.connect() as conn:
        return queue_db.get_queue(conn, name)


def test_a_resource_writes_its_queues_settings_and_its_deletion_removes_them(
    engine: Engine,
) -> None:
    ref = resource("team-a", "team-a.reports")
    spec = {"paused": True, "concurrencyLimit": 3, "rateLimit": {"count": 10, "perSeconds": 1},
            "retention": {"succeededSeconds": 60}}  # fmt: skip
    result = apply(engine, ref, spec)
    assert result.status == {"observedGeneration": 1, "queue": "team-a.reports"}
    assert [e[1] for e in result.events] == ["Paused"]
    queue = get(engine, "team-a.reports")
    assert queue is not None
    assert (queue.paused, queue.concurrency_limit, queue.rate_count, queue.rate_per_seconds,
            queue.retain_succeeded_seconds, queue.retain_failed_seconds) == (
        True, 3, 10, 1.0, 60, None)  # fmt: skip
    assert (queue.k8s_namespace, queue.k8s_name, queue.k8s_uid) == ("team-a", ref.name, ref.uid)
    # A replay changes nothing; a new generation replaces every setting.
    apply(engine, ref, spec)
    result = apply(engine, ref, {"concurrencyLimit": 2}, generation=2)
    assert [e[1] for e in result.events] == ["Resumed"]
    queue = get(engine, "team-a.reports")
    assert queue is not None
    assert (queue.paused, queue.concurrency_limit, queue.rate_count) == (False, 2, None)
    assert delete_queue_resource(engine, ref)
    assert get(engine, "team-a.reports") is None
    assert not delete_queue_resource(engine, ref)


def test_a_namespace_configures_only_queues_it_may_use(engine: Engine) -> None:
    ref = resource("team-a", "steal")
    result = apply(engine, ref, {"queue": "team-b", "paused": True})
    assert reason(result) == "QueueNotAllowed"
    assert get(engine, "team-b") is None
    assert reason(apply(engine, ref, {"queue": "team-b"}, policy=SHARED)) is None
    assert get(engine, "team-b") is not None


def test_a_queue_has_one_resource(engine: Engine) -> None:
    first, second = resource("team-a", "one"), resource("team-a", "two")
    apply(engine, first, {"queue": "shared", "concurrencyLimit": 1})
    result = apply(engine, second, {"queue": "shared", "paused": True})
    assert reason(result) == "QueueConflict"
    assert "team-a/one" in result.events[0][2]
    queue = get(engine, "shared")
    assert queue is not None
    assert (queue.paused, queue.k8s_name) == (False, "one")
    # Deleting the refused one leaves the other's settings.
    assert not delete_queue_resource(engine, second)
    assert get(engine, "shared") is not None


def test_status_shows_the_queues_figures(engine: Engine) -> None:
    ref = resource("team-a", "team-a")
    apply(engine, ref, {"concurrencyLimit": 2})
    with engine.begin() as conn:
        enqueue_many([{"task": "t", "queue": "team-a"} for _ in range(3)], connection=conn)
    queue = get(engine, "team-a")
    assert queue is not None
    status = queue_status(queue, previous=None, now=NOW)
    assert (status["phase"], status["queue"], status["depth"], status["running"]) == (
        "Active", "team-a", 3, 0)  # fmt: skip
    assert status["oldestDueAgeSeconds"] == 0
    ready = {c["type"]: c["status"] for c in status["conditions"]}
    assert ready == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
