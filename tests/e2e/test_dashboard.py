"""The dashboard over what the operator made: resources on a real API server, the
session's operator and worker, a real ``eventix dashboard`` and Chromium.

What Git owns shows its owner and offers only what does not fight the next sync;
"run now" reaches the schedule's status through the operator's status sync; a
pool shows what the operator's scaler saw and decided; a queue an EventixQueue
configures is paused through its spec, not from the Queues page.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.e2e.conftest import GROUP, VERSION, Cluster
from tests.support.browser import wait_until
from tests.ui.conftest import Page, Server, launch

pytestmark = pytest.mark.kube
TOKEN = "e2e-dashboard-token-0123456789"


@pytest.fixture(scope="module")
def dashboard(e2e_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("dashboard")
    with launch(e2e_database, base, command="dashboard", EVENTIX_API_TOKEN=TOKEN) as server:
        yield server


@pytest.fixture
def page(browser: Any, dashboard: Server) -> Page:
    return Page(browser, dashboard).sign_in(TOKEN)


def test_an_eventixtasks_task_names_its_owner_and_cannot_be_deleted_here(
    cluster: Cluster, page: Page
) -> None:
    name = f"fails-{uuid.uuid4().hex[:6]}"
    cluster.create(
        "eventixtasks",
        name,
        {"task": "tests.fail", "kwargs": {"message": "from git"}, "retry": {"maxRetries": 0}},
    )
    cluster.wait("Failed", lambda: cluster.status("eventixtasks", name).get("phase") == "Failed")
    page.open("/ui/tasks?origin=k8s&task=tests.fail&status=error")

    def open_it() -> bool:
        rows = [r for r in page.all("#task-list tbody tr") if f"EventixTask {name}" in r.text]
        if not rows:
            page.driver.refresh()
            return False
        rows[0].find_element("css selector", "a").click()  # stale after a refresh: again
        return True

    wait_until("the task in the list", open_it)
    page.arrive("/ui/tasks/", exact=False)
    assert page.text("#error-message") == "from git"
    assert f"Owned by EventixTask {cluster.namespace}/{name}" in page.text("#owner")
    assert page.has("#retry")
    assert not page.has("#delete")
    page.click("#retry")  # it changes no spec: the run fails again, and the status says so
    assert "Retried 1 task" in page.text(".note")
    page.wait_text("#task-status", "error", timeout=30)
    assert page.text("#attempts").startswith("1")
    cluster.wait(
        "Failed again", lambda: cluster.status("eventixtasks", name).get("phase") == "Failed"
    )


def test_run_now_reaches_the_schedules_status(cluster: Cluster, page: Page) -> None:
    name = f"yearly-{uuid.uuid4().hex[:6]}"
    created = cluster.create(
        "eventixschedules",
        name,
        {"schedule": "0 0 1 1 *", "timeZone": "Europe/Berlin",
         "template": {"task": "tests.record", "args": [7]}},
    )  # fmt: skip
    uid = created["metadata"]["uid"]
    page.open("/ui/schedules")
    wait_until(
        "the schedule on the page",
        lambda: (
            page.has(f"tr[data-schedule='{cluster.namespace}/{name}']") or page.driver.refresh()
        ),
    )
    page.click(f"tr[data-schedule='{cluster.namespace}/{name}'] a")
    page.arrive(f"/ui/schedules/{uid}")
    assert f"Owned by EventixSchedule {cluster.namespace}/{name}" in page.text(".owned")
    page.click("#run-now", confirm=True)
    page.wait_text("#runs tbody tr", "done", timeout=30)
    run_uid = page.css("#runs tbody tr").get_attribute("data-uid")
    status = cluster.wait(
        "the manual run in the status",
        lambda: (s := cluster.status("eventixschedules", name)).get("recentRuns") and s,
    )
    assert [r["taskUid"] for r in status["recentRuns"]] == [run_uid]
    assert status["recentRuns"][0]["phase"] == "Succeeded"


def test_a_pool_shows_what_the_scaler_saw_and_decided(
    cluster: Cluster, page: Page, e2e_database: str
) -> None:
    target = f"workers-{uuid.uuid4().hex[:6]}"
    queue = f"dash-{uuid.uuid4().hex[:6]}"
    labels = {"app": target}
    apps = k8s.AppsV1Api(cluster.api.api_client)
    apps.create_namespaced_deployment(
        cluster.namespace,
        k8s.V1Deployment(
            # the opt-in label is what a pool's target needs where #18 asks for it
            metadata=k8s.V1ObjectMeta(name=target, labels={"eventix.io/scalable": "true"}),
            spec=k8s.V1DeploymentSpec(
                replicas=0,
                selector=k8s.V1LabelSelector(match_labels=labels),
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=labels),
                    spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="w", image="w:test")]),
                ),
            ),
        ),
    )
    cluster.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        cluster.namespace,
        "eventixworkerpools",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "EventixWorkerPool",
            "metadata": {"name": "reports"},
            "spec": {"scaleTargetRef": {"name": target}, "queues": [queue], "maxReplicas": 4,
                     "tasksPerReplica": 5},
        },
    )  # fmt: skip
    from sqlalchemy import create_engine

    from eventix_operator import enqueue_many

    engine = create_engine(e2e_database)
    try:
        with engine.begin() as conn:
            enqueue_many([{"task": "x", "queue": queue}] * 12, connection=conn)
    finally:
        engine.dispose()
    section = f"section[data-pool='{cluster.namespace}/reports']"
    page.open("/ui/pools")

    def decided() -> str | None:
        shown = page.text(section) if page.has(section) else ""
        if "3 desired" in shown:
            return shown
        page.driver.refresh()
        return None

    text = wait_until("the pool's decision on the page", decided, timeout=30)
    assert f"Deployment {target}" in text
    assert "12 due" in text
    assert "⌈(12 + 0) / 5⌉ within 0…4 = 3" in text
    assert page.has(f"{section} svg.chart polyline")  # the minute's sample, drawn
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, cluster.namespace, "eventixworkerpools", "reports"
    )
    wait_until(
        "the deleted pool gone from the page",
        lambda: page.driver.refresh() is None and not page.has(section),
        timeout=30,
    )


def test_an_eventixqueues_queue_is_paused_through_its_spec_not_here(
    cluster: Cluster, page: Page, dashboard: Server
) -> None:
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    queue = f"q-{name}"
    cluster.create("eventixqueues", name, {"queue": queue, "concurrencyLimit": 2})
    page.open("/ui/queues")
    row = f"#queue-list tr[data-queue='{queue}']"
    page.wait_text(f"{row} .owner", f"EventixQueue {cluster.namespace}/{name}", timeout=30)
    assert page.text(f"{row} .state") == "active"
    assert page.text(f"{row} .concurrency") == "2"
    assert page.css(f"{row} button.pause").get_attribute("disabled") is not None
    assert "change spec.paused" in page.text(f"{row} .hint")
    # asked anyway (a stale page, a crafted form): refused, and the queue stays as Git says
    csrf = page.css("input[name=csrf]").get_attribute("value")
    cookie = next(c["value"] for c in page.driver.get_cookies() if c["name"] == "eventix_session")
    status, _, body = dashboard.request(
        "POST", "/ui/queues/pause", body=f"csrf={csrf}&queue={queue}", cookie=cookie
    )
    assert status == 409
    assert f"EventixQueue {cluster.namespace}/{name} configures queue {queue}" in body
    # the spec pauses it, and the page shows it
    cluster.patch("eventixqueues", name, {"queue": queue, "concurrencyLimit": 2, "paused": True})
    page.wait_text(f"{row} .state", "paused", timeout=30)
    assert page.css(f"{row} button.resume").get_attribute("disabled") is not None
    cluster.wait("Paused", lambda: cluster.status("eventixqueues", name).get("phase") == "Paused")
    cluster.delete("eventixqueues", name)
