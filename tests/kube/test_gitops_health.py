"""GitOps tools agree: for every phase of every kind, as the real API server holds it, Flux's
kstatus (sigs.k8s.io/cli-utils) and the chart's Argo CD health check (run by gopher-lua as Argo
CD runs it) give the verdict of the rule (tests/support/gitops.py, docs/observability.md)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.support.gitops import RULE, SPECS, VERDICTS, GitOpsTool, Phase, phases
from tests.support.kube import KubeAPI
from tools.chart.gen_argocd import ARGOCD, GROUP, SCRIPTS

pytestmark = pytest.mark.kube

G, V = "eventix.io", "v1alpha1"


def argocd_script(kind: str) -> str:
    """The script argocd-cm.yaml gives Argo CD for ``kind``."""
    config = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    script: str = config["data"][f"resource.customizations.health.{GROUP}_{kind}"]
    return script


def put_in_phase(
    api: k8s.CustomObjectsApi, namespace: str, phase: Phase, name: str
) -> dict[str, Any]:
    """Create the resource, write its status as the operator does, change or delete it as
    the phase says; the object as the API server then returns it."""
    api.create_namespaced_custom_object(G, V, namespace, phase.plural, phase.body(name))
    for patch in phase.status:
        api.patch_namespaced_custom_object_status(
            G, V, namespace, phase.plural, name, {"status": patch}
        )
    if phase.change_spec:
        change = SPECS[phase.kind][1]
        api.patch_namespaced_custom_object(G, V, namespace, phase.plural, name, {"spec": change})
    if phase.deleting:
        api.delete_namespaced_custom_object(G, V, namespace, phase.plural, name)
    found: dict[str, Any] = api.get_namespaced_custom_object(G, V, namespace, phase.plural, name)
    return found


def test_kstatus_and_argocd_agree_with_the_rule_in_every_phase(
    kube_api: KubeAPI,
    quiet_namespace: str,
    gitops_tool: GitOpsTool,
) -> None:
    api = k8s.CustomObjectsApi(kube_api.api_client)
    every = phases()
    assert {(p.kind, p.name) for p in every} == {(k, n) for k, r in RULE.items() for n in r}
    objects = []
    for i, phase in enumerate(every):
        name = f"{phase.plural.removeprefix('eventix')[:-1]}-{i}"
        objects.append(put_in_phase(api, quiet_namespace, phase, name))

    kstatus = gitops_tool.kstatus(objects)
    argocd: list[Any] = [None] * len(objects)
    for kind in RULE:
        indexes = [i for i, p in enumerate(every) if p.kind == kind]
        verdicts = gitops_tool.argocd_health(argocd_script(kind), [objects[i] for i in indexes])
        for i, verdict in zip(indexes, verdicts, strict=True):
            argocd[i] = verdict

    table = [
        (p.kind, p.name, p.expected, VERDICTS[p.expected], (k.status, a.status),
         k.message, a.message)
        for p, k, a in zip(every, kstatus, argocd, strict=True)
    ]  # fmt: skip
    wrong = [row for row in table if row[3] != row[4]]
    shown = "\n".join(
        f"{kind} / {name}: rule {rule} {want}, got {got} (kstatus: {km!r}; argo: {am!r})"
        for kind, name, rule, want, got, km, am in wrong
    )
    assert not wrong, f"verdicts off the rule:\n{shown}"


def test_every_kind_shares_the_health_script_that_reads_kstatus_conditions() -> None:
    assert set(SCRIPTS.values()) == {"health-conditions.lua"}
    assert set(RULE) == set(SCRIPTS)
