"""The chart under test: helm and kubectl (built from Go modules, tools/kube/build.sh), value
sets, rendering, and an API server of the chart tests' own."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import KUBECONFIG_ENV, KubeAPI, ensure_binaries, kube_api_session

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "eventix-operator"
RELEASE = "eventix"
NAMESPACE = "eventix"

#: The two values an install cannot do without.
REQUIRED: dict[str, Any] = {
    "database": {"url": "postgresql://eventix:s3cret@postgres.db.svc:5432/eventix"},
    "workers": {"tasks": ["myapp.tasks", "myapp.reports"]},
}

#: Every optional part on, operator-scaled workers.
EVERYTHING: dict[str, Any] = {
    "database": {"url": None, "existingSecret": "eventix-db", "secretKey": "url"},
    "workers": {
        "tasks": ["myapp.tasks"],
        "queues": ["default", "reports"],
        "image": {"repository": "registry.example.com/myapp-worker", "tag": "1.4.2"},
        "extraEnv": [{"name": "MYAPP_MODE", "value": "prod"}],
        "extraEnvFrom": [{"secretRef": {"name": "myapp-secrets"}}],
        "autoscaling": {"scaleUpStep": 2, "scaleDownStep": 1},
    },
    "operator": {"replicas": 3, "extraEnv": [{"name": "EVENTIX_LOG_LEVEL", "value": "DEBUG"}]},
    "imagePullSecrets": [{"name": "registry"}],
    "commonLabels": {"team": "platform"},
    "api": {"enabled": True, "auth": {"existingSecret": "eventix-api"}, "processes": 2},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "monitoring": {
        "grafanaDashboard": {"enabled": True, "folder": "Eventix"},
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prom"},
            "alertLabels": {"team": "platform"},
        },
    },
    "networkPolicy": {
        "enabled": True,
        "database": {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
        "kubeAPI": {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]},
        "workerEgressAll": False,
        "workerEgress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
    },
}

#: Workers scaled by KEDA instead of the operator.
KEDA: dict[str, Any] = {
    **REQUIRED,
    "workers": {
        **REQUIRED["workers"],
        "queues": ["default", "reports.v2"],
        "autoscaling": {"mode": "keda", "minReplicas": 1, "activationTasks": 5},
    },
}

#: Only some namespaces, least privilege without cluster-wide rules.
NAMESPACED: dict[str, Any] = {
    **REQUIRED,
    "operator": {"watchNamespaces": ["team-a", "team-b"], "rbac": {"discovery": False}},
}


def merged(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of value sets (mappings merge, anything else replaces)."""
    result = copy.deepcopy(dict(base))
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


#: The API with the dashboard read-only behind an Ingress with TLS.
DASHBOARD: dict[str, Any] = merged(
    EVERYTHING,
    {
        "api": {
            "ui": {"readOnly": True},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "eventix.example.com",
                "tls": [{"hosts": ["eventix.example.com"], "secretName": "eventix-tls"}],
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            },
        }
    },
)


class RenderError(AssertionError):
    """helm refused; the message is its stderr."""


@dataclass(frozen=True)
class Tools:
    helm: Path
    kubectl: Path
    env: dict[str, str]

    def run_helm(
        self, *args: str, kubeconfig: Path | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        done = subprocess.run(
            [str(self.helm), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and done.returncode != 0:
            raise RenderError(f"helm {' '.join(args)} failed:\n{done.stderr}")
        return done

    def kubectl_run(
        self, kubeconfig: Path, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )

    def template_text(
        self,
        values: Mapping[str, Any],
        *,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        extra: tuple[str, ...] = (),
    ) -> str:
        """`helm template` with these values (given as a file, as users do); its stdout."""
        done = self.run_helm(
            "template", release, str(CHART), "--namespace", namespace,
            "--values", self._values_file(values), *extra,
        )  # fmt: skip
        if done.returncode != 0:
            raise RenderError(done.stderr)
        return done.stdout

    def template(
        self,
        values: Mapping[str, Any],
        *,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        extra: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """The rendered objects (hooks included, CRDs not)."""
        text = self.template_text(values, release=release, namespace=namespace, extra=extra)
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def _values_file(self, values: Mapping[str, Any]) -> str:
        text = json.dumps(values, sort_keys=True)  # JSON is YAML
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = Path(self.env["EVENTIX_HELM_TEST_TMP"]) / f"values-{digest}.json"
        path.write_text(text)
        return str(path)


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Tools:
    """helm and kubectl from tools/kube/build.sh, with helm's own files in a temporary home."""
    return make_tools(tmp_path_factory.mktemp("helm-home"))


def make_tools(home: Path) -> Tools:
    paths = ensure_binaries("helm", "kubectl")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "EVENTIX_HELM_TEST_TMP": str(home),
    }
    env.pop("KUBECONFIG", None)
    return Tools(paths["helm"], paths["kubectl"], env)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """'<Kind>/<name>' -> pod spec of every workload."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
    }


# --------------------------------------------------------------------------------------------
# An API server of the chart tests' own


@pytest.fixture(scope="session")
def chart_kube(request: pytest.FixtureRequest) -> Iterator[KubeAPI]:
    """A kube-apiserver for the chart tests alone.

    The end-to-end tests keep a cluster-wide operator running on the session's ``kube_api``
    for the whole session (against their own database); on that server it would act on this
    module's resources as well and race ours for their status. So the chart tests start their
    own control plane (about 3 s) — unless ``EVENTIX_TEST_KUBECONFIG`` names a cluster, which
    is then shared as everywhere else.
    """
    if os.environ.get(KUBECONFIG_ENV):
        api: KubeAPI = request.getfixturevalue("kube_api")
        yield api
        return
    with kube_api_session() as api:
        yield api


THIRD_PARTY_CRDS = Path(__file__).with_name("thirdparty-crds.yaml")
