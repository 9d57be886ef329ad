"""The Grafana dashboard and the PrometheusRule: rendered only when enabled, and what they
render is valid to Prometheus's own parser and rule checker (tools/gitops). That they name only
metrics the processes really export is tests/e2e/test_monitoring.py's to show."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.helm.conftest import CHART, EVERYTHING, REQUIRED, Tools, by_kind, merged, one
from tests.support.gitops import GitOpsTool

#: Grafana's variables in the dashboard's queries, replaced by what Grafana would send.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$namespace": ".*", "$queue": ".*"}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL query of the dashboard's panels, with Grafana's variables filled in."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append(expr)
    return found


def dashboard_variable_metrics(dashboard: dict[str, Any]) -> set[str]:
    """Metrics the template variables read (``label_values(metric{…}, label)``)."""
    names = set()
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found = re.match(r"label_values\((\w+)", query["query"])
            assert found, query
            names.add(found.group(1))
    return names


def rendered_rules(tools: Tools, values: dict[str, Any]) -> dict[str, Any]:
    rule = one(tools.template(values), "PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


def test_both_are_off_by_default(tools: Tools) -> None:
    objects = tools.template(REQUIRED)
    assert by_kind(objects, "PrometheusRule") == []
    assert [o for o in by_kind(objects, "ConfigMap") if "dashboard" in o["metadata"]["name"]] == []


def test_the_dashboard_configmap_is_labelled_for_grafanas_sidecar(tools: Tools) -> None:
    values = merged(
        REQUIRED,
        {"monitoring": {"grafanaDashboard": {
            "enabled": True, "namespace": "grafana", "label": "grafana_dashboard",
            "labelValue": "yes", "folder": "Queues", "labels": {"team": "platform"}}}},
    )  # fmt: skip
    [config] = by_kind(tools.template(values), "ConfigMap")
    assert config["metadata"]["namespace"] == "grafana"
    assert config["metadata"]["labels"]["grafana_dashboard"] == "yes"
    assert config["metadata"]["labels"]["team"] == "platform"
    assert config["metadata"]["annotations"] == {"grafana_folder": "Queues"}
    shipped = json.loads((CHART / "dashboards" / "eventix.json").read_text())
    assert json.loads(config["data"]["eventix.json"]) == shipped
    titles = {p["title"] for p in shipped["panels"]}
    assert {
        "Queue depth", "Oldest due task age", "Throughput", "Failure rate", "Running tasks",
        "Schedule lateness", "Missed schedule runs", "Pool replicas", "Operator errors",
    } <= titles  # fmt: skip


def test_every_dashboard_query_parses(tools: Tools, gitops_tool: GitOpsTool) -> None:
    values = merged(REQUIRED, {"monitoring": {"grafanaDashboard": {"enabled": True}}})
    [config] = by_kind(tools.template(values), "ConfigMap")
    queries = dashboard_queries(json.loads(config["data"]["eventix.json"]))
    assert len(queries) > 15
    for query, parsed in zip(queries, gitops_tool.promql(queries), strict=True):
        assert not parsed.get("error"), f"{query}: {parsed['error']}"
        assert parsed["metrics"], query


def test_the_rule_file_passes_promtool_checks(tools: Tools, gitops_tool: GitOpsTool) -> None:
    spec = rendered_rules(tools, EVERYTHING)
    checked = gitops_tool.rules(yaml.safe_dump(spec))
    assert checked["errors"] == []
    alerts = {r["name"] for r in checked["rules"]}
    assert alerts == {
        "EventixTasksWaitingTooLong", "EventixTaskFailureRatioHigh", "EventixDueTasksWithoutWorker",
        "EventixScheduleLate", "EventixScheduleMissedRuns", "EventixOperatorDown",
        "EventixOperatorNotLeading",
    }  # fmt: skip
    for rule in checked["rules"]:
        assert rule["metrics"], rule
    for rule in spec["groups"][0]["rules"]:
        assert rule["labels"]["team"] == "platform"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_thresholds_and_selectors_are_values(tools: Tools, gitops_tool: GitOpsTool) -> None:
    values = merged(
        REQUIRED,
        {"monitoring": {
            "selectors": {"operator": 'job="ops", cluster="eu-1"', "worker": 'app="w"'},
            "prometheusRule": {
                "enabled": True, "taskWaitingSeconds": 42, "failureRatio": 0.25,
                "failureRatioWindow": "30m", "noWorkerFor": "3m", "scheduleLateSeconds": 7,
                "missedRunsWindow": "2h", "operatorDownFor": "1m", "criticalSeverity": "page"}}},
    )  # fmt: skip
    spec = rendered_rules(tools, values)
    rules = {r["alert"]: r for r in spec["groups"][0]["rules"]}
    assert rules["EventixTasksWaitingTooLong"]["expr"].endswith("> 42")
    assert 'job="ops", cluster="eu-1"' in rules["EventixTasksWaitingTooLong"]["expr"]
    ratio = rules["EventixTaskFailureRatioHigh"]
    assert "[30m]" in ratio["expr"]
    assert ratio["expr"].rstrip().endswith("> 0.25")
    assert 'app="w", outcome="failed"' in ratio["expr"]
    assert ratio["annotations"]["summary"] == "Over 25% of task attempts fail"
    assert rules["EventixDueTasksWithoutWorker"]["for"] == "3m"
    assert rules["EventixDueTasksWithoutWorker"]["labels"]["severity"] == "page"
    assert rules["EventixScheduleLate"]["expr"].rstrip().endswith("> 7")
    assert "[2h]" in rules["EventixScheduleMissedRuns"]["expr"]
    assert rules["EventixOperatorDown"]["for"] == "1m"
    assert gitops_tool.rules(yaml.safe_dump(spec))["errors"] == []
