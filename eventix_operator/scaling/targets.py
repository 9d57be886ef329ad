"""Which workloads a worker pool may scale.

Anyone who may create an ``EventixWorkerPool`` in a namespace would otherwise set the
replicas of every Deployment and StatefulSet the operator can reach there, the
operator's own StatefulSet and the REST API's Deployment included. So a target must
opt in, by a label its owner sets (who may edit a workload may scale it anyway):

    metadata:
      labels:
        eventix.io/scalable: "true"

A label rather than an annotation: ``kubectl get deploy,sts -A -l eventix.io/scalable=true``
lists everything pools may touch. And eventix's own workloads are refused even with the
label: the chart marks them ``app.kubernetes.io/part-of: eventix`` with the component
``operator``, ``api`` or ``migration``, and scaling those stops or multiplies the very
thing that scales (or serves, or migrates).
"""

from __future__ import annotations

from collections.abc import Mapping

#: The label by which a Deployment or StatefulSet lets worker pools set its replicas.
SCALABLE_LABEL = "eventix.io/scalable"
PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
#: Components of eventix (``app.kubernetes.io/part-of: eventix``) no pool ever scales.
OWN_COMPONENTS = frozenset({"operator", "api", "migration"})


def check_target(kind: str, name: str, labels: Mapping[str, str] | None) -> str | None:
    """Why a pool may not scale this workload, or None when it may."""
    labels = labels or {}
    component = labels.get(COMPONENT_LABEL)
    if labels.get(PART_OF_LABEL) == "eventix" and component in OWN_COMPONENTS:
        return (
            f"{kind} {name} is eventix's own {component} ({PART_OF_LABEL}=eventix, "
            f"{COMPONENT_LABEL}={component}): no pool scales it"
        )
    if labels.get(SCALABLE_LABEL) != "true":
        return (
            f"{kind} {name} does not let pools scale it: its owner opts in with the label "
            f'{SCALABLE_LABEL}="true" (kubectl label {kind.lower()} {name} {SCALABLE_LABEL}=true)'
        )
    return None
