"""The chart's Argo CD health check reads kstatus' conditions as kstatus does.

Each case is a status an operator might write, including ones ours never does (a Ready of
Unknown, Reconciling and Stalled both True, no conditions at all). On each, three judges: Flux's
kstatus (sigs.k8s.io/cli-utils), the script under gopher-lua as Argo CD runs it, and the same
script under lupa's Lua 5.1 (which opens every standard library: it passes scripts gopher-lua
with Argo CD's libraries refuses, so it is not enough alone). tests/kube/test_gitops_health.py
does the same for every phase of every kind on the real API server.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.helm.conftest import CHART
from tests.support.gitops import VERDICTS, GitOpsTool
from tools.chart.gen_argocd import GROUP, SCRIPTS

lua51 = pytest.importorskip("lupa.lua51", reason="needs lupa>=2.0 (the test extra)")

#: The Argo CD health of each kstatus status.
ARGO = {kstatus: argo for kstatus, argo in VERDICTS.values()}


def script(kind: str) -> str:
    config = yaml.safe_load((CHART / "argocd" / "argocd-cm.yaml").read_text())
    text: str = config["data"][f"resource.customizations.health.{GROUP}_{kind}"]
    return text


def under_lupa(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script(kind))
    return str(result["status"]), str(result["message"] or "")


def cond(type_: str, status: str, reason: str = "Why", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-03-01T12:00:00Z"}  # fmt: skip


def obj(status: dict[str, Any] | None, *, generation: int = 1, **meta: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "apiVersion": "eventix.io/v1alpha1",
        "kind": "EventixTask",
        "metadata": {"name": "x", "namespace": "ns", "generation": generation, **meta},
        "spec": {"task": "t"},
    }
    if status is not None:
        found["status"] = status
    return found


CASES = {
    "no status": obj(None),
    "no conditions": obj({"observedGeneration": 1}),
    "observed an older generation": obj({"observedGeneration": 1, "conditions": [
        cond("Ready", "True")]}, generation=2),
    "no observedGeneration": obj({"conditions": [cond("Ready", "True")]}, generation=3),
    "ready": obj({"observedGeneration": 1, "conditions": [
        cond("Ready", "True", message="fine"), cond("Reconciling", "False"),
        cond("Stalled", "False")]}),
    "ready false": obj({"conditions": [cond("Ready", "False", "TargetNotFound", "gone")]}),
    "ready unknown": obj({"conditions": [cond("Ready", "Unknown", "Checking")]}),
    "ready of an odd value": obj({"conditions": [cond("Ready", "Maybe")]}),
    "reconciling": obj({"conditions": [cond("Ready", "True"), cond("Reconciling", "True",
        "Running", "attempt 2 is running")]}),
    "stalled": obj({"conditions": [cond("Ready", "False", "TaskFailed", "boom"),
        cond("Stalled", "True", "TaskFailed", "boom")]}),
    "stalled before reconciling": obj({"conditions": [cond("Stalled", "True", "A", "a"),
        cond("Reconciling", "True", "B", "b")]}),
    "reconciling before stalled": obj({"conditions": [cond("Reconciling", "True", "B", "b"),
        cond("Stalled", "True", "A", "a")]}),
    "a condition without message": obj({"conditions": [cond("Reconciling", "True", "Pending")]}),
    "other conditions only": obj({"conditions": [cond("Active", "False")]}),
    "deleted": obj({"conditions": [cond("Ready", "True")]},
                   deletionTimestamp="2026-03-01T12:00:00Z", finalizers=["x"]),
}  # fmt: skip


def test_the_script_judges_as_kstatus_under_gopher_lua_and_lupa(gitops_tool: GitOpsTool) -> None:
    names = list(CASES)
    objects = [CASES[n] for n in names]
    kstatus = gitops_tool.kstatus(objects)
    for kind in sorted(set(SCRIPTS)):
        argocd = gitops_tool.argocd_health(script(kind), objects)
        for name, k, a in zip(names, kstatus, argocd, strict=True):
            assert ARGO[k.status] == a.status, f"{kind}, {name}: kstatus {k}, Argo CD {a}"
            if k.status in ("InProgress", "Failed") and name != "deleted":
                # The message of the condition that decided (or its reason), as kstatus gives it.
                assert a.message == (k.message or a.message), (name, k, a)
            if name != "deleted":  # Argo CD itself says Progressing before any script runs
                assert under_lupa(kind, CASES[name])[0] == a.status, (kind, name)


def test_the_script_uses_only_what_argo_cd_opens(gitops_tool: GitOpsTool) -> None:
    """gopher-lua with Argo CD's libraries refuses what lupa takes: string.*, os.*, io.*."""
    for call in ("string.format('%s', 1)", "os.getenv('HOME')", "io.write('x')"):
        [verdict] = gitops_tool.argocd_health(f"return {{status = {call}}}", [CASES["ready"]])
        assert verdict.status == "Unknown", call


def test_every_eventix_kind_has_a_health_check() -> None:
    kinds = set()
    for path in (CHART / "crds").glob("eventix*.yaml"):
        kinds.add(yaml.safe_load(path.read_text())["spec"]["names"]["kind"])
    assert kinds <= set(SCRIPTS), f"no Argo CD health check for {sorted(kinds - set(SCRIPTS))}"
