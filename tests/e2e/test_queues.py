"""EventixQueue resources through a real API server and operator: the settings row,
pause through the spec, status with the queue's figures, and deletion."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from sqlalchemy import create_engine, text

from eventix_operator import enqueue_many
from tests.e2e.conftest import Cluster
from tools.kube.controlplane import ensure_binaries

pytestmark = pytest.mark.kube
QUEUES = "eventixqueues"


def test_an_eventix_queue_configures_its_queue(cluster: Cluster, e2e_database: str) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    engine = create_engine(e2e_database)
    try:
        with engine.begin() as conn:
            enqueue_many([{"task": "tests.record", "queue": queue} for _ in range(3)],
                         connection=conn)  # fmt: skip
        cluster.create(QUEUES, "limits", {"queue": queue, "paused": True, "concurrencyLimit": 3,
                                          "rateLimit": {"count": 10, "perSeconds": 1}})  # fmt: skip

        def row() -> tuple[bool, int | None, int | None] | None:
            with engine.connect() as conn:
                found = conn.execute(
                    text("SELECT paused, concurrency_limit, rate_count FROM eventix_queue "
                         "WHERE name = :q AND k8s_name = 'limits'"), {"q": queue},
                ).first()  # fmt: skip
            return None if found is None else (found[0], found[1], found[2])

        assert cluster.wait("the settings row", row) == (True, 3, 10)
        status = cluster.wait(
            "status with figures",
            lambda: (s := cluster.status(QUEUES, "limits")).get("phase") == "Paused" and s,
        )
        assert (status["queue"], status["depth"], status["running"]) == (queue, 3, 0)
        assert status["observedGeneration"] == 1
        ready = {c["type"]: c for c in status["conditions"]}["Ready"]
        assert ready["status"] == "True"

        kubectl = ensure_binaries("kubectl")["kubectl"]
        listed = subprocess.run(
            [str(kubectl), "get", "equeue", "-n", cluster.namespace],
            capture_output=True, text=True, timeout=30, env=cluster.api.env(),
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        header, line = listed.stdout.splitlines()[:2]
        assert header.split()[:5] == ["NAME", "QUEUE", "PAUSED", "LIMIT", "DUE"]
        assert line.split()[:5] == ["limits", queue, "true", "3", "3"]

        cluster.patch(QUEUES, "limits", {"paused": False})
        assert cluster.wait("resumed", lambda: row() == (False, 3, 10))
        # The status sync's conditions say which spec they are, as the handler's write does.
        status = cluster.wait(
            "the status of generation 2",
            lambda: (s := cluster.status(QUEUES, "limits")).get("phase") == "Active" and s,
        )
        assert status["observedGeneration"] == 2
        assert {c.get("observedGeneration") for c in status["conditions"]} == {2}
        cluster.delete(QUEUES, "limits")
        cluster.wait("the row removed", lambda: row() is None)
    finally:
        engine.dispose()


def test_invalid_settings_are_refused_by_the_api_server(cluster: Cluster) -> None:
    from kubernetes.client.exceptions import ApiException

    for spec in ({"concurrencyLimit": 0}, {"rateLimit": {"count": 5}},
                 {"rateLimit": {"count": 5, "perSeconds": 0}}, {"queue": "a b"}):  # fmt: skip
        with pytest.raises(ApiException) as refused:
            cluster.create(QUEUES, f"bad-{uuid.uuid4().hex[:6]}", spec)
        assert refused.value.status == 422, spec
