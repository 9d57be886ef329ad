"""The Argo CD health checks, run as Argo CD runs them (Lua 5.1, `obj` set, a table returned),
on statuses made by the operator's own status functions where it has them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.schedules import ScheduleHistory, ScheduleRecord
from eventix_operator.operator.status import invalid_status, schedule_status, task_status
from tests.helm.conftest import CHART
from tools.chart.gen_argocd import GROUP, SCRIPTS

# Lua 5.1, as Argo CD's gopher-lua; `lupa` is in the test extra.
lua51 = pytest.importorskip("lupa.lua51", reason="needs lupa>=2.0 (the test extra)")

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of ``obj`` by the script argocd-cm.yaml gives Argo CD for ``kind``."""
    config = yaml.safe_load((CHART / "argocd" / "argocd-cm.yaml").read_text())
    script = config["data"][f"resource.customizations.health.{GROUP}_{kind}"]
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(script)
    return str(result["status"]), str(result["message"] or "")


def resource(status: dict[str, Any] | None, *, generation: int = 1, **spec: Any) -> dict[str, Any]:
    # Argo CD gives the script the object as JSON: None fields are absent (nil) in Lua.
    def drop_none(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [drop_none(v) for v in value]
        return value

    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}, "spec": spec}
    if status is not None:
        obj["status"] = drop_none(status)
    return obj


def task_record(status: str, **fields: Any) -> TaskRecord:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(TaskRecord)}
    values.update(
        uid="5b7c", task="myapp.tasks.send", namespace="default", status=status, attempts=1,
        eta=NOW, started_at=NOW, finished_at=NOW + timedelta(seconds=3),
    )  # fmt: skip
    values.update(fields)
    return TaskRecord(**values)


def task(status: str, **fields: Any) -> dict[str, Any]:
    return resource(
        task_status(task_record(status, **fields), previous=None, generation=1, now=NOW)
    )


@pytest.mark.parametrize(
    ("row", "expected", "says"),
    [
        (task_record("done", result={"ok": True}), "Healthy", "Succeeded on attempt 1"),
        (task_record("scheduled", attempts=0), "Progressing", "Waiting in the queue"),
        (task_record("processing"), "Progressing", "Attempt 1 running"),
        (
            task_record("retry", error={"type": "Timeout", "message": "slow"}),
            "Progressing",
            "failed (Timeout: slow); next at 2026-03-01T12:00:00Z",
        ),
        (
            task_record("error", attempts=4, error={"type": "KeyError", "message": "'to'"}),
            "Degraded",
            "Failed after 4 attempt(s): KeyError: 'to'",
        ),
        (task_record("cancelled"), "Suspended", "Cancelled"),
    ],
    ids=["succeeded", "pending", "running", "retrying", "failed", "cancelled"],
)
def test_task_health_follows_its_phase(row: TaskRecord, expected: str, says: str) -> None:
    obj = resource(task_status(row, previous=None, generation=1, now=NOW))
    status, message = health("EventixTask", obj)
    assert (status, says in message) == (expected, True), message


def test_task_not_yet_seen_or_with_an_invalid_spec() -> None:
    assert health("EventixTask", resource(None))[0] == "Progressing"
    # A changed spec the operator has not handled yet: the old phase says nothing about it.
    stale = task("done")
    stale["metadata"]["generation"] = 2
    assert health("EventixTask", stale) == (
        "Progressing",
        "Waiting for the operator to see generation 2",
    )
    invalid = resource(invalid_status("args: not a list", previous=None, generation=1, now=NOW))
    assert health("EventixTask", invalid) == ("Degraded", "args: not a list")


def schedule(
    error: str | None = None, suspend: bool = False, generation: int = 1
) -> dict[str, Any]:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(ScheduleRecord)}
    values.update(
        uid="u1", k8s_namespace="ns", k8s_name="nightly", generation=generation,
        expression="0 2 * * *", time_zone="Europe/Berlin", suspend=suspend, error=error,
        next_tick=NOW + timedelta(hours=14), last_tick=None,
    )  # fmt: skip
    status = schedule_status(
        ScheduleRecord(**values), ScheduleHistory([], None, None), previous=None, now=NOW
    )
    return resource(status, generation=generation, suspend=suspend)


def test_schedule_health() -> None:
    assert health("EventixSchedule", schedule()) == ("Healthy", "Next run at 2026-03-02T02:00:00Z")
    assert health("EventixSchedule", schedule(suspend=True))[0] == "Suspended"
    status, message = health("EventixSchedule", schedule(error="bad cron expression: '61 * *'"))
    assert (status, message) == ("Degraded", "bad cron expression: '61 * *'")
    assert health("EventixSchedule", resource(None))[0] == "Progressing"
    behind = schedule()
    behind["metadata"]["generation"] = 3
    assert health("EventixSchedule", behind)[0] == "Progressing"


def ready(value: str | None, *, observed: int = 1) -> dict[str, Any]:
    conditions = [] if value is None else [
        {"type": "Active", "status": "False", "reason": "Idle", "message": "no tasks"},
        {"type": "Ready", "status": value, "reason": "R", "message": f"ready is {value}"},
    ]  # fmt: skip
    return resource({"observedGeneration": observed, "conditions": conditions})


@pytest.mark.parametrize("kind", ["EventixWorkerPool", "EventixTrigger"])
def test_ready_condition_kinds(kind: str) -> None:
    assert health(kind, ready("True")) == ("Healthy", "ready is True")
    assert health(kind, ready("False")) == ("Degraded", "ready is False")
    assert health(kind, ready("Unknown"))[0] == "Progressing"
    assert health(kind, ready(None))[0] == "Progressing"
    assert health(kind, resource(None))[0] == "Progressing"
    stale = ready("True")
    stale["metadata"]["generation"] = 2
    assert health(kind, stale)[0] == "Progressing"


def test_every_eventix_kind_has_a_health_check() -> None:
    kinds = set()
    for path in (CHART / "crds").glob("eventix*.yaml"):
        kinds.add(yaml.safe_load(path.read_text())["spec"]["names"]["kind"])
    assert kinds <= set(SCRIPTS), f"no Argo CD health check for {sorted(kinds - set(SCRIPTS))}"
