"""EventixWorkerPool through a real API server and the session's operator: a pool at
zero wakes on the enqueue notification, grows to the computed size within its max,
scales down only after its cooldown and reaches zero; invalid pools are rejected; a
missing target is a condition, not a crash; a target that does not opt in, or is
eventix's own operator, is refused and keeps its replicas; the operator's ceiling caps
every pool. And the /metrics of an operator and a worker.

Tasks go to queues no worker serves, so the depth stays what the test made it. The
test API server has no controllers: Deployments get no pods, but their /scale
subresource is real, and that is what the operator reads and patches.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text

from eventix_operator import enqueue_many
from eventix_operator.resources import schedule_definition
from eventix_operator.schedules.scheduler import apply_schedule
from tests.e2e.conftest import GROUP, VERSION, Cluster
from tests.support.postgres import PostgresServer
from tests.support.processes import free_port

pytestmark = pytest.mark.kube
POOLS = "eventixworkerpools"


@pytest.fixture
def db(e2e_database: str) -> Iterator[Engine]:
    engine = create_engine(e2e_database)
    yield engine
    engine.dispose()


@pytest.fixture
def queue() -> str:
    return f"pool-{uuid.uuid4().hex[:8]}"


#: The label by which a workload lets pools scale it.
SCALABLE = {"eventix.io/scalable": "true"}


def pod_template(name: str) -> k8s.V1PodTemplateSpec:
    return k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels={"app": name}),
        spec=k8s.V1PodSpec(
            termination_grace_period_seconds=40,
            # On a cluster with controllers (EVENTIX_TEST_KUBECONFIG) the pods stay Pending:
            # the tests look at replicas, and some ask for a hundred.
            node_selector={"eventix.io/test": "no-such-node"},
            containers=[k8s.V1Container(name="worker", image="eventix-worker:test")],
        ),
    )


def deployment(
    cluster: Cluster, name: str, replicas: int = 0, labels: dict[str, str] | None = None
) -> None:
    """A worker Deployment; it opts in to pools unless given ``labels`` of its own."""
    body = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name, labels=SCALABLE if labels is None else labels),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels={"app": name}),
            template=pod_template(name),
        ),
    )
    k8s.AppsV1Api(cluster.api.api_client).create_namespaced_deployment(cluster.namespace, body)


def replicas(cluster: Cluster, name: str, kind: str = "Deployment") -> int:
    apps = k8s.AppsV1Api(cluster.api.api_client)
    read = {
        "Deployment": apps.read_namespaced_deployment_scale,
        "StatefulSet": apps.read_namespaced_stateful_set_scale,
    }[kind]
    scale = read(name, cluster.namespace)
    assert scale.spec is not None
    return int(scale.spec.replicas or 0)


def pool(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "EventixWorkerPool",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.namespace, POOLS, body)


def condition(cluster: Cluster, name: str, type_: str) -> dict[str, Any]:
    for c in cluster.status(POOLS, name).get("conditions") or ():
        if c["type"] == type_:
            found: dict[str, Any] = c
            return found
    return {}


def add_tasks(db: Engine, queue: str, n: int) -> None:
    with db.begin() as conn:
        tasks = [{"task": "tests.record", "args": [i], "queue": queue} for i in range(n)]
        enqueue_many(tasks, connection=conn)


def cancel_tasks(db: Engine, queue: str, n: int | None = None) -> None:
    """Take tasks out of the due count without any notification (as a worker
    finishing them would)."""
    with db.begin() as conn:
        conn.execute(
            text(
                "UPDATE eventix_task SET status = 'cancelled' WHERE uid IN ("
                " SELECT uid FROM eventix_task WHERE namespace = :q"
                " AND status = 'scheduled' LIMIT :n)"
            ),
            {"q": queue, "n": n},
        )


def until(what: str, predicate: Callable[[], Any], timeout: float, cluster: Cluster) -> float:
    """Poll fast (the point is to measure); seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            logs = cluster.procs.logs()
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
        time.sleep(0.02)
    return time.monotonic() - started


def test_wakes_from_zero_on_the_first_tasks_then_grows_within_max(
    cluster: Cluster, db: Engine, queue: str
) -> None:
    deployment(cluster, "workers")
    pool(
        cluster,
        "wake",
        {
            "scaleTargetRef": {"name": "workers"},
            "queues": [queue],
            "maxReplicas": 5,
            "tasksPerReplica": 10,
            "activationTasks": 3,
            "pollingIntervalSeconds": 30,  # KEDA's default: waking must not wait for it
            "cooldownSeconds": 300,
        },
    )
    cluster.wait("Ready", lambda: condition(cluster, "wake", "Ready").get("status") == "True")
    assert replicas(cluster, "workers") == 0

    add_tasks(db, queue, 2)  # below activationTasks: the pool stays at zero
    cluster.wait("depth 2", lambda: cluster.status(POOLS, "wake").get("queueDepth") == 2)
    active = condition(cluster, "wake", "Active")
    assert (active["status"], active["reason"]) == ("False", "BelowActivation")
    assert replicas(cluster, "workers") == 0

    add_tasks(db, queue, 1)
    woke = until("a first replica", lambda: replicas(cluster, "workers") == 1, 10, cluster)
    print(f"\nwake from zero: {woke * 1000:.0f} ms after the enqueue committed")
    assert woke < 3.0  # a polling scaler would take up to 30 s here

    add_tasks(db, queue, 30)  # 33 due: ceil(33 / 10) = 4
    until("4 replicas", lambda: replicas(cluster, "workers") == 4, 5, cluster)
    add_tasks(db, queue, 100)  # 133 due wants 14: maxReplicas holds it at 5
    until("5 replicas", lambda: replicas(cluster, "workers") == 5, 5, cluster)
    limited = cluster.wait(
        "ScalingLimited",
        lambda: (c := condition(cluster, "wake", "ScalingLimited")).get("status") == "True" and c,
    )
    assert limited["reason"] == "TooManyReplicas"
    status = cluster.wait(
        "status", lambda: (s := cluster.status(POOLS, "wake")).get("queueDepth") == 133 and s
    )
    assert status["desiredReplicas"] == 5
    assert status["observedGeneration"] == 1
    assert status["lastScaleTime"]
    assert condition(cluster, "wake", "Active")["status"] == "True"
    time.sleep(1.0)
    assert replicas(cluster, "workers") == 5
    scaled = [m for _, r, m in cluster.events("wake") if r == "Scaled"]
    assert any("from 0 to 1" in m for m in scaled), scaled


def test_scales_down_after_the_cooldown_and_reaches_zero(
    cluster: Cluster, db: Engine, queue: str
) -> None:
    cooldown = 3.0
    deployment(cluster, "batch")
    pool(
        cluster,
        "shrink",
        {
            "scaleTargetRef": {"name": "batch"},
            "queues": [queue],
            "maxReplicas": 10,
            "tasksPerReplica": 10,
            "pollingIntervalSeconds": 1,
            "cooldownSeconds": int(cooldown),
        },
    )
    cluster.wait("Ready", lambda: condition(cluster, "shrink", "Ready").get("status") == "True")
    add_tasks(db, queue, 30)
    until("3 replicas", lambda: replicas(cluster, "batch") == 3, 5, cluster)

    cancel_tasks(db, queue, 20)  # 10 left: wants 1
    lowered = time.monotonic()
    cluster.wait(
        "CoolingDown",
        lambda: condition(cluster, "shrink", "ScalingLimited").get("reason") == "CoolingDown",
    )
    assert replicas(cluster, "batch") == 3
    until("1 replica", lambda: replicas(cluster, "batch") == 1, cooldown + 5, cluster)
    assert time.monotonic() - lowered >= cooldown - 0.1

    cancel_tasks(db, queue)
    emptied = time.monotonic()
    until("zero", lambda: replicas(cluster, "batch") == 0, cooldown + 5, cluster)
    assert time.monotonic() - emptied >= cooldown - 0.1
    cluster.wait(
        "inactive", lambda: condition(cluster, "shrink", "Active").get("reason") == "QueueEmpty"
    )

    def scaled() -> list[str]:
        return [m for _, r, m in cluster.events("shrink") if r == "Scaled"]

    # events are posted after the scale patch, off the scaler's path: wait for them
    cluster.wait("Scaled events", lambda: any("from 1 to 0" in m for m in scaled()))
    assert any("from 3 to 1" in m for m in scaled()), scaled()


def test_a_missing_target_is_a_condition_until_it_appears(
    cluster: Cluster, db: Engine, queue: str
) -> None:
    pool(
        cluster,
        "orphan",
        {
            "scaleTargetRef": {"name": "not-yet"},
            "queues": [queue],
            "maxReplicas": 3,
            "pollingIntervalSeconds": 1,
        },
    )
    ready = cluster.wait(
        "TargetNotFound",
        lambda: (
            (c := condition(cluster, "orphan", "Ready")).get("reason") == "TargetNotFound" and c
        ),
    )
    assert ready["status"] == "False"
    assert "not-yet" in ready["message"]
    cluster.wait(
        "a Warning event",
        lambda: ("Warning", "TargetNotFound") in {(t, r) for t, r, _ in cluster.events("orphan")},
    )
    deployment(cluster, "not-yet")
    add_tasks(db, queue, 1)
    until("scaled once the target exists", lambda: replicas(cluster, "not-yet") == 1, 5, cluster)
    # the status is written after the scale patch: wait for it rather than race it
    cluster.wait("Ready", lambda: condition(cluster, "orphan", "Ready").get("status") == "True")


def refused(cluster: Cluster, name: str) -> dict[str, Any]:
    """The pool's Ready condition once it says TargetNotScalable, with its Warning event."""
    ready = cluster.wait(
        "TargetNotScalable",
        lambda: (c := condition(cluster, name, "Ready")).get("reason") == "TargetNotScalable" and c,
    )
    assert ready["status"] == "False"
    cluster.wait(
        "a Warning event",
        lambda: ("Warning", "TargetNotScalable") in {(t, r) for t, r, _ in cluster.events(name)},
    )
    return dict(ready)


def test_a_deployment_that_does_not_opt_in_is_not_scaled(
    cluster: Cluster, db: Engine, queue: str
) -> None:
    deployment(cluster, "someones-app", replicas=2, labels={"app": "someones-app"})
    spec = {
        "scaleTargetRef": {"name": "someones-app"},
        "queues": [queue],
        "minReplicas": 0,
        "maxReplicas": 5,
        "pollingIntervalSeconds": 1,
        "cooldownSeconds": 0,
    }
    pool(cluster, "grabby", spec)
    add_tasks(db, queue, 40)  # wants 4; and with nothing due it would go to 0
    ready = refused(cluster, "grabby")
    assert 'opts in with the label eventix.io/scalable="true"' in ready["message"]
    time.sleep(2.0)  # two polling intervals: still nothing touched
    assert replicas(cluster, "someones-app") == 2
    assert cluster.status(POOLS, "grabby").get("desiredReplicas") is None
    assert "Scaled" not in {r for _, r, _ in cluster.events("grabby")}
    # Its owner opts in: from then on the pool scales it.
    k8s.AppsV1Api(cluster.api.api_client).patch_namespaced_deployment(
        "someones-app", cluster.namespace, {"metadata": {"labels": SCALABLE}}
    )
    until("scaled once labelled", lambda: replicas(cluster, "someones-app") == 4, 10, cluster)
    cluster.wait("Ready", lambda: condition(cluster, "grabby", "Ready").get("status") == "True")


def test_the_operators_own_statefulset_is_never_scaled(cluster: Cluster, queue: str) -> None:
    """As the chart makes it (its labels), even with the opt-in label on top."""
    name = "eventix-eventix-operator-operator"
    labels = {
        "app.kubernetes.io/name": "eventix-operator",
        "app.kubernetes.io/instance": "eventix",
        "app.kubernetes.io/part-of": "eventix",
        "app.kubernetes.io/component": "operator",
        **SCALABLE,
    }
    body = k8s.V1StatefulSet(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1StatefulSetSpec(
            replicas=2,
            service_name=name,
            selector=k8s.V1LabelSelector(match_labels={"app": name}),
            template=pod_template(name),
        ),
    )
    k8s.AppsV1Api(cluster.api.api_client).create_namespaced_stateful_set(cluster.namespace, body)
    spec = {
        "scaleTargetRef": {"kind": "StatefulSet", "name": name},
        "queues": [queue],
        "minReplicas": 0,  # an idle queue: it would scale the operator away
        "maxReplicas": 3,
        "pollingIntervalSeconds": 1,
        "cooldownSeconds": 0,
    }
    pool(cluster, "hijack", spec)
    ready = refused(cluster, "hijack")
    assert "is eventix's own operator" in ready["message"]
    time.sleep(2.0)
    assert replicas(cluster, name, "StatefulSet") == 2


def test_the_operators_ceiling_caps_every_pool(cluster: Cluster) -> None:
    """The session's operator runs with the default EVENTIX_OPERATOR_MAX_REPLICAS, 100."""
    deployment(cluster, "huge")
    spec = {"scaleTargetRef": {"name": "huge"}, "minReplicas": 150, "maxReplicas": 10_000}
    pool(cluster, "greedy", spec)
    until("100 replicas", lambda: replicas(cluster, "huge") == 100, 10, cluster)
    ready = cluster.wait(
        "Ready", lambda: (c := condition(cluster, "greedy", "Ready")).get("status") == "True" and c
    )
    capped = "minReplicas 150 and maxReplicas 10000 capped at 100"
    assert capped in ready["message"]
    cluster.wait(
        "a ReplicasCapped event",
        lambda: any(r == "ReplicasCapped" and capped in m for _, r, m in cluster.events("greedy")),
    )
    time.sleep(1.0)
    assert replicas(cluster, "huge") == 100
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, POOLS, "greedy"
    )
    k8s.AppsV1Api(cluster.api.api_client).delete_namespaced_deployment("huge", cluster.namespace)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"scaleTargetRef": {"name": "w"}, "minReplicas": 4, "maxReplicas": 2}, "minReplicas"),
        ({"scaleTargetRef": {"kind": "Deployment"}, "maxReplicas": 2}, "name: Required value"),
        ({"scaleTargetRef": {"name": "w"}}, "maxReplicas: Required value"),
        ({"scaleTargetRef": {"name": "w", "kind": "Job"}, "maxReplicas": 2}, "kind"),
        ({"scaleTargetRef": {"name": "w"}, "maxReplicas": 2, "tasksPerReplica": 0}, "tasksPer"),
        ({"scaleTargetRef": {"name": "w"}, "maxReplicas": 2, "queues": []}, "queues"),
    ],
)
def test_invalid_pools_are_rejected_by_the_api_server(
    cluster: Cluster, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiException) as error:
        pool(cluster, "invalid", spec)
    assert error.value.status == 422
    assert message in str(error.value.body)


# -- /metrics --------------------------------------------------------------------------


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    """Every sample by name; a family without samples (a labelled counter never
    counted) appears with none."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    found: Samples = {}
    for family in text_string_to_metric_families(body):
        found.setdefault(family.name, [])
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for found, v in samples.get(name, []):
        if all(found.get(k) == want for k, want in labels.items()):
            return v
    return None


@pytest.fixture
def own_database(pg_server: PostgresServer) -> Iterator[str]:
    """A database of this test's own, so that its operator leads there (the
    session operator holds the leader lock of the shared one)."""
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE eventix_template")
    yield pg_server.url_for(name)
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_operator_and_worker_serve_metrics(cluster: Cluster, own_database: str) -> None:
    engine = create_engine(own_database)
    try:
        add_tasks(engine, "m-idle", 5)
        add_tasks(engine, "m-work", 3)
        worker_port, operator_port = free_port(), free_port()
        worker = cluster.procs.worker(
            "--queues", "m-work", DATABASE_URL=own_database, EVENTIX_METRICS_PORT=str(worker_port)
        )

        def done() -> bool:
            with engine.connect() as conn:
                n = conn.execute(
                    text(
                        "SELECT count(*) FROM eventix_task WHERE namespace = 'm-work'"
                        " AND status = 'done'"
                    )
                ).scalar_one()
            return int(n) == 3

        cluster.wait("3 tasks done", done, 30)
        # A schedule row without a resource: the operator's scheduler fires it all the same.
        spec = {"schedule": "* * * * * *", "template": {"task": "tests.record", "queue": "m-s"}}
        definition = schedule_definition(
            spec,
            uid=str(uuid.uuid4()),
            namespace=cluster.namespace,
            name="every-second",
            generation=1,
            created_at=datetime.now(UTC),
        )
        with engine.begin() as conn:
            apply_schedule(conn, definition, datetime.now(UTC))
        env = {"DATABASE_URL": own_database, "EVENTIX_METRICS_PORT": str(operator_port)}
        operator = cluster.operator("--namespace", cluster.namespace, **env)

        def operator_figures() -> Any:
            try:
                found = scrape(operator_port)
            except OSError:
                return None
            ready = (
                value(found, "eventix_queue_due_tasks", queue="m-idle") == 5
                and (value(found, "eventix_schedule_lateness_seconds_count") or 0) >= 1
            )
            return found if ready else None

        ops = cluster.wait("operator metrics", operator_figures, 30)
        assert value(ops, "eventix_queue_finished_tasks", queue="m-work", status="done") == 3
        assert value(ops, "eventix_queue_running_tasks", queue="m-idle") == 0
        oldest = value(ops, "eventix_queue_oldest_due_seconds", queue="m-idle")
        assert oldest is not None
        assert oldest > 0
        assert "eventix_operator_reconcile_errors" in ops
        assert "eventix_pool_desired_replicas" in ops

        work = scrape(worker_port)
        assert value(work, "eventix_worker_tasks_total", outcome="succeeded") == 3
        assert value(work, "eventix_worker_tasks_claimed_total") == 3
        assert value(work, "eventix_worker_task_duration_seconds_count") == 3
        assert value(work, "eventix_worker_tasks_running") == 0
        cluster.procs.stop(operator)
        cluster.procs.stop(worker)
    finally:
        engine.dispose()


def test_the_examples_apply_and_the_pool_finds_its_deployment(cluster: Cluster) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "k8s"
    [deploy] = yaml.safe_load_all((examples / "worker-deployment.yaml").read_text())
    [example] = yaml.safe_load_all((examples / "worker-pool.yaml").read_text())
    grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert grace > float(env["EVENTIX_WORKER_SHUTDOWN_GRACE"]) + 5
    assert "replicas" not in deploy["spec"]  # the pool owns them
    k8s.AppsV1Api(cluster.api.api_client).create_namespaced_deployment(cluster.namespace, deploy)
    name = example["metadata"]["name"]
    pool(cluster, name, example["spec"])
    cluster.wait("Ready", lambda: condition(cluster, name, "Ready").get("status") == "True")
