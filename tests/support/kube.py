"""pytest plugin: a real Kubernetes API server for the tests, without Docker (see
``tools/kube/controlplane.py``: a local etcd and kube-apiserver, or the cluster of
``EVENTIX_TEST_KUBECONFIG``).

Fixtures: ``kube_api`` (session) and ``kube_namespace`` (function).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tools.kube.controlplane import (
    KUBECONFIG_ENV,
    KubeAPI,
    ensure_binaries,
    kube_api_session,
    to_stderr,
)

__all__ = ["KUBECONFIG_ENV", "KubeAPI", "ensure_binaries", "kube_api_session"]

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
