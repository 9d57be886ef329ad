"""The chart as rendered by the real helm: what a default install contains, least privilege,
pod security, required and rejected values. No cluster needed (see test_kube.py for that)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.helm.conftest import (
    CHART,
    DASHBOARD,
    EVERYTHING,
    KEDA,
    NAMESPACE,
    NAMESPACED,
    RELEASE,
    REPO,
    REQUIRED,
    RenderError,
    Tools,
    by_kind,
    merged,
    one,
    pod_specs,
)

VALUE_SETS = {
    "required": REQUIRED,
    "everything": EVERYTHING,
    "keda": KEDA,
    "namespaced": NAMESPACED,
}
NAME = f"{RELEASE}-eventix-operator"


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_app_version_is_the_package_version(tools: Tools) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    images = {
        c["image"]
        for spec in pod_specs(tools.template(REQUIRED)).values()
        for c in spec["containers"]
    }
    assert images == {f"ghcr.io/eventix-operator/eventix-operator:{project['version']}"}


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint(tools: Tools, name: str) -> None:
    values = tools._values_file(VALUE_SETS[name])
    done = tools.run_helm("lint", str(CHART), "--strict", "--values", values)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_default_install_renders_exactly_these_objects(tools: Tools) -> None:
    objects = tools.template(REQUIRED)
    inventory = sorted(
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects
    )
    assert inventory == sorted(
        [
            ("ServiceAccount", f"{NAME}-operator", NAMESPACE),
            ("ClusterRole", f"{NAME}-operator", None),
            ("ClusterRoleBinding", f"{NAME}-operator", None),
            ("Role", f"{NAME}-operator-scale", NAMESPACE),
            ("RoleBinding", f"{NAME}-operator-scale", NAMESPACE),
            ("ClusterKopfPeering", NAME, None),
            ("Service", f"{NAME}-operator", NAMESPACE),
            ("StatefulSet", f"{NAME}-operator", NAMESPACE),
            ("PodDisruptionBudget", f"{NAME}-operator", NAMESPACE),
            ("ServiceAccount", f"{NAME}-worker", NAMESPACE),
            ("Deployment", f"{NAME}-worker", NAMESPACE),
            ("EventixWorkerPool", f"{NAME}-worker", NAMESPACE),
            ("PodDisruptionBudget", f"{NAME}-worker", NAMESPACE),
            ("Secret", f"{NAME}-database", NAMESPACE),
            # The pre-install/pre-upgrade hook and what it needs before the release exists.
            ("ServiceAccount", f"{NAME}-migrate", NAMESPACE),
            ("Secret", f"{NAME}-migrate", NAMESPACE),
            ("Job", f"{NAME}-migrate", NAMESPACE),
        ]
    )
    pool = one(objects, "EventixWorkerPool")["spec"]
    assert pool["scaleTargetRef"] == {"kind": "Deployment", "name": f"{NAME}-worker"}
    # The queue the release namespace's resources get (tenancy `namespaced`, docs/tenancy.md).
    assert (pool["queues"], pool["minReplicas"], pool["maxReplicas"]) == ([NAMESPACE], 0, 10)
    hooks = {
        o["kind"]: o["metadata"]["annotations"]
        for o in objects
        if "helm.sh/hook" in o["metadata"].get("annotations", {})
    }
    assert set(hooks) == {"ServiceAccount", "Secret", "Job"}
    for hook in hooks.values():
        assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    # What the Job needs comes first (lower weight).
    assert int(hooks["Secret"]["helm.sh/hook-weight"]) < int(hooks["Job"]["helm.sh/hook-weight"])


def test_the_database_url_is_only_in_secrets(tools: Tools) -> None:
    text = tools.template_text(REQUIRED)
    url = REQUIRED["database"]["url"]
    holders = [o["kind"] for o in yaml.safe_load_all(text) if o and url in yaml.safe_dump(o)]
    assert holders == ["Secret", "Secret"]  # the release's and the migration hook's
    for spec in pod_specs(tools.template(REQUIRED)).values():
        ref = env_of(spec["containers"][0])["DATABASE_URL"]["secretKeyRef"]
        assert ref["key"] == "DATABASE_URL"
        assert ref["name"] in (f"{NAME}-database", f"{NAME}-migrate")


def test_existing_secret_is_referenced_and_no_secret_made(tools: Tools) -> None:
    objects = tools.template(EVERYTHING)
    assert by_kind(objects, "Secret") == []
    for spec in pod_specs(objects).values():
        ref = env_of(spec["containers"][0])["DATABASE_URL"]["secretKeyRef"]
        assert ref == {"name": "eventix-db", "key": "url"}


def test_listen_and_read_urls_go_to_the_secret_and_every_process(tools: Tools) -> None:
    values = merged(REQUIRED, {
        "database": {"url": "postgresql://app:pw@cluster-pooler-rw:5432/app",
                     "listenUrl": "postgresql://app:pw@cluster-rw:5432/app",
                     "readUrl": "postgresql://app:pw@cluster-ro:5432/app"},
        "config": {"dbPreparedStatements": "false", "dbMaxConnections": 4},
    })  # fmt: skip
    objects = tools.template(values)
    secret = next(
        o for o in by_kind(objects, "Secret") if o["metadata"]["name"] == f"{NAME}-database"
    )
    assert secret["stringData"] == {
        "DATABASE_URL": "postgresql://app:pw@cluster-pooler-rw:5432/app",
        "LISTEN_DATABASE_URL": "postgresql://app:pw@cluster-rw:5432/app",
        "READ_DATABASE_URL": "postgresql://app:pw@cluster-ro:5432/app",
    }
    for spec in pod_specs(objects).values():
        env = env_of(spec["containers"][0])
        assert env["EVENTIX_LISTEN_DATABASE_URL"]["secretKeyRef"]["key"] == "LISTEN_DATABASE_URL"
        assert env["EVENTIX_READ_DATABASE_URL"]["secretKeyRef"]["optional"] is True
        assert (env["EVENTIX_DB_PREPARED_STATEMENTS"], env["EVENTIX_DB_MAX_CONNECTIONS"]) == (
            "false",
            "4",
        )


def test_without_listen_and_read_urls_their_keys_are_optional(tools: Tools) -> None:
    objects = tools.template(EVERYTHING)  # an existing Secret, keys of its own
    for spec in pod_specs(objects).values():
        env = env_of(spec["containers"][0])
        listen = env["EVENTIX_LISTEN_DATABASE_URL"]["secretKeyRef"]
        assert listen == {"name": "eventix-db", "key": "LISTEN_DATABASE_URL", "optional": True}
        assert env["EVENTIX_DB_PREPARED_STATEMENTS"] == "auto"
        assert "EVENTIX_DB_MAX_CONNECTIONS" not in env


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_pod_meets_the_restricted_pod_security_standard(tools: Tools, name: str) -> None:
    for where, spec in pod_specs(tools.template(VALUE_SETS[name])).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert isinstance(pod["runAsUser"], int), where
        assert pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"], where
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
            assert container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_only_the_operator_holds_a_kubernetes_token(tools: Tools, name: str) -> None:
    objects = tools.template(VALUE_SETS[name])
    for where, spec in pod_specs(objects).items():
        operator = where.startswith("StatefulSet/")
        assert spec["automountServiceAccountToken"] is operator, where
        assert spec["serviceAccountName"] != "default", where
    for account in by_kind(objects, "ServiceAccount"):
        operator = account["metadata"]["name"].endswith("-operator")
        assert account["automountServiceAccountToken"] is operator
    bound = {
        s["name"]
        for kind in ("RoleBinding", "ClusterRoleBinding")
        for binding in by_kind(objects, kind)
        for s in binding["subjects"]
    }
    assert bound == {f"{NAME}-operator"}


def _rules(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> set[str]:
    """Every (group, resource, verb, resourceName) the roles of a kind grant, as strings."""
    granted = set()
    for role in by_kind(objects, kind):
        if namespace is not None and role["metadata"]["namespace"] != namespace:
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = rule.get("resourceNames") or ["*"]
                        granted |= {f"{group}/{resource}:{verb}@{n}" for n in names}
    return granted


OPERATOR_RULES = {
    *(
        f"eventix.io/{r}:{v}@*"
        for r in (
            "eventixtasks",
            "eventixschedules",
            "eventixworkerpools",
            "eventixtriggers",
            "eventixqueues",
        )
        for v in ("list", "watch", "patch")
    ),
    *(
        f"eventix.io/{r}/status:patch@*"
        for r in (
            "eventixtasks",
            "eventixschedules",
            "eventixworkerpools",
            "eventixtriggers",
            "eventixqueues",
        )
    ),
    "eventix.io/eventixtasks:delete@*",
    "/events:create@*",
}
#: Worker pools: read the target (its opt-in label and replicas), set its replicas.
SCALE_RULES = {
    "apps/deployments:get@*",
    "apps/statefulsets:get@*",
    "apps/deployments/scale:patch@*",
    "apps/statefulsets/scale:patch@*",
}


def test_cluster_wide_rbac_is_exactly_what_the_operator_calls(tools: Tools) -> None:
    objects = tools.template(REQUIRED)
    assert _rules(objects, "ClusterRole") == OPERATOR_RULES | {
        "kopf.dev/clusterkopfpeerings:list@*",
        "kopf.dev/clusterkopfpeerings:watch@*",
        f"kopf.dev/clusterkopfpeerings:patch@{NAME}",
        "apiextensions.k8s.io/customresourcedefinitions:list@*",
        "apiextensions.k8s.io/customresourcedefinitions:watch@*",
    }
    assert _rules(objects, "Role") == SCALE_RULES
    assert one(objects, "Role")["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_no_rule_has_a_wildcard_or_touches_secrets_or_pods(tools: Tools, name: str) -> None:
    for rule_text in _rules(tools.template(VALUE_SETS[name]), "ClusterRole") | _rules(
        tools.template(VALUE_SETS[name]), "Role"
    ):
        target, _, _ = rule_text.partition("@")
        assert "*" not in target, rule_text
        assert not re.search(r"/(secrets|pods|configmaps|serviceaccounts)[:/]", target), rule_text


def test_namespaced_mode_has_no_cluster_wide_access(tools: Tools) -> None:
    objects = tools.template(NAMESPACED)
    assert by_kind(objects, "ClusterRole") == []  # discovery off too
    assert by_kind(objects, "ClusterRoleBinding") == []
    assert by_kind(objects, "ClusterKopfPeering") == []
    watched = [NAMESPACE, "team-a", "team-b"]
    peerings = by_kind(objects, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == sorted(watched)
    for namespace in watched:
        assert _rules(objects, "Role", namespace) == OPERATOR_RULES | {
            "kopf.dev/kopfpeerings:list@*",
            "kopf.dev/kopfpeerings:watch@*",
            f"kopf.dev/kopfpeerings:patch@{NAME}",
            *SCALE_RULES,
        }
    args = one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace=")] == [
        f"--namespace={n}" for n in watched
    ]


def test_namespaced_mode_with_discovery_reads_only_crds_and_namespaces(tools: Tools) -> None:
    values = merged(NAMESPACED, {"operator": {"rbac": {"discovery": True}}})
    assert _rules(tools.template(values), "ClusterRole") == {
        "apiextensions.k8s.io/customresourcedefinitions:list@*",
        "apiextensions.k8s.io/customresourcedefinitions:watch@*",
        "/namespaces:list@*",
        "/namespaces:watch@*",
    }


def test_scaling_everywhere_moves_scale_rights_into_the_cluster_role(tools: Tools) -> None:
    values = merged(REQUIRED, {"operator": {"rbac": {"scaleNamespaces": ["*"]}}})
    objects = tools.template(values)
    assert "apps/deployments/scale:patch@*" in _rules(objects, "ClusterRole")
    assert by_kind(objects, "Role") == []
    values = merged(REQUIRED, {"operator": {"rbac": {"scaleNamespaces": ["jobs"]}}})
    scale_roles = by_kind(tools.template(values), "Role")
    assert sorted(r["metadata"]["namespace"] for r in scale_roles) == ["eventix", "jobs"]


def test_operator_replicas_get_distinct_peering_priorities(tools: Tools) -> None:
    sts = one(tools.template(REQUIRED), "StatefulSet")
    spec = sts["spec"]
    # A rolling update replaces one ordinal at a time: two live pods never share an ordinal.
    assert spec["replicas"] == 2
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    assert spec["podManagementPolicy"] == "Parallel"
    container = spec["template"]["spec"]["containers"][0]
    assert container["args"][:4] == [
        "operator",
        f"--peering={NAME}",
        "--priority=$(POD_INDEX)",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    env = env_of(container)
    assert env["POD_INDEX"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {"name": "healthz", "containerPort": 8080, "protocol": "TCP"} in container["ports"]


def test_worker_drains_within_its_grace_period(tools: Tools) -> None:
    spec = one(tools.template(REQUIRED), "Deployment")["spec"]["template"]["spec"]
    grace = float(env_of(spec["containers"][0])["EVENTIX_WORKER_SHUTDOWN_GRACE"])
    assert spec["terminationGracePeriodSeconds"] > grace
    values = merged(REQUIRED, {"workers": {"shutdownGraceSeconds": 50}})
    with pytest.raises(RenderError, match=r"terminationGracePeriodSeconds \(40\) must exceed"):
        tools.template(values)


def test_autoscaled_workers_leave_replicas_to_the_scaler(tools: Tools) -> None:
    assert "replicas" not in one(tools.template(REQUIRED), "Deployment")["spec"]
    fixed = tools.template(
        merged(REQUIRED, {"workers": {"autoscaling": {"mode": "none"}, "replicas": 3}})
    )
    assert one(fixed, "Deployment")["spec"]["replicas"] == 3
    assert by_kind(fixed, "EventixWorkerPool") == by_kind(fixed, "ScaledObject") == []


def test_only_the_worker_deployment_lets_pools_scale_it(tools: Tools) -> None:
    objects = tools.template(merged(EVERYTHING, {"api": {"enabled": True}}))
    labels = {
        f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["labels"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }
    assert labels.pop(f"Deployment/{NAME}-worker")["eventix.io/scalable"] == "true"
    # The operator and the API: no opt-in, and the labels by which the operator refuses them.
    assert set(labels) == {f"StatefulSet/{NAME}-operator", f"Deployment/{NAME}-api"}
    for where, found in labels.items():
        assert "eventix.io/scalable" not in found, where
        assert found["app.kubernetes.io/part-of"] == "eventix", where
        assert found["app.kubernetes.io/component"] in ("operator", "api"), where
    for mode in ("keda", "none"):  # no pool: nothing to opt in to
        values = merged(REQUIRED, {"workers": {"autoscaling": {"mode": mode}}})
        worker = one(tools.template(values), "Deployment")
        assert "eventix.io/scalable" not in worker["metadata"]["labels"], mode


def test_the_operator_caps_every_pool(tools: Tools) -> None:
    sts = one(tools.template(REQUIRED), "StatefulSet")
    assert (
        env_of(sts["spec"]["template"]["spec"]["containers"][0])["EVENTIX_OPERATOR_MAX_REPLICAS"]
        == "100"
    )
    values = merged(REQUIRED, {"workers": {"autoscaling": {"maxReplicas": 500}}})
    with pytest.raises(RenderError, match=re.escape("maxReplicas (500) exceeds operator.maxRep")):
        tools.template(values)
    raised = merged(values, {"operator": {"maxReplicas": 500}})
    assert one(tools.template(raised), "EventixWorkerPool")["spec"]["maxReplicas"] == 500


def test_tenancy_reaches_the_operator_and_the_worker_queues_follow_it(tools: Tools) -> None:
    """The default workers serve the queue that the release namespace's resources get when
    they name none (docs/tenancy.md): its name when namespaced, `default` when shared."""

    def rendered(values: dict[str, Any]) -> tuple[dict[str, str], str, list[str]]:
        objects = tools.template(values)
        sts = one(objects, "StatefulSet")
        operator_env = env_of(sts["spec"]["template"]["spec"]["containers"][0])
        worker = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        [queues] = [a for a in worker["args"] if a.startswith("--queues=")]
        return operator_env, queues, one(objects, "EventixWorkerPool")["spec"]["queues"]

    env, queues, pool = rendered(REQUIRED)
    assert (env["EVENTIX_TENANCY"], env["EVENTIX_TENANCY_ALLOW"]) == ("namespaced", "{}")
    assert (queues, pool) == (f"--queues={NAMESPACE}", [NAMESPACE])

    allow = {"*": ["mail"], "platform": ["*"], "team-a": ["reports-*"]}
    env, queues, pool = rendered(merged(REQUIRED, {"tenancy": {"mode": "shared", "allow": allow}}))
    assert env["EVENTIX_TENANCY"] == "shared"
    assert json.loads(env["EVENTIX_TENANCY_ALLOW"]) == allow
    assert (queues, pool) == ("--queues=default", ["default"])

    chosen = merged(REQUIRED, {"workers": {"queues": [f"{NAMESPACE}.mail", "mail"]}})
    _, queues, pool = rendered(chosen)
    assert (queues, pool) == (f"--queues={NAMESPACE}.mail,mail", [f"{NAMESPACE}.mail", "mail"])

    # No `tenancy` at all (an upgrade with --reuse-values renders with the old chart's defaults).
    env, queues, pool = rendered(merged(REQUIRED, {"tenancy": None}))
    assert (env["EVENTIX_TENANCY"], env["EVENTIX_TENANCY_ALLOW"]) == ("namespaced", "{}")
    assert (queues, pool) == (f"--queues={NAMESPACE}", [NAMESPACE])

    keda = merged(KEDA, {"workers": {"queues": []}})
    [trigger] = one(tools.template(keda), "ScaledObject")["spec"]["triggers"]
    assert f"namespace IN ('{NAMESPACE}')" in trigger["metadata"]["query"]


def test_tracing_sends_each_component_s_traces_under_its_own_name(tools: Tools) -> None:
    def otel_env(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
        pods = pod_specs(tools.template(values))
        return {
            kind_name.split("/")[1]: {
                k: v for k, v in env_of(pod["containers"][0]).items() if k.startswith("OTEL_")
            }
            for kind_name, pod in pods.items()
        }

    assert all(env == {} for env in otel_env(EVERYTHING).values())  # off by default
    endpoint = "http://otel-collector.monitoring:4318"
    traced = otel_env(merged(EVERYTHING, {"tracing": {"enabled": True, "endpoint": endpoint}}))
    assert traced == {
        name: {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": name}
        if not name.endswith("-migrate")
        else {}  # a Job of a few seconds: nothing to trace
        for name in traced
    }
    assert len(traced) == 4, sorted(traced)
    with pytest.raises(RenderError, match=re.escape("tracing.endpoint: name the OTLP/HTTP")):
        tools.template(merged(REQUIRED, {"tracing": {"enabled": True}}))


def test_keda_mode_replaces_the_pool_with_a_postgresql_scaler(tools: Tools) -> None:
    objects = tools.template(KEDA)
    assert by_kind(objects, "EventixWorkerPool") == []
    assert "replicas" not in one(objects, "Deployment")["spec"]
    scaled = one(objects, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{NAME}-worker",
    }
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 10)
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"]["targetQueryValue"] == "10"
    assert trigger["metadata"]["activationTargetQueryValue"] == "4"  # active from 5 due tasks
    assert "namespace IN ('default', 'reports.v2')" in trigger["metadata"]["query"]
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": f"{NAME}-database", "key": "DATABASE_URL"}
    ]
    with pytest.raises(RenderError, match="plain postgresql:// URL"):
        tools.template(merged(KEDA, {"database": {"url": "postgresql+psycopg://u:p@db/e"}}))
    # A read-only user of its own for KEDA's query.
    own = {"workers": {"autoscaling": {"keda": {"existingSecret": "keda-db", "secretKey": "ro"}}}}
    auth = one(tools.template(merged(KEDA, own)), "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "keda-db", "key": "ro"}
    ]


def test_optional_parts_render_when_enabled(tools: Tools) -> None:
    objects = tools.template(EVERYTHING)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "NetworkPolicy", "Service", "Deployment"} <= kinds
    api = one(objects, "Deployment", f"{NAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["args"] == ["api", "--host=0.0.0.0", "--port=8000", "--workers=2"]
    assert env_of(api)["EVENTIX_API_TOKEN"] == {
        "secretKeyRef": {"name": "eventix-api", "key": "token"}
    }
    service = one(objects, "Service", f"{NAME}-api")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitors = by_kind(objects, "ServiceMonitor")
    assert sorted(m["metadata"]["name"] for m in monitors) == [f"{NAME}-operator", f"{NAME}-worker"]
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    assert set(policies) == {f"{NAME}-operator", f"{NAME}-worker", f"{NAME}-api"}
    operator_egress = policies[f"{NAME}-operator"]["egress"]
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in operator_egress[-1]["to"]
    assert [p["port"] for p in operator_egress[-1]["ports"]] == [443, 6443]
    worker_egress = policies[f"{NAME}-worker"]["egress"]
    assert {} not in worker_egress  # workerEgressAll off
    assert {"ports": [{"port": 443, "protocol": "TCP"}]} in worker_egress
    worker = one(objects, "Deployment", f"{NAME}-worker")["spec"]["template"]["spec"]
    assert worker["imagePullSecrets"] == [{"name": "registry"}]
    assert worker["containers"][0]["image"] == "registry.example.com/myapp-worker:1.4.2"
    assert worker["containers"][0]["envFrom"] == [{"secretRef": {"name": "myapp-secrets"}}]
    pool = one(objects, "EventixWorkerPool")["spec"]
    assert (pool["scaleUpStep"], pool["scaleDownStep"]) == (2, 1)


#: The API switched on, nothing said about its authentication.
API_WITHOUT_TOKEN = merged(REQUIRED, {"api": {"enabled": True}})
NO_TOKEN = "api.auth: the REST API needs a bearer token: create a Secret with one"


def test_the_api_is_never_served_without_a_token_by_accident(tools: Tools) -> None:
    with pytest.raises(RenderError, match=re.escape(NO_TOKEN)) as refused:
        tools.template(API_WITHOUT_TOKEN)
    assert "or set api.auth.allowAnonymous=true" in str(refused.value)
    # With a token: the token, and no anonymous switch, whatever the Service.
    with_token = merged(
        API_WITHOUT_TOKEN,
        {"api": {"auth": {"existingSecret": "eventix-api"}, "service": {"type": "LoadBalancer"}}},
    )
    api = one(tools.template(with_token), "Deployment", f"{NAME}-api")
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert env["EVENTIX_API_TOKEN"] == {"secretKeyRef": {"name": "eventix-api", "key": "token"}}
    assert "EVENTIX_API_ALLOW_ANONYMOUS" not in env


def test_an_anonymous_api_is_explicit_and_cluster_internal(tools: Tools) -> None:
    anonymous = merged(API_WITHOUT_TOKEN, {"api": {"auth": {"allowAnonymous": True}}})
    objects = tools.template(anonymous)
    api = one(objects, "Deployment", f"{NAME}-api")
    env = env_of(api["spec"]["template"]["spec"]["containers"][0])
    assert env["EVENTIX_API_ALLOW_ANONYMOUS"] == "true"
    assert "EVENTIX_API_TOKEN" not in env
    assert one(objects, "Service", f"{NAME}-api")["spec"]["type"] == "ClusterIP"
    for exposed in ("NodePort", "LoadBalancer"):
        with pytest.raises(RenderError, match=f"ClusterIP Service only, not a {exposed} one"):
            tools.template(merged(anonymous, {"api": {"service": {"type": exposed}}}))
    with pytest.raises(RenderError, match="not exposed through an Ingress"):
        tools.template(merged(anonymous, {"api": {"ingress": {"enabled": True}}}))


def test_extra_env_replaces_a_built_in_variable_in_place(tools: Tools) -> None:
    sts = one(tools.template(EVERYTHING), "StatefulSet")
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert env_of(sts["spec"]["template"]["spec"]["containers"][0])["EVENTIX_LOG_LEVEL"] == "DEBUG"


def test_selectors_match_their_pods_and_names_fit_63_characters(tools: Tools) -> None:
    release = "a-release-name-as-long-as-helm-allows-53-characters-x"
    assert len(release) == 53
    objects = tools.template(EVERYTHING, release=release)
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        for value in obj["metadata"].get("labels", {}).values():
            assert len(value) <= 63, value
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }
    selectors = [o["spec"]["selector"] for o in by_kind(objects, "Service")]
    selectors += [
        o["spec"]["selector"]["matchLabels"] for o in by_kind(objects, "PodDisruptionBudget")
    ]
    selectors += [
        o["spec"]["podSelector"]["matchLabels"] for o in by_kind(objects, "NetworkPolicy")
    ]
    for selector in selectors:
        matched = [n for n, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, (selector, matched)


def test_a_changed_database_url_restarts_the_pods(tools: Tools) -> None:
    def checksums(values: dict[str, Any]) -> set[str]:
        specs = [
            o["spec"]["template"]["metadata"]["annotations"]["checksum/database"]
            for o in tools.template(values)
            if o["kind"] in ("Deployment", "StatefulSet")
        ]
        return set(specs)

    before = checksums(REQUIRED)
    assert len(before) == 1
    assert checksums(REQUIRED) == before
    assert checksums(merged(REQUIRED, {"database": {"url": "postgresql://u:other@db/e"}})) != before


def test_the_database_checksum_is_no_fast_hash_of_the_secret(tools: Tools) -> None:
    """A pod reader must not test password guesses against it at sha256 speed: it is
    scrypt, salted with the release, and the same at every render (helm template)."""
    text = tools.template_text(REQUIRED)
    objects = [o for o in yaml.safe_load_all(text) if o]
    (checksum,) = {
        o["spec"]["template"]["metadata"]["annotations"]["checksum/database"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    }
    url = REQUIRED["database"]["url"]
    rendered = tools.template_text(REQUIRED, extra=("--show-only", "templates/secret.yaml"))
    body = rendered.split("\n", 2)[2]  # what the former checksum hashed: no ---, no # Source
    fast = {hashlib.sha256(v.encode()).hexdigest() for v in (url, rendered, body, "s3cret")}
    assert not any(f.startswith(checksum) for f in fast)
    other_release = tools.template(REQUIRED, release="other")
    assert {
        o["spec"]["template"]["metadata"]["annotations"]["checksum/database"]
        for o in other_release
        if o["kind"] in ("Deployment", "StatefulSet")
    } != {checksum}
    # The chart never sees a URL it does not hold: no checksum, only the pods' own annotations.
    values = merged(EVERYTHING, {"operator": {"podAnnotations": {"team": "a"}}})
    for o in tools.template(values):
        if o["kind"] in ("Deployment", "StatefulSet"):
            found = o["spec"]["template"]["metadata"].get("annotations") or {}
            assert "checksum/database" not in found
            assert found == ({"team": "a"} if o["kind"] == "StatefulSet" else {})


def test_only_prometheus_operators_scrapers_reach_the_metrics_by_default(tools: Tools) -> None:
    values = merged(REQUIRED, {"networkPolicy": {"enabled": True}})
    policies = {
        p["metadata"]["name"]: p["spec"] for p in by_kind(tools.template(values), "NetworkPolicy")
    }
    scrapers = {
        "namespaceSelector": {},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "prometheus",
                "app.kubernetes.io/managed-by": "prometheus-operator",
            }
        },
    }
    for name in (f"{NAME}-operator", f"{NAME}-worker"):
        (metrics,) = policies[name]["ingress"]
        assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert metrics["from"] == [scrapers]
    # `[]` says "anyone", explicitly.
    anyone = merged(values, {"networkPolicy": {"metricsFrom": []}})
    for policy in by_kind(tools.template(anyone), "NetworkPolicy"):
        for rule in policy["spec"]["ingress"]:
            assert "from" not in rule


# -- values the chart refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"workers": {"tasks": ["myapp.tasks"]}}, "set database.url"),
        ({"database": {"url": "postgresql://u@db/e"}}, "workers.tasks: name the Python modules"),
        (
            merged(REQUIRED, {"database": {"existingSecret": "mine"}}),
            "either database.url (the chart makes a Secret) or database.existingSecret",
        ),
        (
            merged(
                REQUIRED,
                {
                    "database": {
                        "url": "",
                        "existingSecret": "mine",
                        "listenUrl": "postgresql://u@db-rw/e",
                    }
                },
            ),
            "put the listen and read URLs in that Secret",
        ),
    ],
    ids=["no-database", "no-task-modules", "url-and-existing-secret", "listen-url-and-secret"],
)
def test_missing_required_values_are_named(
    tools: Tools, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(RenderError, match=re.escape(message)):
        tools.template(values)


@pytest.mark.parametrize(
    ("override", "where", "complaint"),
    [
        ({"operater": {"replicas": 2}}, "at ''", "additional properties 'operater' not allowed"),
        ({"workers": {"concurency": 4}}, "at '/workers'", "'concurency' not allowed"),
        ({"operator": {"replicas": "two"}}, "at '/operator/replicas'", "got string, want integer"),
        ({"operator": {"replicas": 0}}, "at '/operator/replicas'", "minimum"),
        (
            {"workers": {"autoscaling": {"mode": "hpa"}}},
            "at '/workers/autoscaling/mode'",
            "value must be one of",
        ),
        ({"workers": {"queues": ["a,b"]}}, "at '/workers/queues/0'", "does not match pattern"),
        ({"tenancy": {"mode": "teams"}}, "at '/tenancy/mode'", "value must be one of"),
        ({"tenancy": {"allow": {"Team_A": ["x"]}}}, "at '/tenancy/allow'", "'Team_A' not allowed"),
        ({"tenancy": {"allow": {"a": ["x y"]}}}, "at '/tenancy/allow/a/0'", "does not match"),
        ({"tenancy": {"allow": {"a": "x"}}}, "at '/tenancy/allow/a'", "got string, want array"),
        ({"workers": {"tasks": ["my-app"]}}, "at '/workers/tasks/0'", "does not match pattern"),
        (
            {"operator": {"resources": {"requests": {"cpu": "lots"}}}},
            "at '/operator/resources/requests/cpu'",
            "",
        ),
        ({"database": {"url": "mysql://u@db/e"}}, "at '/database/url'", "does not match pattern"),
        ({"extraEnv": [{"value": "x"}]}, "at '/extraEnv/0'", "missing property 'name'"),
    ],
    ids=[
        "typo-top-level", "typo-nested", "wrong-type", "below-minimum", "bad-enum",
        "queue-with-comma", "tenancy-mode", "tenancy-namespace", "tenancy-queue", "tenancy-list",
        "module-name", "bad-quantity", "not-postgresql", "env-without-name",
    ],
)  # fmt: skip
def test_schema_rejects_bad_values_with_their_path(
    tools: Tools, override: dict[str, Any], where: str, complaint: str
) -> None:
    with pytest.raises(RenderError) as failed:
        tools.template(merged(REQUIRED, override))
    message = str(failed.value)
    assert "values don't meet the specifications of the schema" in message
    assert where in message, message
    assert complaint in message, message


def test_the_dashboard_can_be_exposed_through_an_ingress_and_made_read_only(
    tools: Tools,
) -> None:
    values = DASHBOARD
    objects = tools.template(values)
    ingress = one(objects, "Ingress", f"{NAME}-api")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["eventix.example.com"], "secretName": "eventix-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "eventix.example.com"
    assert rule["http"]["paths"] == [
        {
            "path": "/ui",
            "pathType": "Prefix",
            "backend": {"service": {"name": f"{NAME}-api", "port": {"name": "http"}}},
        }
    ]
    api = one(objects, "Deployment", f"{NAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(api)["EVENTIX_UI_READ_ONLY"] == "true"
    # off by default: no Ingress, and the dashboard may act
    plain = tools.template(EVERYTHING)
    assert by_kind(plain, "Ingress") == []
    api = one(plain, "Deployment", f"{NAME}-api")["spec"]["template"]["spec"]["containers"][0]
    assert "EVENTIX_UI_READ_ONLY" not in env_of(api)
    with pytest.raises(RenderError, match="paths"):
        tools.template(merged(values, {"api": {"ingress": {"paths": ["ui"]}}}))
