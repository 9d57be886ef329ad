"""The chart on a real Kubernetes API server: its manifests are accepted (server-side dry run,
then for real), helm installs, upgrades and uninstalls it, its RBAC grants what the operator
needs and nothing to the workers (SubjectAccessReviews), and the real operator, holding only a
token of the chart's ServiceAccount, does its work."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from sqlalchemy import create_engine, text

from tests.helm.conftest import (
    CHART,
    DASHBOARD,
    EVERYTHING,
    KEDA,
    NAMESPACED,
    REPO,
    REQUIRED,
    THIRD_PARTY_CRDS,
    Tools,
    merged,
    one,
)
from tests.support.kube import KubeAPI, forget_eventix_objects
from tests.support.processes import free_port

pytestmark = pytest.mark.kube

GROUP, VERSION = "eventix.io", "v1alpha1"
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster(chart_kube: KubeAPI) -> KubeAPI:
    """The chart tests' API server with the CRDs of KEDA and prometheus-operator stand-ins."""
    for doc in yaml.safe_load_all(THIRD_PARTY_CRDS.read_text()):
        chart_kube.apply_crd(doc)
    return chart_kube


@pytest.fixture
def release(cluster: KubeAPI, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(release name, namespace): a fresh namespace, and a release name as unique as it is,
    since the chart's ClusterRole and peering object are cluster-wide."""
    namespace = cluster.create_namespace(f"chart-{request.node.name}")
    yield f"r{uuid.uuid4().hex[:8]}", namespace
    forget_eventix_objects(cluster, namespace)
    cluster.delete_namespace(namespace)


def as_dict(answer: object) -> dict[str, Any]:
    """The custom-objects API answers plain JSON objects (typed as ``object``)."""
    assert isinstance(answer, dict)
    return answer


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 30, logs: Callable[[], str] = str
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(0.1)


def kubectl_apply(tools: Tools, cluster: KubeAPI, manifests: str, *, dry_run: bool) -> str:
    args = ["apply", "--server-side", "--field-manager=eventix-chart-test", "-f", "-"]
    if dry_run:
        args.insert(1, "--dry-run=server")
    done = tools.kubectl_run(cluster.kubeconfig, *args, stdin=manifests)
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the manifests --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["required", "everything", "keda", "namespaced", "dashboard"])
def test_rendered_manifests_are_accepted_then_applied(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str], name: str
) -> None:
    release_name, namespace = release
    values = {
        "required": REQUIRED, "everything": EVERYTHING, "keda": KEDA, "dashboard": DASHBOARD,
    }.get(name)  # fmt: skip
    if values is None:  # the watched namespaces must exist
        others = [cluster.create_namespace("team-a"), cluster.create_namespace("team-b")]
        values = merged(NAMESPACED, {"operator": {"watchNamespaces": others}})
    manifests = tools.template_text(values, release=release_name, namespace=namespace)
    count = sum(1 for doc in yaml.safe_load_all(manifests) if doc)
    # Strict field validation (kubectl's default): an unknown or misplaced field fails here.
    dry = kubectl_apply(tools, cluster, manifests, dry_run=True)
    assert dry.count("serverside-applied (server dry run)") == count, dry
    done = kubectl_apply(tools, cluster, manifests, dry_run=False)
    assert done.count("serverside-applied") == count, done
    workloads = tools.kubectl_run(
        cluster.kubeconfig, "get", "statefulsets,deployments,jobs", "-n", namespace, "-o", "name"
    )
    assert workloads.returncode == 0, workloads.stderr
    assert f"statefulset.apps/{release_name}-eventix-operator-operator" in workloads.stdout


def test_helm_installs_upgrades_and_uninstalls_keeping_the_crds(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str]
) -> None:
    """`--no-hooks`: this API server runs no controllers, so the migration Job would never
    complete (test_rendered_manifests_are_accepted_then_applied applies it)."""
    release_name, namespace = release
    values = tools._values_file(REQUIRED)
    common = (str(CHART), "--namespace", namespace, "--values", values, "--no-hooks")

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        done = tools.run_helm(*args, kubeconfig=cluster.kubeconfig)
        assert done.returncode == 0, done.stderr
        return done

    helm("install", release_name, *common)
    apps = k8s.AppsV1Api(cluster.api_client)
    sts_name = f"{release_name}-eventix-operator-operator"
    assert apps.read_namespaced_stateful_set(sts_name, namespace).spec.replicas == 2
    helm("upgrade", release_name, *common, "--set", "operator.replicas=3")
    assert apps.read_namespaced_stateful_set(sts_name, namespace).spec.replicas == 3
    # A typo fails the upgrade before anything changes.
    typo = tools.run_helm(
        "upgrade", release_name, *common, "--set", "operator.replicsa=1",
        kubeconfig=cluster.kubeconfig,
    )  # fmt: skip
    assert typo.returncode != 0
    assert "'replicsa' not allowed" in typo.stderr
    helm("uninstall", release_name, "--namespace", namespace, "--wait=false")
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_stateful_set(sts_name, namespace)
    assert gone.value.status == 404
    rbac = k8s.RbacAuthorizationV1Api(cluster.api_client)
    with pytest.raises(ApiException):
        rbac.read_cluster_role(f"{release_name}-eventix-operator-operator")
    crds = k8s.ApiextensionsV1Api(cluster.api_client).list_custom_resource_definition()
    names = {c.metadata.name for c in crds.items if c.metadata is not None}
    assert {"eventixtasks.eventix.io", "eventixschedules.eventix.io"} <= names  # kept


def test_helm_install_refuses_an_api_without_a_token(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str]
) -> None:
    release_name, namespace = release
    anonymous_on_a_load_balancer = {
        "enabled": True,
        "auth": {"allowAnonymous": True},
        "service": {"type": "LoadBalancer"},
    }
    for api, message in [
        ({"enabled": True}, "api.auth: the REST API needs a bearer token"),
        (
            anonymous_on_a_load_balancer,
            "an API without authentication is served on a ClusterIP Service only",
        ),
    ]:
        values = tools._values_file(merged(REQUIRED, {"api": api}))
        done = tools.run_helm(
            "install", release_name, str(CHART), "--namespace", namespace, "--values", values,
            "--no-hooks", kubeconfig=cluster.kubeconfig,
        )  # fmt: skip
        assert done.returncode != 0
        assert message in done.stderr, done.stderr
    # Refused before anything was made.
    listed = tools.run_helm("list", "--namespace", namespace, "-q", kubeconfig=cluster.kubeconfig)
    assert listed.stdout.strip() == ""
    apps = k8s.AppsV1Api(cluster.api_client)
    assert apps.list_namespaced_stateful_set(namespace).items == []


# -- RBAC ----------------------------------------------------------------------------------


def can(
    cluster: KubeAPI, namespace: str, account: str, verb: str, resource: str, *,
    group: str = "", subresource: str | None = None, name: str | None = None,
    in_namespace: str | None = "",
) -> bool:  # fmt: skip
    """SubjectAccessReview: may ServiceAccount ``account`` of ``namespace`` do this?
    ``in_namespace`` "" means the ServiceAccount's namespace, None cluster-wide."""
    review = k8s.V1SubjectAccessReview(
        spec=k8s.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{namespace}:{account}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            resource_attributes=k8s.V1ResourceAttributes(
                namespace=namespace if in_namespace == "" else in_namespace,
                verb=verb, group=group, resource=resource, subresource=subresource, name=name,
            ),
        )
    )  # fmt: skip
    answer = k8s.AuthorizationV1Api(cluster.api_client).create_subject_access_review(review)
    assert answer.status is not None
    return bool(answer.status.allowed)


def apply_release(
    tools: Tools, cluster: KubeAPI, values: dict[str, Any], release: tuple[str, str]
) -> None:
    manifests = tools.template_text(values, release=release[0], namespace=release[1])
    kubectl_apply(tools, cluster, manifests, dry_run=False)


def test_rbac_lets_the_operator_do_its_work_and_nothing_else(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str]
) -> None:
    name, namespace = release
    apply_release(tools, cluster, REQUIRED, release)
    operator = f"{name}-eventix-operator-operator"
    elsewhere = cluster.create_namespace("some-team")
    allowed = [
        # Its resources, in any namespace (cluster-wide install).
        ("list", "eventixtasks", GROUP, None, None, None),
        ("list", "eventixschedules", GROUP, None, None, None),
        ("list", "eventixworkerpools", GROUP, None, None, None),
        ("watch", "eventixtasks", GROUP, None, None, None),
        ("patch", "eventixtasks", GROUP, None, None, elsewhere),
        ("patch", "eventixschedules", GROUP, "status", None, elsewhere),
        ("patch", "eventixworkerpools", GROUP, "status", None, ""),
        ("delete", "eventixtasks", GROUP, None, None, elsewhere),
        ("create", "events", "", None, None, elsewhere),
        ("list", "clusterkopfpeerings", "kopf.dev", None, None, None),
        ("patch", "clusterkopfpeerings", "kopf.dev", None, f"{name}-eventix-operator", None),
        ("watch", "customresourcedefinitions", "apiextensions.k8s.io", None, None, None),
        ("get", "deployments", "apps", None, f"{name}-eventix-operator-worker", ""),
        ("get", "statefulsets", "apps", None, "some-statefulset", ""),
        ("patch", "deployments", "apps", "scale", f"{name}-eventix-operator-worker", ""),
    ]  # fmt: skip
    denied = [
        ("get", "secrets", "", None, f"{name}-eventix-operator-database", ""),
        ("list", "secrets", "", None, None, None),
        ("list", "pods", "", None, None, ""),
        ("create", "eventixtasks", GROUP, None, None, ""),  # it reconciles, users create
        ("delete", "eventixschedules", GROUP, None, None, ""),
        ("get", "eventixtasks", GROUP, None, None, ""),
        ("patch", "clusterkopfpeerings", "kopf.dev", None, "another-operators-peering", None),
        ("patch", "deployments", "apps", None, f"{name}-eventix-operator-worker", ""),
        ("list", "deployments", "apps", None, None, ""),
        ("get", "deployments", "apps", None, "anything", elsewhere),
        ("patch", "deployments", "apps", "scale", "anything", elsewhere),  # scale: release ns only
        ("create", "clusterrolebindings", "rbac.authorization.k8s.io", None, None, None),
        ("patch", "customresourcedefinitions", "apiextensions.k8s.io", None, None, None),
    ]  # fmt: skip
    for verb, resource, group, sub, obj, where in allowed:
        assert can(cluster, namespace, operator, verb, resource, group=group, subresource=sub,
                   name=obj, in_namespace=where), (verb, resource, sub, where)  # fmt: skip
    for verb, resource, group, sub, obj, where in denied:
        assert not can(cluster, namespace, operator, verb, resource, group=group, subresource=sub,
                       name=obj, in_namespace=where), (verb, resource, sub, where)  # fmt: skip


def can_list(tools: Tools, cluster: KubeAPI, subject: str, namespace: str) -> str:
    done = tools.kubectl_run(
        cluster.kubeconfig, "auth", "can-i", "--list", f"--as={subject}", "-n", namespace
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_workers_can_do_nothing_an_unknown_account_cannot(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str]
) -> None:
    name, namespace = release
    apply_release(tools, cluster, merged(EVERYTHING, {"database": {"secretKey": "url"}}), release)
    nobody = can_list(tools, cluster, f"system:serviceaccount:{namespace}:nobody", namespace)
    for account in ("worker", "api", "migrate"):
        subject = f"system:serviceaccount:{namespace}:{name}-eventix-operator-{account}"
        assert can_list(tools, cluster, subject, namespace) == nobody, account
        for verb, resource, group in [
            ("list", "eventixtasks", GROUP),
            ("get", "secrets", ""),
            ("create", "events", ""),
            ("get", "configmaps", ""),
        ]:
            assert not can(
                cluster,
                namespace,
                f"{name}-eventix-operator-{account}",
                verb,
                resource,
                group=group,
            )
    # And their pods carry no token to try with.
    specs = tools.template(EVERYTHING, release=name, namespace=namespace)
    worker = one(specs, "Deployment", f"{name}-eventix-operator-worker")
    assert worker["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_namespaced_install_reaches_only_its_namespaces(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str]
) -> None:
    name, namespace = release
    team = cluster.create_namespace("team-a")
    outside = cluster.create_namespace("outside")
    apply_release(
        tools, cluster, merged(NAMESPACED, {"operator": {"watchNamespaces": [team]}}), release
    )
    operator = f"{name}-eventix-operator-operator"
    for where in (namespace, team):
        assert can(
            cluster, namespace, operator, "watch", "eventixtasks", group=GROUP, in_namespace=where
        )
        assert can(cluster, namespace, operator, "patch", "kopfpeerings", group="kopf.dev",
                   name=f"{name}-eventix-operator", in_namespace=where)  # fmt: skip
    assert not can(
        cluster, namespace, operator, "list", "eventixtasks", group=GROUP, in_namespace=outside
    )
    assert not can(
        cluster, namespace, operator, "list", "eventixtasks", group=GROUP, in_namespace=None
    )
    assert not can(cluster, namespace, operator, "list", "namespaces", in_namespace=None)
    assert not can(cluster, namespace, operator, "list", "customresourcedefinitions",
                   group="apiextensions.k8s.io", in_namespace=None)  # fmt: skip


# -- the real operator with the chart's RBAC ---------------------------------------------------


def service_account_kubeconfig(cluster: KubeAPI, namespace: str, account: str, path: Path) -> Path:
    """The session's kubeconfig with its user replaced by a TokenRequest token of ``account``."""
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer = k8s.CoreV1Api(cluster.api_client).create_namespaced_service_account_token(
        account, namespace, request
    )
    assert answer.status is not None
    token = answer.status.token
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    for user in config["users"]:
        if user["name"] == context["context"]["user"]:
            user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def pod_command(
    container: dict[str, Any], pod: str, ordinal: int, health_port: int
) -> tuple[list[str], dict[str, str]]:
    """What the kubelet would run for StatefulSet pod ``ordinal``: the env the chart declares
    (downward API filled in, secrets left to the caller) and the args with $(VAR) expanded;
    the liveness endpoint on loopback, since these pods share one network namespace."""
    env: dict[str, str] = {}
    downward = {
        "metadata.name": pod,
        "metadata.labels['apps.kubernetes.io/pod-index']": str(ordinal),
    }
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in container["args"]]
    args = [
        f"--liveness=http://127.0.0.1:{health_port}/healthz" if a.startswith("--liveness=") else a
        for a in args
    ]
    return args, env


def test_the_operator_works_with_only_the_charts_rbac(
    tools: Tools, cluster: KubeAPI, release: tuple[str, str], database_url: str, tmp_path: Path
) -> None:
    """Two replicas as the StatefulSet runs them, each with a token of the chart's operator
    ServiceAccount: one acts, the other stands by; a task is enqueued, its status written,
    events posted and, once finished, the resource deleted (ttlSecondsAfterFinished)."""
    if not cluster.local:
        pytest.skip(
            "runs a cluster-wide operator: on a shared cluster the suite's other operators act "
            "on the same resources (the local API server of the chart tests has none)"
        )
    name, namespace = release
    apply_release(tools, cluster, REQUIRED, release)
    objects = tools.template(REQUIRED, release=name, namespace=namespace)
    sts = one(objects, "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    account = sts["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = service_account_kubeconfig(
        cluster, namespace, account, tmp_path / "operator-kubeconfig"
    )

    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    with contextlib.ExitStack() as stack:
        for ordinal in (0, 1):
            port = free_port()
            args, env = pod_command(
                container, f"{sts['metadata']['name']}-{ordinal}", ordinal, port
            )
            env.update(
                DATABASE_URL=database_url, KUBECONFIG=str(kubeconfig),
                EVENTIX_LOG_FORMAT="console", EVENTIX_LOG_LEVEL="INFO", EVENTIX_METRICS_PORT="0",
            )  # fmt: skip
            log = tmp_path / f"operator-{ordinal}.log"
            out = stack.enter_context(log.open("wb"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "eventix_operator", *args],
                cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            stack.callback(_stop, proc)
            procs.append((proc, log))

            def healthy(port: int = port) -> bool:
                url = f"http://127.0.0.1:{port}/healthz"
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                    return bool(r.status == 200)
                return False

            wait_for(f"operator {ordinal} /healthz", healthy, 60, lambda: _logs(procs))

        custom = k8s.CustomObjectsApi(cluster.api_client)
        peering = f"{name}-eventix-operator"

        def peers() -> dict[str, Any] | None:
            obj = as_dict(
                custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
            )
            status: dict[str, Any] = obj.get("status") or {}
            return status if len(status) == 2 else None

        status = wait_for("both replicas in the peering object", peers, 30, lambda: _logs(procs))
        assert sorted(p["priority"] for p in status.values()) == [0, 1]

        task = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "EventixTask",
            "metadata": {"name": "hello", "namespace": namespace},
            "spec": {"task": "myapp.tasks.hello", "ttlSecondsAfterFinished": 0},
        }
        created = as_dict(
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "eventixtasks", task)
        )
        uid = created["metadata"]["uid"]
        engine = create_engine(database_url)
        stack.callback(engine.dispose)

        def row() -> Any:
            with engine.connect() as conn:
                return conn.execute(
                    text("SELECT uid, status FROM eventix_task WHERE k8s_uid = :u"), {"u": uid}
                ).first()

        task_row = wait_for("the task row", row, 30, lambda: _logs(procs))
        assert task_row.status == "scheduled"

        def status_of(phase: str) -> dict[str, Any] | None:
            obj = as_dict(
                custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "eventixtasks", "hello"
                )
            )
            found: dict[str, Any] = obj.get("status") or {}
            return found if found.get("phase") == phase else None

        pending = wait_for("status Pending", lambda: status_of("Pending"), 30, lambda: _logs(procs))
        assert pending["observedGeneration"] == 1
        assert pending["taskUid"] == str(task_row.uid)

        # A worker's work, done in the database: the operator mirrors it and cleans up.
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE eventix_task SET status = 'done', result = '\"sent\"', attempts = 1,"
                    " started_at = now(), finished_at = now(), updated_at = now() WHERE uid = :u"
                ),
                {"u": task_row.uid},
            )

        def deleted() -> bool:
            """Deleted by the operator (its `delete` right), or gone already. Whether it is
            gone is kopf's business: after a timer deletes its own object, kopf sometimes
            keeps the finalizer until the next event about it (seen here in about one run
            of five; reported), which says nothing about RBAC."""
            try:
                obj = as_dict(
                    custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, "eventixtasks", "hello"
                    )
                )
            except ApiException as exc:
                return bool(exc.status == 404)
            return "deletionTimestamp" in obj["metadata"]

        def left() -> str:
            with contextlib.suppress(ApiException):
                obj = custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "eventixtasks", "hello"
                )
                return f"{yaml.safe_dump(obj)}\n{_logs(procs)}"
            return _logs(procs)

        wait_for("the finished task to be deleted (TTL 0)", deleted, 30, left)

        def succeeded_event() -> bool:
            events = k8s.CoreV1Api(cluster.api_client).list_namespaced_event(
                namespace, field_selector="involvedObject.name=hello"
            )
            return "Succeeded" in {e.reason for e in events.items}

        wait_for("the Succeeded event", succeeded_event, 10, lambda: _logs(procs))

        def pool_ready() -> bool:
            """The chart's pool reads the chart's worker Deployment (its opt-in label)
            and scales it: the `get` and `patch` of the scale rules."""
            obj = as_dict(
                custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    "eventixworkerpools",
                    f"{name}-eventix-operator-worker",
                )
            )
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for("the chart's worker pool Ready", pool_ready, 30, lambda: _logs(procs))

        # Peering: the higher ordinal acted, the lower one stood by.
        logs = [log.read_text() for _, log in procs]
        assert "Pausing operations in favour of" in logs[0], logs[0]
        assert "Handler 'enqueue' succeeded" in logs[1], logs[1]
        assert "Handler 'enqueue'" not in logs[0], logs[0]
        for text_ in logs:
            assert not re.search(r"Forbidden|\b403\b", text_), text_


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _logs(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for _, log in procs)
