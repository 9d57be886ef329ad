"""pytest plugin: a real Kubernetes API server for the tests, without Docker (see
``tools/kube/controlplane.py``: a local etcd and kube-apiserver, or the cluster of
``EVENTIX_TEST_KUBECONFIG``).

Fixtures: ``kube_api`` (session), ``kube_namespace`` and ``quiet_namespace`` (function).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from eventix_operator.operator.kube import KINDS
from eventix_operator.resources import GROUP, VERSION
from tests.support.processes import operators_frozen
from tools.kube.controlplane import (
    KUBECONFIG_ENV,
    KubeAPI,
    ensure_binaries,
    kube_api_session,
    to_stderr,
)

__all__ = [
    "KUBECONFIG_ENV",
    "KubeAPI",
    "ensure_binaries",
    "forget_eventix_objects",
    "kube_api_session",
]

_BUILD_ERROR = pytest.StashKey[str]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before the first test, outside any per-test timeout, and show
    the build's progress lines on the terminal. A failed build fails the kube tests only."""
    config = session.config
    if config.option.collectonly or os.environ.get(KUBECONFIG_ENV):
        return
    if not any("kube_api" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def progress(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"kube: {line}")
        else:
            to_stderr(line)

    try:
        ensure_binaries("etcd", "kube-apiserver", progress=progress)
    except (OSError, RuntimeError) as err:
        config.stash[_BUILD_ERROR] = str(err)
        progress("the build failed: the tests that need a Kubernetes API server will fail.")


@pytest.fixture(scope="session")
def kube_api(request: pytest.FixtureRequest) -> Iterator[KubeAPI]:
    """A real Kubernetes API server for the session, with the repository's CRDs installed."""
    build_error = request.config.stash.get(_BUILD_ERROR, None)
    if build_error is not None:
        pytest.fail(build_error, pytrace=False)
    with kube_api_session() as api:
        yield api


@pytest.fixture
def kube_namespace(kube_api: KubeAPI, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; its deletion is started afterwards, not awaited."""
    name = kube_api.create_namespace(request.node.name)
    yield name
    kube_api.delete_namespace(name)


@pytest.fixture
def quiet_namespace(kube_api: KubeAPI, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for a test that plays the operator: no operator process of the session
    runs while the test does, and the Eventix objects it leaves are gone before they resume, so
    none of them ever acts on it (the session's operator watches every namespace)."""
    with operators_frozen():
        name = kube_api.create_namespace(request.node.name)
        try:
            yield name
        finally:
            forget_eventix_objects(kube_api, name)
            kube_api.delete_namespace(name)


def forget_eventix_objects(api: KubeAPI, namespace: str) -> None:
    """Remove a namespace's Eventix objects for good (finalizers too): a local API server never
    finishes deleting a namespace (it has no namespace controller), and a cluster-wide operator
    would otherwise find them there later."""
    custom = k8s.CustomObjectsApi(api.api_client)
    for plural in KINDS:
        with contextlib.suppress(ApiException):
            found = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
            for item in found["items"]:
                name = item["metadata"]["name"]
                with contextlib.suppress(ApiException):
                    custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, name, {"metadata": {"finalizers": None}}
                    )
                    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
