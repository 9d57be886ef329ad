"""The operator's only door to the Kubernetes API outside kopf's own handling:
status patches, events and deletions, each tolerant of a resource that is gone.

Calls are blocking (the official client); async callers run them in a thread.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from eventix_operator.logs import get_logger
from eventix_operator.resources import GROUP, VERSION

log = get_logger("eventix.kube")

KINDS = {
    "eventixtasks": "EventixTask",
    "eventixschedules": "EventixSchedule",
    "eventixworkerpools": "EventixWorkerPool",
    "eventixtriggers": "EventixTrigger",
    "eventixqueues": "EventixQueue",
}


@dataclass(frozen=True)
class Scale:
    """A scale subresource: what its controller was asked for, and what it has."""

    replicas: int  # spec.replicas
    current: int  # status.replicas: pods the controller counts now


@dataclass(frozen=True)
class Target:
    """A workload a pool scales: its labels (may pools scale it?) and its scale."""

    labels: dict[str, str]
    scale: Scale


@dataclass(frozen=True)
class ResourceRef:
    plural: str
    namespace: str
    name: str
    uid: str

    @property
    def kind(self) -> str:
        return KINDS[self.plural]


#: HTTP connections kept to the API server: status sync patches from 8 threads and
#: scaler, timer and event calls come on top (urllib3's default of 10 churned).
CONNECTION_POOL_SIZE = 32


def load_config() -> None:
    """In a pod: its service account. Elsewhere: KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    settings = client.Configuration.get_default_copy()
    settings.connection_pool_maxsize = CONNECTION_POOL_SIZE
    client.Configuration.set_default(settings)


class Kube:
    """``instance`` names this replica in the events it posts (``reportingInstance``):
    its lease holder id, so ``kubectl describe`` tells which replica acted."""

    def __init__(
        self, api_client: client.ApiClient | None = None, *, instance: str = "eventix-operator"
    ) -> None:
        self.instance = instance[:128]
        self.api_client = api_client or client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    def patch_status(self, ref: ResourceRef, status: dict[str, Any]) -> bool:
        """Merge-patch the status subresource; False when the resource is gone."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ref.namespace, ref.plural, ref.name, {"status": status}
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def event(self, ref: ResourceRef, *, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the resource, for `kubectl describe`; failures are
        logged, never raised: an event is worth less than the work it reports."""
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{ref.name}.{uuid.uuid4().hex[:12]}", namespace=ref.namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=ref.kind,
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid,
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="eventix-operator", host=self.instance),
            reporting_component="eventix-operator",
            reporting_instance=self.instance,
        )
        try:
            self.core.create_namespaced_event(ref.namespace, body)
        except ApiException as exc:
            if exc.status != 404:  # the namespace is going away
                log.warning("could not post event", reason=reason, error=exc.reason)

    def delete(self, ref: ResourceRef) -> bool:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, ref.plural, ref.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- scale targets (worker pools) ----------------------------------------------

    def get_target(self, namespace: str, kind: str, name: str) -> Target | None:
        """A Deployment's or StatefulSet's labels and replicas (what its ``/scale``
        says: ``spec.replicas`` and ``status.replicas``), in one read; None when there
        is none. Read as plain JSON: the typed model of a whole Deployment costs more
        than the look it serves."""
        read = {
            "Deployment": self.apps.read_namespaced_deployment,
            "StatefulSet": self.apps.read_namespaced_stateful_set,
        }[kind]
        try:
            response = read(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj = json.loads(response.data)  # type: ignore[attr-defined]  # a urllib3 response
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return Target(
            labels=dict((obj.get("metadata") or {}).get("labels") or {}),
            scale=Scale(
                # An absent spec.replicas means 1 to the controller (and to /scale).
                replicas=int(spec.get("replicas", 1)),
                current=int(status.get("replicas") or 0),
            ),
        )

    def patch_scale(self, namespace: str, kind: str, name: str, replicas: int) -> bool:
        """Set the replicas through ``/scale`` (the way HPA does, so the target's own
        spec stays the user's); False when the target is gone."""
        patch = {
            "Deployment": self.apps.patch_namespaced_deployment_scale,
            "StatefulSet": self.apps.patch_namespaced_stateful_set_scale,
        }[kind]
        try:
            patch(name, namespace, {"spec": {"replicas": replicas}})
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
