"""EventixQueue reconciling on a real PostgreSQL: the settings row, tenancy, one
resource per queue, deletion, and the status the sync computes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from sqlalchemy import Engine

from eventix_operator import enqueue_many
from eventix_operator.db import queues as queue_db
from eventix_operator.db import statements
from eventix_operator.operator.kube import Kube, ResourceRef
from eventix_operator.operator.queues import apply_queue, delete_queue_resource
from eventix_operator.operator.reconcile import Reconciled
from eventix_operator.operator.status import queue_status
from eventix_operator.operator.sync import QUEUE_FIGURES_EVERY, StatusSync
from eventix_operator.resources import GROUP, VERSION
from eventix_operator.tenancy import SHARED, TenancyPolicy
from tools.kube.controlplane import KubeAPI

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NAMESPACED = TenancyPolicy("namespaced", {"*": ["shared"]})


QUEUES = "eventixqueues"


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


@pytest.mark.kube
def test_the_status_sync_writes_the_generation_the_row_holds(
    engine: Engine, kube_api: KubeAPI, quiet_namespace: str
) -> None:
    """The sync's writes say which spec their settings are: observedGeneration, at
    the top and in every condition, is the generation the operator applied, and
    follows a change of the spec (a real API server: its generation, its schema)."""
    api = kube_api.new_client()
    custom = k8s.CustomObjectsApi(api)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EventixQueue",
            "metadata": {"name": "mail"}, "spec": {"concurrencyLimit": 2}}  # fmt: skip
    created = custom.create_namespaced_custom_object(GROUP, VERSION, quiet_namespace, QUEUES, body)
    ref = ResourceRef(QUEUES, quiet_namespace, "mail", created["metadata"]["uid"])
    ticks = iter(NOW + n * QUEUE_FIGURES_EVERY for n in range(10))  # figures read at each pass
    sync = StatusSync(engine, Kube(api), clock=lambda: next(ticks))

    def applied_and_synced(found: dict[str, Any]) -> dict[str, Any]:
        generation = int(found["metadata"]["generation"])
        apply(engine, ref, found["spec"], policy=SHARED, generation=generation)
        assert sync.sync_once() == 1
        got = custom.get_namespaced_custom_object_status(
            GROUP, VERSION, quiet_namespace, QUEUES, "mail"
        )
        return dict(got["status"])

    try:
        status = applied_and_synced(created)
        assert (status["phase"], status["observedGeneration"]) == ("Active", 1)
        assert {c["type"]: c.get("observedGeneration") for c in status["conditions"]} == {
            "Ready": 1, "Reconciling": 1, "Stalled": 1}  # fmt: skip
        changed = custom.patch_namespaced_custom_object(
            GROUP, VERSION, quiet_namespace, QUEUES, "mail", {"spec": {"paused": True}}
        )
        assert changed["metadata"]["generation"] == 2
        status = applied_and_synced(changed)
        assert (status["phase"], status["observedGeneration"]) == ("Paused", 2)
        assert {c.get("observedGeneration") for c in status["conditions"]} == {2}
        # A change through the CLI keeps the generation of the spec the row holds.
        with engine.begin() as conn:
            queue_db.resume(conn, "mail")
            stored = queue_db.get_queue(conn, "mail")
        assert stored is not None
        assert stored.k8s_generation == 2
    finally:
        sync.pool.shutdown()
        api.close()


QUEUE_MANIFESTS = """
apiVersion: eventix.io/v1alpha1
kind: EventixQueue
metadata: {name: mail}
spec: {paused: PAUSED, concurrencyLimit: 1, retention: {failedSeconds: 60}}
---
apiVersion: eventix.io/v1alpha1
kind: EventixTask
metadata: {name: first}
spec: {task: t, queue: mail}
---
apiVersion: eventix.io/v1alpha1
kind: EventixTask
metadata: {name: second}
spec: {task: t, queue: mail}
"""


def test_eventix_local_applies_queue_manifests_as_the_operator_does(
    engine: Engine, tmp_path: Path
) -> None:
    """`eventix local --manifests` writes an EventixQueue's settings with the
    operator's mapping (the queue is the resource's name here), so its worker claims
    nothing of a paused queue and at most the limit of a limited one."""
    from eventix_operator.cli.local import apply_manifests

    def claim() -> list[str]:
        params = {"queues": ["mail"], "limit": 5, "worker_ids": ["w"], "lease_seconds": 30}
        with engine.begin() as conn:
            return [row[0] for row in conn.execute(statements.CLAIM_TASKS, params)]

    manifest = tmp_path / "mail.yaml"
    manifest.write_text(QUEUE_MANIFESTS.replace("PAUSED", "true"))
    apply_manifests(engine, tmp_path, payload_limit=1_000_000)
    apply_manifests(engine, tmp_path, payload_limit=1_000_000)  # again: nothing changes
    queue = get(engine, "mail")
    assert queue is not None
    assert (queue.paused, queue.concurrency_limit, queue.retain_failed_seconds) == (True, 1, 60)
    assert (queue.k8s_name, queue.k8s_uid, queue.k8s_generation) == (
        "mail", "local:default/mail", 1)  # fmt: skip
    assert queue.due == 2
    assert claim() == []
    manifest.write_text(QUEUE_MANIFESTS.replace("PAUSED", "false"))
    apply_manifests(engine, tmp_path, payload_limit=1_000_000)
    assert len(claim()) == 1  # the limit holds the other
    # A second EventixQueue of the same queue is refused, and nothing of the run is written.
    (tmp_path / "other.yaml").write_text(
        "apiVersion: eventix.io/v1alpha1\nkind: EventixQueue\n"
        "metadata: {name: other}\nspec: {queue: mail, paused: true}\n"
    )
    with pytest.raises(ValueError, match="configured by another EventixQueue"):
        apply_manifests(engine, tmp_path, payload_limit=1_000_000)
    queue = get(engine, "mail")
    assert queue is not None
    assert (queue.paused, queue.k8s_name) == (False, "mail")
