"""The test API server is a real one: each test is a behaviour a fake would get wrong."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any, cast

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.support.kube import KubeAPI

pytestmark = pytest.mark.kube

GROUP = "smoke.eventix.test"
VERSION = "v1"
PLURAL = "widgets"
CEL_MESSAGE = "spec.min must not exceed spec.max"

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "x-kubernetes-validations": [
                                    {"rule": "self.min <= self.max", "message": CEL_MESSAGE}
                                ],
                                "properties": {
                                    "size": {"type": "string", "enum": ["small", "large"]},
                                    "colour": {"type": "string", "pattern": "^[a-z]+$"},
                                    "min": {"type": "integer", "default": 0},
                                    "max": {"type": "integer", "default": 10},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widgets(kube_api: KubeAPI) -> Iterator[k8s.CustomObjectsApi]:
    """The throwaway Widget CRD, installed for this module; its objects' API."""
    kube_api.apply_crd(WIDGET_CRD)
    yield k8s.CustomObjectsApi(kube_api.api_client)
    kube_api.delete_crd(WIDGET_CRD["metadata"]["name"])


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": "small", **spec},
    }


def status_message(err: ApiException) -> str:
    """The message of the Status object the API server answered with."""
    return str(json.loads(str(err.body))["message"])


def create_widget(api: k8s.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> Any:
    return api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get_widget(api: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return cast(
        dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"min": 5, "max": 1}, CEL_MESSAGE),
        ({"size": "huge"}, 'Unsupported value: "huge"'),
        ({"colour": "Red!"}, "should match '^[a-z]+$'"),
    ],
    ids=["cel-rule", "enum", "pattern"],
)
def test_invalid_object_is_rejected_with_the_schema_message(
    widgets: k8s.CustomObjectsApi, kube_namespace: str, spec: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ApiException) as caught:
        create_widget(widgets, kube_namespace, widget("bad", **spec))
    assert caught.value.status == 422
    assert expected in status_message(caught.value)

    # The same object made valid goes through, with the schema defaults filled in.
    created = create_widget(widgets, kube_namespace, widget("good"))
    assert created["spec"] == {"size": "small", "min": 0, "max": 10}


def test_stale_resource_version_update_conflicts(
    widgets: k8s.CustomObjectsApi, kube_namespace: str
) -> None:
    create_widget(widgets, kube_namespace, widget("w"))
    stale = get_widget(widgets, kube_namespace, "w")
    fresh = get_widget(widgets, kube_namespace, "w")
    fresh["spec"]["size"] = "large"
    widgets.replace_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, "w", fresh)

    stale["spec"]["colour"] = "blue"
    with pytest.raises(ApiException) as caught:
        widgets.replace_namespaced_custom_object(GROUP, VERSION, kube_namespace, PLURAL, "w", stale)
    assert caught.value.status == 409
    assert "the object has been modified" in status_message(caught.value)
    assert get_widget(widgets, kube_namespace, "w")["spec"] == {
        "size": "large",
        "min": 0,
        "max": 10,
    }


def test_status_subresource_and_main_resource_are_separate(
    widgets: k8s.CustomObjectsApi, kube_namespace: str
) -> None:
    create_widget(widgets, kube_namespace, widget("w"))

    # Through /status, only status changes.
    widgets.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        kube_namespace,
        PLURAL,
        "w",
        {"spec": {"size": "large"}, "status": {"phase": "Ready"}},
    )
    after_status = get_widget(widgets, kube_namespace, "w")
    assert after_status["spec"]["size"] == "small"
    assert after_status["status"] == {"phase": "Ready"}

    # Through the main resource, only spec changes.
    widgets.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        kube_namespace,
        PLURAL,
        "w",
        {"spec": {"size": "large"}, "status": {"phase": "Failed"}},
    )
    after_main = get_widget(widgets, kube_namespace, "w")
    assert after_main["spec"]["size"] == "large"
    assert after_main["status"] == {"phase": "Ready"}


def test_deployment_scale_subresource(kube_api: KubeAPI, kube_namespace: str) -> None:
    apps = k8s.AppsV1Api(kube_api.api_client)
    labels = {"app": "scaled"}
    apps.create_namespaced_deployment(
        kube_namespace,
        k8s.V1Deployment(
            metadata=k8s.V1ObjectMeta(name="scaled"),
            spec=k8s.V1DeploymentSpec(
                replicas=1,
                selector=k8s.V1LabelSelector(match_labels=labels),
                template=k8s.V1PodTemplateSpec(
                    metadata=k8s.V1ObjectMeta(labels=labels),
                    spec=k8s.V1PodSpec(
                        containers=[k8s.V1Container(name="main", image="example.invalid/x:1")]
                    ),
                ),
            ),
        ),
    )

    scale = apps.read_namespaced_deployment_scale("scaled", kube_namespace)
    assert scale.spec is not None
    assert scale.spec.replicas == 1
    assert scale.status is not None
    assert scale.status.selector == "app=scaled"

    patched = apps.patch_namespaced_deployment_scale(
        "scaled", kube_namespace, {"spec": {"replicas": 3}}
    )
    assert patched.spec is not None
    assert patched.spec.replicas == 3
    deployment = apps.read_namespaced_deployment("scaled", kube_namespace)
    assert deployment.spec is not None
    assert deployment.spec.replicas == 3


def test_watch_sees_added_modified_deleted(kube_api: KubeAPI, kube_namespace: str) -> None:
    core = k8s.CoreV1Api(kube_api.api_client)
    start = core.list_namespaced_config_map(kube_namespace).metadata
    assert start is not None
    events: list[tuple[str, str, dict[str, str] | None]] = []
    watch_class: Any = k8s_watch.Watch  # kubernetes.watch has no type hints
    watcher = watch_class()
    failure: list[BaseException] = []

    def watch() -> None:
        try:
            for event in watcher.stream(
                core.list_namespaced_config_map,
                kube_namespace,
                resource_version=start.resource_version,
                timeout_seconds=20,
            ):
                obj = event["object"]
                events.append((event["type"], obj.metadata.name, obj.data))
                if event["type"] == "DELETED":
                    watcher.stop()
        except BaseException as err:  # reported by the test thread
            failure.append(err)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    core.create_namespaced_config_map(
        kube_namespace,
        k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="watched"), data={"k": "1"}),
    )
    core.patch_namespaced_config_map("watched", kube_namespace, {"data": {"k": "2"}})
    core.delete_namespaced_config_map("watched", kube_namespace)
    thread.join(timeout=30)

    assert not thread.is_alive(), f"watch did not see DELETED; got {events}"
    assert not failure, failure
    assert events == [
        ("ADDED", "watched", {"k": "1"}),
        ("MODIFIED", "watched", {"k": "2"}),
        ("DELETED", "watched", {"k": "2"}),
    ]
