"""The operator end to end: a real API server, PostgreSQL, operator and worker processes."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.support.kube import KubeAPI
from tests.support.postgres import PostgresServer
from tests.support.processes import Processes, free_port, make_processes

GROUP, VERSION = "eventix.io", "v1alpha1"


class Cluster:
    """Resources in one namespace, and the processes that serve them."""

    def __init__(self, api: KubeAPI, namespace: str, procs: Processes) -> None:
        self.api = api
        self.namespace = namespace
        self.procs = procs
        self.custom = k8s.CustomObjectsApi(api.api_client)
        self.core = k8s.CoreV1Api(api.api_client)

    def operator(self, *args: str, ready: bool = False, **env: str) -> Any:
        """Start an operator process; with ``ready``, return once its liveness
        endpoint answers (its start-up, migrations included, is done)."""
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        proc = self.procs.start(
            "operator", "operator", "--liveness", liveness,
            *args, KUBECONFIG=str(self.api.kubeconfig), EVENTIX_LOG_LEVEL="INFO", **env,
        )  # fmt: skip
        if ready:
            self.wait("operator liveness", lambda: _answers(liveness), 60)
        return proc

    def create(self, plural: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        kind = {
            "eventixtasks": "EventixTask",
            "eventixschedules": "EventixSchedule",
            "eventixqueues": "EventixQueue",
        }[plural]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return created

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def patch(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name, {"spec": spec}
        )

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)

    def status(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, name) or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.procs.logs()}")

    def events(self, name: str) -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [(e.type, e.reason, e.message) for e in items]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def e2e_database(pg_server: PostgresServer) -> Iterator[str]:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    with pg_server.admin() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE eventix_template")
    yield pg_server.url_for(name)
    with pg_server.admin() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def e2e_processes(
    e2e_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Processes]:
    procs = make_processes(e2e_database, Path(tmp_path_factory.mktemp("e2e")))
    yield procs
    procs.stop_all()


#: The session operator's tenancy: a single-team install (docs/tenancy.md), so that every
#: test namespace's resources may use the queue `default` that the session's worker serves.
#: tests/e2e/test_tenancy.py swaps in an operator with the default rule, `namespaced`.
SHARED = {"EVENTIX_TENANCY": "shared"}


class Operators:
    """The session's operator (restartable) and worker processes."""

    def __init__(self, api: KubeAPI, procs: Processes) -> None:
        self.cluster = Cluster(api, "default", procs)
        self.procs = procs
        self.env: dict[str, str] = dict(SHARED)
        self.main = self.cluster.operator(**self.env)
        self.worker = procs.worker("--concurrency", "8")

    def restart(self, down_seconds: float, kill: bool = True) -> None:
        if kill:
            self.main.kill()
            self.main.wait(10)
        else:
            self.procs.stop(self.main)
        time.sleep(down_seconds)
        self.main = self.cluster.operator(**self.env)

    def reconfigure(self, env: dict[str, str]) -> None:
        """Replace the operator with one of these settings (until the next call); return
        once the new one serves. The old one stops cleanly first: one acts at a time."""
        self.procs.stop(self.main)
        self.env = dict(env)
        self.main = self.cluster.operator(ready=True, **self.env)

    def another_replica(self, **env: str) -> Any:
        return self.cluster.operator(ready=True, **{**self.env, **env})


@pytest.fixture(scope="session")
def operators(kube_api: KubeAPI, e2e_processes: Processes) -> Iterator[Operators]:
    """One operator and one worker for the session's tests."""
    ops = Operators(kube_api, e2e_processes)
    yield ops
    e2e_processes.stop(ops.main)
    e2e_processes.stop(ops.worker)


@pytest.fixture
def cluster(
    kube_api: KubeAPI, kube_namespace: str, e2e_processes: Processes, operators: Operators
) -> Cluster:
    return Cluster(kube_api, kube_namespace, e2e_processes)
