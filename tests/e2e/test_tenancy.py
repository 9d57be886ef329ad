"""Tenancy end to end (docs/tenancy.md): a real API server, the operator with the default rule
(`namespaced`), PostgreSQL, a worker and a real ``eventix api``. Two namespaces stand for two
teams, A (the test's namespace) and B; both may use one shared queue of the allow-list."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.api.conftest import TOKEN, ApiServer, launch
from tests.e2e.conftest import GROUP, SHARED, VERSION, Cluster, Operators
from tests.support.kube import KubeAPI

pytestmark = pytest.mark.kube
TASKS, SCHEDULES, TRIGGERS = "eventixtasks", "eventixschedules", "eventixtriggers"
#: A queue the allow-list gives every namespace.
COMMON = f"common-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module", autouse=True)
def namespaced(operators: Operators) -> Iterator[None]:
    """The session's operator, replaced by one with the default rule for this module."""
    operators.reconfigure(
        {"EVENTIX_TENANCY": "namespaced", "EVENTIX_TENANCY_ALLOW": json.dumps({"*": [COMMON]})}
    )
    yield
    operators.reconfigure(SHARED)


@pytest.fixture
def team_b(kube_api: KubeAPI, cluster: Cluster) -> Iterator[Cluster]:
    namespace = kube_api.create_namespace("team-b")
    yield Cluster(kube_api, namespace, cluster.procs)
    kube_api.delete_namespace(namespace)


@pytest.fixture(scope="module")
def api(e2e_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    base = tmp_path_factory.mktemp("api")
    with launch(e2e_database, Path(sys.executable), base, EVENTIX_API_TOKEN=TOKEN) as server:
        yield server


@pytest.fixture
def db(e2e_database: str) -> Iterator[Engine]:
    engine = create_engine(e2e_database)
    yield engine
    engine.dispose()


def create(cluster: Cluster, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    kind = {TASKS: "EventixTask", SCHEDULES: "EventixSchedule", TRIGGERS: "EventixTrigger"}
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind[plural],
        "metadata": {"name": name},
        "spec": spec,
    }
    created: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, plural, body
    )
    return created


def condition(cluster: Cluster, plural: str, name: str, type_: str = "Ready") -> dict[str, Any]:
    for c in cluster.status(plural, name).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def refused(cluster: Cluster, plural: str, name: str) -> dict[str, Any]:
    """Wait until the resource is refused; its Ready condition."""
    cluster.wait(
        f"{name} refused",
        lambda: condition(cluster, plural, name).get("reason") == "QueueNotAllowed",
    )
    ready = condition(cluster, plural, name)
    stalled = condition(cluster, plural, name, "Stalled")
    assert (ready["status"], stalled["status"], stalled["reason"]) == (
        "False",
        "True",
        "QueueNotAllowed",
    )
    cluster.wait(
        f"a QueueNotAllowed event on {name}",
        lambda: ("Warning", "QueueNotAllowed") in {(t, r) for t, r, _ in cluster.events(name)},
    )
    return ready


def count(db: Engine, where: str, **params: Any) -> int:
    with db.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM eventix_task WHERE {where}"), params)
                   .scalar_one())  # fmt: skip


def test_a_resource_naming_another_teams_queue_is_refused_and_enqueues_nothing(
    cluster: Cluster, team_b: Cluster, db: Engine
) -> None:
    a, b = cluster.namespace, team_b.namespace
    task = create(cluster, TASKS, "steal", {"task": "tests.record", "args": [1], "queue": b})
    ready = refused(cluster, TASKS, "steal")
    assert f"namespace {a!r} may not use queue {b!r}" in ready["message"]
    assert "taskUid" not in cluster.status(TASKS, "steal")

    schedule = create(
        cluster,
        SCHEDULES,
        "steal-nightly",
        {"schedule": "* * * * * *", "template": {"task": "tests.record", "queue": f"{b}.x"}},
    )
    refused(cluster, SCHEDULES, "steal-nightly")

    # A task of its own, with no queue: the namespace's queue, served by A's worker.
    worker = cluster.procs.worker("--queues", a)
    try:
        create(cluster, TASKS, "own", {"task": "tests.record", "args": [18]})
        cluster.wait(
            "own Succeeded", lambda: cluster.status(TASKS, "own").get("phase") == "Succeeded"
        )
        assert cluster.status(TASKS, "own")["queue"] == a
    finally:
        cluster.procs.stop(worker)

    # The refused ones enqueued nothing, then or since.
    assert count(db, "k8s_uid = :u", u=task["metadata"]["uid"]) == 0
    assert count(db, "schedule_uid = :u", u=schedule["metadata"]["uid"]) == 0
    assert count(db, "namespace IN (:b, :bx)", b=b, bx=f"{b}.x") == 0

    # Changing the schedule to a queue A may use recovers it: Ready, and it fires there.
    cluster.patch(
        SCHEDULES, "steal-nightly", {"template": {"task": "tests.record", "queue": COMMON}}
    )
    cluster.wait(
        "the schedule Ready",
        lambda: condition(cluster, SCHEDULES, "steal-nightly").get("status") == "True",
    )
    cluster.wait(
        "a run in the allowed queue",
        lambda: count(
            db, "schedule_uid = :u AND namespace = :q", u=schedule["metadata"]["uid"], q=COMMON
        ),
    )
    cluster.delete(SCHEDULES, "steal-nightly")


def test_a_unique_key_cannot_reach_across_namespaces(
    cluster: Cluster, team_b: Cluster, db: Engine
) -> None:
    """Both teams may use the queue COMMON: A's task with B's key gets a task of its own,
    and B's pending task keeps its args."""
    spec = {"task": "tests.record", "queue": COMMON, "uniqueKey": "nightly", "delaySeconds": 3600}
    create(team_b, TASKS, "theirs", {**spec, "args": [1]})
    theirs = team_b.wait("B enqueued", lambda: team_b.status(TASKS, "theirs").get("taskUid"))
    create(cluster, TASKS, "intruder", {**spec, "args": [666]})
    mine = cluster.wait("A enqueued", lambda: cluster.status(TASKS, "intruder").get("taskUid"))
    assert mine != theirs
    # Within A the key merges as Eventix's does.
    create(cluster, TASKS, "again", {**spec, "args": [2]})
    again = cluster.wait("A merged", lambda: cluster.status(TASKS, "again").get("taskUid"))
    assert again == mine
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT uid::text, args, k8s_namespace FROM eventix_task WHERE uid IN (:a, :b)"),
            {"a": mine, "b": theirs},
        )
        found = {r.uid: (r.args, r.k8s_namespace) for r in rows}
    assert found == {theirs: ([1], team_b.namespace), mine: ([2], cluster.namespace)}
    assert not any(r == "Merged" for _, r, _ in team_b.events("theirs"))
    assert not any(r == "Merged" for _, r, _ in cluster.events("intruder"))


def post_event(api: ApiServer, name: str, queue: str, payload: dict[str, Any]) -> list[Any]:
    event = {"name": name, "namespace": queue, "priority": 0, "payload": payload}
    status, answer = api.request("POST", "/event", event)
    assert status == 200, (status, answer)
    tasks: list[Any] = answer
    return tasks


def test_a_trigger_in_one_namespace_does_not_fire_on_anothers_events(
    cluster: Cluster, team_b: Cluster, api: ApiServer, db: Engine
) -> None:
    a, b = cluster.namespace, team_b.namespace
    event = f"order.created.{uuid.uuid4().hex[:8]}"
    copy_all = {"task": "tests.record", "args": ["{{ payload }}"]}
    created = {
        ns.namespace: create(ns, TRIGGERS, "copy", {"eventName": event, "template": copy_all})
        for ns in (cluster, team_b)
    }
    for ns in (cluster, team_b):
        ns.wait("registered", lambda ns=ns: condition(ns, TRIGGERS, "copy").get("status") == "True")
    # A trigger of A that would enqueue into B's queue is refused and registers nothing.
    create(cluster, TRIGGERS, "push", {"eventName": event, "template": {**copy_all, "queue": b}})
    refused(cluster, TRIGGERS, "push")

    # B's event: only B's trigger sees it; its task is B's.
    [task] = post_event(api, event, b, {"secret": "of B"})
    assert (task["namespace"], task["args"]) == (b, [{"secret": "of B"}])
    # A's event: only A's trigger.
    [task] = post_event(api, event, a, {"n": 1})
    assert (task["namespace"], task["args"]) == (a, [{"n": 1}])
    # An event of the queue both may use: both fire, each task of its own namespace.
    tasks = post_event(api, event, COMMON, {"n": 2})
    assert sorted(t["namespace"] for t in tasks) == [COMMON, COMMON]
    with db.connect() as conn:
        owners = conn.execute(
            text("SELECT k8s_namespace FROM eventix_task WHERE uid = ANY(:u)"),
            {"u": [t["uid"] for t in tasks]},
        ).scalars()
        assert sorted(owners) == sorted([a, b])
    # B's event of a queue below its own: B's again. An event of neither: nobody fires,
    # nobody counts it.
    [task] = post_event(api, event, f"{b}.eu", {"n": 3})
    assert task["namespace"] == f"{b}.eu"
    assert post_event(api, event, "default", {"n": 4}) == []

    for ns, fired in ((cluster, 2), (team_b, 3)):
        ns.wait(
            f"firedCount {fired}",
            lambda ns=ns, fired=fired: ns.status(TRIGGERS, "copy").get("firedCount") == fired,
        )
        status = ns.status(TRIGGERS, "copy")
        assert (status["ignoredCount"], status["failedCount"]) == (0, 0), ns.namespace
    uid_a = created[a]["metadata"]["uid"]
    with db.connect() as conn:
        scope = conn.execute(
            text("SELECT queue_scope FROM eventix_trigger WHERE uid = :u"), {"u": uid_a}
        ).scalar_one()
    assert scope == [a, f"{a}.%", COMMON]
