"""pytest plugin: ``gitops_tool``, the real kstatus, Argo CD's Lua and Prometheus's parser.

``tools/gitops/build.sh`` builds ``eventix-gitops`` from pinned Go modules once per machine (a
minute or two the first time, nothing after that); the session fixture runs it before the first
test that needs it, passing on its own progress lines only. See ``tools/gitops/README.md``.

Also the GitOps rule: what every phase of every kind must be, to both tools (:data:`RULE`).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine

from eventix_operator.db.queues import Queue
from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.schedules import Run, ScheduleHistory, ScheduleRecord
from eventix_operator.db.triggers import TriggerRecord
from eventix_operator.operator.kube import Kube, ResourceRef, Scale
from eventix_operator.operator.pools import PoolScaler
from eventix_operator.operator.queues import QUEUE_CONFLICT
from eventix_operator.operator.reconcile import handled
from eventix_operator.operator.status import (
    invalid_status,
    pool_status,
    queue_status,
    schedule_status,
    task_status,
    trigger_status,
)
from eventix_operator.scaling import Load, decide, pool_config
from eventix_operator.scaling.scaler import ScalerState
from eventix_operator.tenancy import QUEUE_NOT_ALLOWED

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "gitops" / "build.sh"

#: The one verdict both tools must give, by name: kstatus's status and Argo CD's health.
VERDICTS: dict[str, tuple[str, str]] = {
    "in progress": ("InProgress", "Progressing"),
    "current": ("Current", "Healthy"),
    "failed": ("Failed", "Degraded"),
    "terminating": ("Terminating", "Progressing"),
}

#: The GitOps rule (DESIGN.md, "What other tools see"; docs/observability.md has the same
#: table): kind -> phase -> verdict. A task waiting or running is in progress, as a Job is; a
#: finished one is current; a failed one failed; a cancelled one is current (done: nothing
#: runs and nothing failed). A schedule, trigger or pool that works is current, suspended
#: included; an invalid spec is failed; a pool whose target is missing or refuses to scale is
#: failed until someone fixes it; so is a resource whose queue its namespace may not use
#: (QueueNotAllowed, docs/tenancy.md). Every kind is in progress before the operator has reported
#: on its current generation, and terminating while it is deleted.
RULE: dict[str, dict[str, str]] = {
    "EventixTask": {
        "not yet seen": "in progress",
        "enqueued, not yet synced": "in progress",
        "Pending": "in progress",
        "Running": "in progress",
        "Retrying": "in progress",
        "Succeeded": "current",
        "Failed": "failed",
        "Cancelled": "current",
        "invalid spec": "failed",
        "queue not allowed": "failed",
        "spec changed, not yet seen": "in progress",
        "deleting": "terminating",
    },
    "EventixSchedule": {
        "not yet seen": "in progress",
        "accepted, not yet synced": "in progress",
        "Scheduled": "current",
        "Suspended": "current",
        "invalid schedule": "failed",
        "invalid spec": "failed",
        "queue not allowed": "failed",
        "spec changed, not yet seen": "in progress",
        "deleting": "terminating",
    },
    "EventixTrigger": {
        "not yet seen": "in progress",
        "Registered": "current",
        "invalid spec": "failed",
        "queue not allowed": "failed",
        "spec changed, not yet seen": "in progress",
        "deleting": "terminating",
    },
    "EventixQueue": {
        "not yet seen": "in progress",
        "Active": "current",
        "Paused": "current",
        "queue not allowed": "failed",
        "queue configured by another": "failed",
        "spec changed, not yet seen": "in progress",
        "deleting": "terminating",
    },
    "EventixWorkerPool": {
        "not yet seen": "in progress",
        "Scaling": "current",
        "target not found": "failed",
        "scale failed": "failed",
        "invalid spec": "failed",
        "spec changed, not yet seen": "in progress",
        "deleting": "terminating",
    },
}


PLURALS = {
    "EventixTask": "eventixtasks",
    "EventixSchedule": "eventixschedules",
    "EventixTrigger": "eventixtriggers",
    "EventixWorkerPool": "eventixworkerpools",
    "EventixQueue": "eventixqueues",
}

#: A spec of each kind that the API server takes, and a change of it that it also takes.
SPECS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "EventixTask": (
        {"task": "myapp.tasks.send", "args": [1], "delaySeconds": 3600}, {"priority": 5}
    ),
    "EventixSchedule": (
        {"schedule": "0 2 * * *", "timeZone": "Europe/Berlin",
         "template": {"task": "reports.nightly"}},
        {"concurrencyPolicy": "Forbid"},
    ),
    "EventixTrigger": (
        {"eventName": "order.created", "template": {"task": "shop.tasks.ship"}},
        {"filter": {"kind": "express"}},
    ),
    "EventixWorkerPool": (
        {"scaleTargetRef": {"name": "workers"}, "queues": ["default"], "maxReplicas": 5},
        {"maxReplicas": 6},
    ),
    "EventixQueue": ({"queue": "ns.reports", "concurrencyLimit": 3}, {"concurrencyLimit": 4}),
}  # fmt: skip

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Phase:
    """One phase of one kind, as the API server holds it: the resource is created with the
    kind's spec, then ``status`` (None: none) is merge-patched into its status subresource as
    the operator does, then the spec is changed (``change_spec``) or the resource deleted
    while a finalizer holds it (``deleting``)."""

    kind: str
    name: str
    status: list[dict[str, Any]] = field(default_factory=list)  # merge patches, in order
    spec: dict[str, Any] = field(default_factory=dict)  # on top of the kind's spec
    change_spec: bool = False
    deleting: bool = False

    @property
    def expected(self) -> str:
        return RULE[self.kind][self.name]

    @property
    def plural(self) -> str:
        return PLURALS[self.kind]

    def body(self, name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name}
        if self.deleting:
            metadata["finalizers"] = [FINALIZER]
        return {
            "apiVersion": "eventix.io/v1alpha1",
            "kind": self.kind,
            "metadata": metadata,
            "spec": {**SPECS[self.kind][0], **self.spec},
        }


#: Holds a deleted resource in its Terminating phase for as long as the test wants.
FINALIZER = "tests.eventix.io/hold"


def _task_row(status: str, **fields: Any) -> TaskRecord:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(TaskRecord)}
    values.update(
        uid="5b7c0f3e-8a61-4c1e-9d39-2f0f1c7e1a11", task="myapp.tasks.send", namespace="default",
        status=status, attempts=1, eta=NOW, started_at=NOW, finished_at=NOW + timedelta(seconds=3),
    )  # fmt: skip
    values.update(fields)
    return TaskRecord(**values)


def _task(status: str, **fields: Any) -> list[dict[str, Any]]:
    """What the handler writes once the row exists, then what status sync writes from it."""
    row = _task_row(status, **fields)
    return [handled(1, taskUid=row.uid), task_status(row, previous=None, generation=None, now=NOW)]


def _schedule(
    error: str | None = None, suspend: bool = False, reason: str | None = None
) -> list[dict[str, Any]]:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(ScheduleRecord)}
    values.update(
        uid="u1", k8s_namespace="ns", k8s_name="nightly", generation=1, expression="0 2 * * *",
        time_zone="Europe/Berlin", suspend=suspend, error=error, last_tick=NOW - timedelta(days=1),
        next_tick=None if error or suspend else NOW + timedelta(hours=14), error_reason=reason,
    )  # fmt: skip
    run = Run("5b7c0f3e-8a61-4c1e-9d39-2f0f1c7e1a12", "done", 1, NOW - timedelta(days=1), NOW)
    history = ScheduleHistory([run], NOW, None)
    record = ScheduleRecord(**values)
    return [handled(1), schedule_status(record, history, previous=None, now=NOW)]


def _trigger() -> list[dict[str, Any]]:
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(TriggerRecord)}
    values.update(
        uid="t1", name="ns/ship", k8s_namespace="ns", k8s_name="ship", generation=1,
        event_name="order.created", template={"task": "shop.tasks.ship"}, fired_count=3,
        ignored_count=0, failed_count=0, created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    return [handled(1), trigger_status(TriggerRecord(**values), previous=None, now=NOW)]


def _pool(ready: tuple[bool, str, str] | None) -> list[dict[str, Any]]:
    """A look of the scaler at the pool (None: a spec the operator cannot use)."""
    spec = SPECS["EventixWorkerPool"][0]
    if ready is None:  # what the handler reports (the CRD refuses most such specs already)
        scaler = PoolScaler(cast(Engine, None), cast(Kube, None))
        ref = ResourceRef("eventixworkerpools", "ns", "pool", "p1")
        configured = scaler.configure(
            ref, {**spec, "maxReplicas": -1}, generation=1, status=None, now=NOW
        )
        assert configured.status is not None
        return [configured.status]
    config, load = pool_config(spec), Load(due=12, running=3, busy_workers=1)
    scale = Scale(1, 1) if ready[0] else None
    decision = decide(config.scaling, load, 1, ScalerState(), 0.0)[0] if ready[0] else None
    return [
        pool_status(config, load, scale, decision, ready=ready, previous={}, generation=1,
                    last_scale=None, now=NOW)
    ]  # fmt: skip


def _queue(paused: bool = False) -> list[dict[str, Any]]:
    """What the handler writes once the settings row exists, then status sync's look."""
    queue = Queue(
        name="ns.reports", paused=paused, concurrency_limit=3, rate_count=None,
        rate_per_seconds=None, retain_succeeded_seconds=None, retain_failed_seconds=None,
        k8s_namespace="ns", k8s_name="reports", k8s_uid="q1", k8s_generation=1,
        updated_at=NOW, due=12, running=3, oldest_due_seconds=4.2,
    )  # fmt: skip
    return [handled(1, queue=queue.name), queue_status(queue, previous=None, now=NOW)]


def _invalid(message: str, reason: str = "InvalidSpec") -> list[dict[str, Any]]:
    return [invalid_status(message, previous=None, generation=1, now=NOW, reason=reason)]


#: What a resource refused by the tenancy rule says (operator/reconcile.py's ``refused``).
NOT_ALLOWED = "namespace 'ns' may not use queue 'team-b'; it may use ns, ns.*"


def phases() -> list[Phase]:
    """Every phase of :data:`RULE`, with the status the operator's own functions write."""
    not_found = (False, "TargetNotFound", "Deployment workers does not exist in namespace ns")
    builders: dict[tuple[str, str], Callable[[], Phase]] = {
        ("EventixTask", "enqueued, not yet synced"): lambda: Phase(
            "EventixTask", "enqueued, not yet synced", [handled(1, taskUid="u")]
        ),
        ("EventixTask", "Pending"): lambda: Phase(
            "EventixTask", "Pending", _task("scheduled", attempts=0, started_at=None)
        ),
        ("EventixTask", "Running"): lambda: Phase("EventixTask", "Running", _task("processing")),
        ("EventixTask", "Retrying"): lambda: Phase(
            "EventixTask", "Retrying", _task("retry", error={"type": "Timeout", "message": "slow"})
        ),
        ("EventixTask", "Succeeded"): lambda: Phase(
            "EventixTask", "Succeeded", _task("done", result={"ok": True})
        ),
        ("EventixTask", "Failed"): lambda: Phase(
            "EventixTask",
            "Failed",
            _task("error", attempts=4, error={"type": "KeyError", "message": "'to'"}),
        ),
        ("EventixTask", "Cancelled"): lambda: Phase(
            "EventixTask", "Cancelled", _task("cancelled", started_at=None)
        ),
        ("EventixTask", "invalid spec"): lambda: Phase(
            "EventixTask", "invalid spec", _invalid("spec cannot be enqueued: args: not a list")
        ),
        ("EventixTask", "queue not allowed"): lambda: Phase(
            "EventixTask", "queue not allowed", _invalid(NOT_ALLOWED, QUEUE_NOT_ALLOWED)
        ),
        ("EventixSchedule", "queue not allowed"): lambda: Phase(
            "EventixSchedule",
            "queue not allowed",
            # The handler's status, then status sync's from the stopped row.
            [
                *_invalid(NOT_ALLOWED, QUEUE_NOT_ALLOWED),
                *_schedule(error=NOT_ALLOWED, reason=QUEUE_NOT_ALLOWED)[1:],
            ],
        ),
        ("EventixTrigger", "queue not allowed"): lambda: Phase(
            "EventixTrigger", "queue not allowed", _invalid(NOT_ALLOWED, QUEUE_NOT_ALLOWED)
        ),
        ("EventixSchedule", "accepted, not yet synced"): lambda: Phase(
            "EventixSchedule", "accepted, not yet synced", [handled(1)]
        ),
        ("EventixSchedule", "Scheduled"): lambda: Phase(
            "EventixSchedule", "Scheduled", _schedule()
        ),
        ("EventixSchedule", "Suspended"): lambda: Phase(
            "EventixSchedule", "Suspended", _schedule(suspend=True), spec={"suspend": True}
        ),
        ("EventixSchedule", "invalid schedule"): lambda: Phase(
            "EventixSchedule",
            "invalid schedule",
            _schedule(error="unknown time zone 'Europe/Berlinn'"),
        ),
        ("EventixSchedule", "invalid spec"): lambda: Phase(
            "EventixSchedule", "invalid spec", _invalid("spec cannot be used: template.task")
        ),
        ("EventixTrigger", "Registered"): lambda: Phase("EventixTrigger", "Registered", _trigger()),
        ("EventixTrigger", "invalid spec"): lambda: Phase(
            "EventixTrigger", "invalid spec", _invalid("spec cannot be used: '{{ payload }}'")
        ),
        ("EventixWorkerPool", "Scaling"): lambda: Phase(
            "EventixWorkerPool", "Scaling", _pool((True, "Scaling", "Deployment workers is scaled"))
        ),
        ("EventixWorkerPool", "target not found"): lambda: Phase(
            "EventixWorkerPool", "target not found", _pool(not_found)
        ),
        ("EventixWorkerPool", "scale failed"): lambda: Phase(
            "EventixWorkerPool",
            "scale failed",
            _pool((False, "ScaleFailed", "cannot scale Deployment workers: 403 Forbidden")),
        ),
        ("EventixWorkerPool", "invalid spec"): lambda: Phase(
            "EventixWorkerPool", "invalid spec", _pool(None)
        ),
        ("EventixQueue", "Active"): lambda: Phase("EventixQueue", "Active", _queue()),
        ("EventixQueue", "Paused"): lambda: Phase(
            "EventixQueue", "Paused", _queue(paused=True), spec={"paused": True}
        ),
        ("EventixQueue", "queue not allowed"): lambda: Phase(
            "EventixQueue", "queue not allowed", _invalid(NOT_ALLOWED, QUEUE_NOT_ALLOWED)
        ),
        ("EventixQueue", "queue configured by another"): lambda: Phase(
            "EventixQueue",
            "queue configured by another",
            _invalid("queue 'ns.reports' is configured by EventixQueue ns/other", QUEUE_CONFLICT),
        ),
    }
    current = {
        "EventixTask": lambda: _task("done", result={"ok": True}),
        "EventixSchedule": _schedule,
        "EventixTrigger": _trigger,
        "EventixWorkerPool": lambda: _pool((True, "Scaling", "Deployment workers is scaled")),
        "EventixQueue": _queue,
    }
    found = []
    for kind, rule in RULE.items():
        for name in rule:
            if name == "not yet seen":
                found.append(Phase(kind, name))
            elif name == "spec changed, not yet seen":
                found.append(Phase(kind, name, current[kind](), change_spec=True))
            elif name == "deleting":
                found.append(Phase(kind, name, current[kind](), deleting=True))
            else:
                found.append(builders[(kind, name)]())
    return found


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


class GitOpsTool:
    """``eventix-gitops``: every call runs the binary once for a whole batch."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _run(self, *args: str, stdin: str) -> Any:
        done = subprocess.run(
            [str(self.path), *args], input=stdin, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"eventix-gitops {' '.join(args)} failed: {done.stderr}")
        return json.loads(done.stdout)

    def kstatus(self, objects: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        """What Flux's kstatus computes for each object."""
        return [Verdict(**v) for v in self._run("kstatus", stdin=json.dumps(list(objects)))]

    def argocd_health(self, script: str, objects: Sequence[Mapping[str, Any]]) -> list[Verdict]:
        """What Argo CD says of each object with this health script (gopher-lua, Lua 5.1)."""
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
            file.write(script)
            file.flush()
            found = self._run("argocd-health", file.name, stdin=json.dumps(list(objects)))
        return [Verdict(**v) for v in found]

    def promql(self, expressions: Iterable[str]) -> list[dict[str, Any]]:
        """Per expression: ``metrics`` (the names it reads) and ``error`` (if it does not parse)."""
        found: list[dict[str, Any]] = self._run("promql", stdin=json.dumps(list(expressions)))
        return found

    def rules(self, rule_file: str) -> dict[str, Any]:
        """``promtool check rules`` on a rule file: ``errors``, and ``rules`` with their metrics."""
        found: dict[str, Any] = self._run("rules", stdin=rule_file)
        return found


def build(progress: Any = None) -> Path:
    """The binary's path, built first if this machine has none of this version."""
    emit = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    proc = subprocess.Popen(
        ["bash", str(BUILD_SCRIPT), "--print-path"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    assert proc.stdout is not None
    lines = []
    for raw in proc.stderr:
        lines.append(raw.rstrip())
        emit(raw.rstrip())
    out = proc.stdout.read().strip()
    if proc.wait() != 0 or not out:
        raise RuntimeError("tools/gitops/build.sh failed:\n" + "\n".join(lines[-30:]))
    return Path(out)


@pytest.fixture(scope="session")
def gitops_tool() -> GitOpsTool:
    return GitOpsTool(build())
