"""The CRDs in crds/: the names others rely on, and the rules an API server enforces.

A real kube-apiserver checks these in the kube tests; here we check what it would
reject or silently get wrong, without one: structural-schema rules, defaults that
violate their own schema, printer columns pointing nowhere, CEL rules naming
missing fields or sitting where CEL cannot see, and drift between the task spec
and the templates of schedules and triggers (and between a trigger's template and
what the trigger table takes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

import pytest
import yaml

from eventix_operator.db.triggers import TemplateError, validate_template
from eventix_operator.operator.triggers import stored_template
from eventix_operator.schedules import MACROS, ScheduleError, parse_schedule

CRDS = Path(__file__).resolve().parents[2] / "crds"
Node = dict[str, Any]


def load(name: str) -> Node:
    documents = list(yaml.safe_load_all((CRDS / name).read_text()))
    assert len(documents) == 1
    crd: Node = documents[0]
    return crd


TASK = load("eventixtask.yaml")
SCHEDULE = load("eventixschedule.yaml")
POOL = load("eventixworkerpool.yaml")
TRIGGER = load("eventixtrigger.yaml")
QUEUE = load("eventixqueue.yaml")
ALL = pytest.mark.parametrize(
    "crd",
    [TASK, SCHEDULE, POOL, TRIGGER, QUEUE],
    ids=["task", "schedule", "pool", "trigger", "queue"],
)


def version(crd: Node) -> Node:
    versions = crd["spec"]["versions"]
    assert len(versions) == 1
    only: Node = versions[0]
    return only


def root(crd: Node) -> Node:
    schema: Node = version(crd)["schema"]["openAPIV3Schema"]
    return schema


def at(crd: Node, path: str) -> Node:
    """The schema node of a dotted field path such as ``spec.retry.maxRetries``."""
    node = root(crd)
    for part in path.split("."):
        node = node["properties"][part]
    return node


def walk(node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def untyped(node: Node) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields")) and "type" not in node


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crd", "kind", "plural", "singular", "short"),
    [
        (TASK, "EventixTask", "eventixtasks", "eventixtask", "etask"),
        (SCHEDULE, "EventixSchedule", "eventixschedules", "eventixschedule", "esched"),
        (POOL, "EventixWorkerPool", "eventixworkerpools", "eventixworkerpool", "epool"),
        (TRIGGER, "EventixTrigger", "eventixtriggers", "eventixtrigger", "etrig"),
        (QUEUE, "EventixQueue", "eventixqueues", "eventixqueue", "equeue"),
    ],
    ids=["task", "schedule", "pool", "trigger", "queue"],
)
def test_names_others_rely_on(crd: Node, kind: str, plural: str, singular: str, short: str) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.eventix.io"
    spec = crd["spec"]
    assert spec["group"] == "eventix.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": singular,
        "shortNames": [short],
        "categories": ["eventix"],
    }
    only = version(crd)
    assert (only["name"], only["served"], only["storage"]) == ("v1alpha1", True, True)
    assert only["subresources"] == {"status": {}}


# -- structural schema ---------------------------------------------------------------------


@ALL
def test_schema_is_structural(crd: Node) -> None:
    top = root(crd)
    assert top["type"] == "object"
    assert top["required"] == ["spec"]
    # The API server rejects anything but the type on metadata.
    assert top["properties"]["metadata"] == {"type": "object"}
    for path, node in walk(top):
        assert "type" in node or untyped(node), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        for forbidden in ("$ref", "definitions", "nullable"):
            assert forbidden not in node, f"{path} uses {forbidden}"
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path} requires unknown {name}"
        if node.get("type") == "array":
            assert "items" in node, f"{path} is an array without items"


@ALL
def test_every_field_is_described(crd: Node) -> None:
    for path, node in walk(root(crd)):
        if path == ".metadata":
            continue
        assert node.get("description", "").strip(), f"{path} has no description"


def _violations(value: Any, node: Node) -> list[str]:
    """What the API server's defaulting check would find wrong with ``value`` at ``node``."""
    if untyped(node):
        return []
    kind = node["type"]
    python_types: dict[str, tuple[type, ...]] = {
        "string": (str,),
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "object": (dict,),
        "array": (list,),
    }
    if isinstance(value, bool) and kind != "boolean":
        return [f"{value!r} is not {kind}"]
    if not isinstance(value, python_types[kind]):
        return [f"{value!r} is not {kind}"]
    problems: list[str] = []
    if "enum" in node and value not in node["enum"]:
        problems.append(f"{value!r} not in {node['enum']}")
    if "minimum" in node and value < node["minimum"]:
        problems.append(f"{value!r} < {node['minimum']}")
    if "maximum" in node and value > node["maximum"]:
        problems.append(f"{value!r} > {node['maximum']}")
    if isinstance(value, str):
        if "pattern" in node and not re.search(node["pattern"], value):
            problems.append(f"{value!r} does not match {node['pattern']}")
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)):
            problems.append(f"{value!r} has the wrong length")
    if isinstance(value, dict):
        for name in node.get("required", []):
            if name not in value and "default" not in node["properties"][name]:
                problems.append(f"missing required {name}")
    return problems


@ALL
def test_defaults_satisfy_their_own_schema(crd: Node) -> None:
    defaults = [(path, node) for path, node in walk(root(crd)) if "default" in node]
    assert defaults
    for path, node in defaults:
        assert _violations(node["default"], node) == [], path


def test_the_documented_defaults() -> None:
    expected_task = {
        "spec.priority": 0,
        "spec.retry": {},
        "spec.retry.backoffSeconds": 15,
        "spec.retry.maxBackoffSeconds": 300,
        "spec.storeResult": True,
    }
    for path, value in expected_task.items():
        assert at(TASK, path)["default"] == value, path
    expected_schedule = {
        "spec.timeZone": "UTC",
        "spec.suspend": False,
        "spec.concurrencyPolicy": "Allow",
        "spec.catchUp": "Latest",
        "spec.maxCatchUpRuns": 100,
        "spec.successfulRunsHistoryLimit": 3,
        "spec.failedRunsHistoryLimit": 1,
    }
    for path, value in expected_schedule.items():
        assert at(SCHEDULE, path)["default"] == value, path
    expected_pool = {
        "spec.scaleTargetRef.kind": "Deployment",
        "spec.minReplicas": 0,
        "spec.tasksPerReplica": 10,
        "spec.activationTasks": 1,
        "spec.pollingIntervalSeconds": 30,
        "spec.cooldownSeconds": 300,
    }
    for path, value in expected_pool.items():
        assert at(POOL, path)["default"] == value, path
    expected_trigger = {
        "spec.template.queue": "default",
        "spec.template.retry": {},
        "spec.template.retry.backoffSeconds": 15,
        "spec.template.retry.maxBackoffSeconds": 300,
        "spec.template.storeResult": True,
    }
    for path, value in expected_trigger.items():
        assert at(TRIGGER, path)["default"] == value, path
    # No queue by default: the operator chooses the namespace's (docs/tenancy.md). A trigger's
    # "default" is Eventix's "the event's queue", which its namespace may always use.
    assert "default" not in at(TASK, "spec.queue")
    assert "default" not in at(SCHEDULE, "spec.template.queue")
    assert "default" not in at(POOL, "spec.queues")
    # Retry forever unless told otherwise, as Eventix does: no default for maxRetries.
    assert "default" not in at(TASK, "spec.retry.maxRetries")
    assert "default" not in at(TRIGGER, "spec.template.retry.maxRetries")


# -- enums and formats ---------------------------------------------------------------------

PHASES = ["Pending", "Running", "Retrying", "Succeeded", "Failed", "Cancelled"]


def test_enums() -> None:
    assert at(TASK, "status.phase")["enum"] == PHASES
    assert at(SCHEDULE, "status.recentRuns")["items"]["properties"]["phase"]["enum"] == PHASES
    assert at(SCHEDULE, "spec.concurrencyPolicy")["enum"] == ["Allow", "Forbid", "Replace"]
    assert at(SCHEDULE, "spec.catchUp")["enum"] == ["Skip", "Latest", "All"]
    assert at(POOL, "spec.scaleTargetRef.kind")["enum"] == ["Deployment", "StatefulSet"]


@pytest.mark.parametrize(
    ("crd", "path"),
    [
        (TASK, "spec.eta"),
        (TASK, "status.startedAt"),
        (TASK, "status.finishedAt"),
        (TASK, "status.nextAttemptAt"),
        (SCHEDULE, "status.lastScheduleTime"),
        (SCHEDULE, "status.nextScheduleTime"),
        (SCHEDULE, "status.lastSuccessfulTime"),
        (SCHEDULE, "status.lastFailureTime"),
        (POOL, "status.lastScaleTime"),
        (TRIGGER, "status.lastFiredTime"),
        (TRIGGER, "status.lastError.time"),
    ],
)
def test_times_are_date_time_strings(crd: Node, path: str) -> None:
    assert at(crd, path)["type"] == "string"
    assert at(crd, path)["format"] == "date-time"


@ALL
def test_conditions_follow_metav1_condition(crd: Node) -> None:
    conditions = at(crd, "status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    reason = re.compile(item["properties"]["reason"]["pattern"])
    assert reason.search("ScheduleInvalid")
    assert not reason.search("schedule invalid")
    # The same shape in both, so the operator can share one condition helper.
    same = {k: v for k, v in conditions.items() if k != "description"}
    for other in (TASK, SCHEDULE, POOL, TRIGGER):
        assert {
            k: v for k, v in at(other, "status.conditions").items() if k != "description"
        } == same


# -- patterns ------------------------------------------------------------------------------


def test_task_name_pattern() -> None:
    pattern = re.compile(at(TASK, "spec.task")["pattern"])
    for good in ("send_email", "myapp.tasks.send_email", "_private.Task2"):
        assert pattern.search(good), good
    for bad in ("", "1st", "a..b", "a.b-c", ".a", "a.", "a b", "a:b"):
        assert not pattern.search(bad), bad
    assert at(SCHEDULE, "spec.template.task")["pattern"] == pattern.pattern
    assert at(TRIGGER, "spec.template.task")["pattern"] == pattern.pattern


def test_queue_pattern() -> None:
    pattern = re.compile(at(TASK, "spec.queue")["pattern"])
    for good in ("default", "emails", "high-prio", "a", "team.reports_v2"):
        assert pattern.search(good), good
    for bad in ("", "-x", "x-", "a b", "a/b"):
        assert not pattern.search(bad), bad
    assert at(TRIGGER, "spec.template.queue")["pattern"] == pattern.pattern
    assert at(POOL, "spec.queues")["items"]["pattern"] == pattern.pattern
    assert at(QUEUE, "spec.queue")["pattern"] == pattern.pattern


SCHEDULES_ACCEPTED = [
    "0 2 * * *",
    "*/15 * * * *",
    "*/2 * * * * *",
    "0 0 12 ? * MON",
    "0 9 * * MON-FRI",
    "0 0 L * *",
    "0 12 * * 5#3",
    "30 8 1,15 JAN,JUL *",
    *MACROS,
]
SCHEDULES_REJECTED = [
    "",
    "* * * *",
    "0 0 0 * * * 2026",
    "@every 5m",
    "@reboot",
    "0 2 * * *; rm -rf /",
]


def test_schedule_pattern_admits_what_the_operator_accepts() -> None:
    pattern = re.compile(at(SCHEDULE, "spec.schedule")["pattern"])
    for expression in SCHEDULES_ACCEPTED:
        parse_schedule(expression)
        assert pattern.search(expression), expression
    for expression in SCHEDULES_REJECTED:
        assert not pattern.search(expression), expression
        with pytest.raises(ScheduleError):
            parse_schedule(expression)
    # The API server is stricter than the CLI about surrounding whitespace.
    for padded in (" 0 2 * * *", "0 2 * * * "):
        assert not pattern.search(padded)


def test_time_zone_pattern_admits_every_iana_zone() -> None:
    node = at(SCHEDULE, "spec.timeZone")
    pattern = re.compile(node["pattern"])
    zones = available_timezones() - {"localtime", "posixrules"}
    assert len(zones) > 300
    for zone in zones:
        assert pattern.search(zone), zone
        assert len(zone) <= node["maxLength"], zone
    for bad in ("", "../etc/passwd", "/etc/localtime", "Europe/Berlin ", "Europe//Berlin"):
        assert not pattern.search(bad), bad


# -- CEL rules -----------------------------------------------------------------------------


def rules(node: Node) -> list[str]:
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


def test_eta_and_delay_exclude_each_other() -> None:
    assert "!has(self.eta) || !has(self.delaySeconds)" in rules(at(TASK, "spec"))


@pytest.mark.parametrize(
    ("crd", "path"),
    [(TASK, "spec.retry"), (SCHEDULE, "spec.template.retry"), (TRIGGER, "spec.template.retry")],
)
def test_backoff_bound_rule(crd: Node, path: str) -> None:
    assert any(
        "self.maxBackoffSeconds >= self.backoffSeconds" in rule for rule in rules(at(crd, path))
    )


IMMUTABLE = [
    "task",
    "queue",
    "uniqueKey",
    "retry",
    "timeoutSeconds",
    "storeResult",
    "resultTTLSeconds",
]
MUTABLE = ["priority", "eta", "delaySeconds", "ttlSecondsAfterFinished"]


def test_task_identity_is_immutable_and_scheduling_is_not() -> None:
    spec = at(TASK, "spec")
    for name in IMMUTABLE:
        assert "self == oldSelf" in rules(spec["properties"][name]), name
        if "default" not in spec["properties"][name] and name not in spec["required"]:
            # A field rule does not run when the field is added or removed; this one does.
            assert f"has(self.{name}) == has(oldSelf.{name})" in rules(spec), name
    for name in MUTABLE:
        assert not any("oldSelf" in rule for rule in rules(spec["properties"][name])), name
    for template in (SCHEDULE, TRIGGER):
        assert not any(
            "oldSelf" in rule for _, node in walk(at(template, "spec")) for rule in rules(node)
        )


def _cel_invisible(node: Node) -> bool:
    """Nodes Kubernetes does not expose to CEL (apiserver's SchemaDeclType)."""
    if untyped(node):
        return True
    return node.get("type") == "array" and _cel_invisible(node["items"])


@ALL
def test_cel_rules_are_where_cel_can_see_and_name_real_fields(crd: Node) -> None:
    found = 0
    for path, node in walk(root(crd)):
        for entry in node.get("x-kubernetes-validations", []):
            found += 1
            assert entry.get("message"), f"{path}: rule without message"
            assert not _cel_invisible(node), f"{path}: CEL cannot see this node"
            # Field selections, not method calls such as self.matches(...).
            fields = re.findall(r"(?:self|oldSelf)\.([A-Za-z_]\w*)\b(?!\s*\()", entry["rule"])
            for name in fields:
                assert name in node["properties"], f"{path}: {entry['rule']} names {name}"
                assert not _cel_invisible(node["properties"][name]), f"{path}: {name} is invisible"
    assert found


# -- printer columns -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crd", "names"),
    [
        (TASK, ["Task", "Queue", "Phase", "Attempts", "Age"]),
        (SCHEDULE, ["Schedule", "TimeZone", "Suspend", "Last Schedule", "Next", "Age"]),
        (POOL, ["Target", "Min", "Max", "Due", "Running", "Desired", "Ready", "Active", "Age"]),
        (TRIGGER, ["Event", "Task", "Fired", "Age"]),
        (QUEUE, ["Queue", "Paused", "Limit", "Due", "Running", "Oldest Due Age", "Age"]),
    ],
    ids=["task", "schedule", "pool", "trigger", "queue"],
)
def test_printer_columns(crd: Node, names: list[str]) -> None:
    columns = version(crd)["additionalPrinterColumns"]
    shown_by_default = [c["name"] for c in columns if c.get("priority", 0) == 0]
    assert shown_by_default == names
    # A list kubectl prints as JSON text.
    column_types = {
        "string": "string",
        "integer": "integer",
        "number": "number",
        "boolean": "boolean",
        "array": "string",
    }
    condition = re.compile(r'^\.status\.conditions\[\?\(@\.type=="([A-Za-z]+)"\)\]\.(\w+)$')
    for column in columns:
        path = column["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        selected = condition.match(path)
        if selected:
            item = at(crd, "status.conditions")["items"]
            node = item["properties"][selected.group(2)]
            assert selected.group(1) in at(crd, "status.conditions")["description"], path
        else:
            node = at(crd, path.removeprefix("."))
        if column["type"] == "date":
            assert node.get("format") == "date-time", path
            # kubectl shows future dates as "<invalid>": date columns are for past times only.
            assert "next" not in path.lower(), path
        else:
            assert column_types[node["type"]] == column["type"], path


# -- the schedule template is the task spec --------------------------------------------------

TEMPLATE_OMITS = {"eta", "delaySeconds", "uniqueKey", "ttlSecondsAfterFinished"}


def _without_transition_rules(node: Node) -> Node:
    """A copy without descriptions and oldSelf rules, which differ on purpose."""
    copy = {k: v for k, v in node.items() if k != "description"}
    kept = [r for r in node.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
    copy.pop("x-kubernetes-validations", None)
    if kept:
        copy["x-kubernetes-validations"] = kept
    if "properties" in node:
        copy["properties"] = {
            k: _without_transition_rules(v) for k, v in node["properties"].items()
        }
    if "items" in node:
        copy["items"] = _without_transition_rules(node["items"])
    return copy


def test_schedule_template_matches_the_task_spec() -> None:
    task_fields = at(TASK, "spec")["properties"]
    template = at(SCHEDULE, "spec.template")
    assert set(template["properties"]) == set(task_fields) - TEMPLATE_OMITS
    assert template["required"] == ["task"]
    for name, node in template["properties"].items():
        assert _without_transition_rules(node) == _without_transition_rules(task_fields[name]), name


# -- the trigger's template: the task spec, and what the trigger table takes -----------------

#: Task fields a trigger's template does not offer: the event gives the priority (as in
#: Eventix), its task is due when the event comes (delaySeconds is offered), the trigger
#: table's template has no timeout, and there is no resource per task to delete.
TRIGGER_TEMPLATE_OMITS = {"eta", "priority", "timeoutSeconds", "ttlSecondsAfterFinished"}


def test_trigger_template_matches_the_task_spec() -> None:
    task_fields = at(TASK, "spec")["properties"]
    template = at(TRIGGER, "spec.template")
    assert set(template["properties"]) == set(task_fields) - TRIGGER_TEMPLATE_OMITS
    assert template["required"] == ["task"]
    for name, node in template["properties"].items():
        if name == "uniqueKey":  # a placeholder rule instead of immutability
            continue
        if name == "queue":  # "default" is Eventix's "the event's queue" (docs/tenancy.md)
            assert node["default"] == "default"
            node = {k: v for k, v in node.items() if k != "default"}
        assert _without_transition_rules(node) == _without_transition_rules(task_fields[name]), name
    unique_key = {
        k: v for k, v in template["properties"]["uniqueKey"].items() if k != "description"
    }
    task_key = _without_transition_rules(task_fields["uniqueKey"])
    assert {k: v for k, v in unique_key.items() if k != "x-kubernetes-validations"} == task_key
    assert at(TRIGGER, "spec.filter")["x-kubernetes-preserve-unknown-fields"] is True
    assert at(TRIGGER, "spec")["required"] == ["eventName", "template"]


def _every_field(node: Node) -> Any:
    """A value with every field of an object schema (placeholders where strings go)."""
    if "default" in node and node.get("type") != "object":
        return node["default"]
    kind = node.get("type")
    if kind == "object" and "properties" in node:
        return {name: _every_field(child) for name, child in node["properties"].items()}
    return {
        "string": "{{ payload.order.id }}",
        "integer": 7,
        "number": 1.5,
        "boolean": False,
        "array": ["{{ payload.order }}", 3],
        "object": {"to": "{{ event.operator }}"},
    }[str(kind)]


def test_every_trigger_template_field_reaches_the_trigger_table() -> None:
    example = _every_field(at(TRIGGER, "spec.template")) | {"task": "shop.ship", "queue": "orders"}
    stored = stored_template(example)
    validate_template(stored)
    assert stored == {
        "task": "shop.ship",
        "args": ["{{ payload.order }}", 3],
        "kwargs": {"to": "{{ event.operator }}"},
        "namespace": "orders",
        "delay": 7,
        "unique_key": "{{ payload.order.id }}",
        "max_retries": 7,
        "error_eta_inc": 15,
        "error_eta_max": 300,
        "store_result": True,
        "result_expires": 7,
    }
    with pytest.raises(TemplateError, match="unknown template field"):
        stored_template({"task": "x", "code": "import os"})


def _cel_pattern(rule: str) -> re.Pattern[str]:
    """The RE2 pattern of a rule's self.matches('…'), as a Python pattern."""
    found = re.search(r"self\.matches\('((?:[^'\\]|\\.)*)'\)", rule)
    assert found, rule
    return re.compile(found.group(1).replace("\\\\", "\\"))


UNIQUE_KEYS = [
    "plain-key",
    "{{ payload.order.id }}",
    "{{payload}}",
    "{{ payload.items.0 }}",
    "{{ event.name }}",
    "{{ event.uid }}",
    "order-{{ payload.id }}",
    "{{ payload.id }} ",
    "{{ event.secret }}",
    "{{ event }}",
    "{{ event.name.x }}",
    "{{ order.id }}",
    "{{ payload..id }}",
    "{{ payload.a b }}",
]


def test_unique_key_rule_refuses_what_the_template_check_refuses() -> None:
    [rule] = rules(at(TRIGGER, "spec.template.uniqueKey"))
    pattern = _cel_pattern(rule)
    for key in UNIQUE_KEYS:
        cel_accepts = "{{" not in key or bool(pattern.search(key))
        try:
            validate_template({"task": "x", "unique_key": key})
        except TemplateError:
            accepted = False
        else:
            accepted = True
        assert cel_accepts == accepted, key
