"""``EventixWorkerPool.spec`` -> what the scaler works with.

The CRD schema already rejects what this rejects; the check is repeated here
because an API server without CEL (before Kubernetes 1.25), or a CRD applied by
hand without its schema, lets such a spec through, and the operator must then
report it in status instead of scaling on nonsense.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventix_operator.scaling.scaler import PoolSpec

#: Kinds whose ``/scale`` subresource the operator patches.
TARGET_KINDS = ("Deployment", "StatefulSet")
_QUEUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    target_kind: str
    target_name: str
    queues: tuple[str, ...]
    scaling: PoolSpec


def pool_config(spec: Mapping[str, Any]) -> PoolConfig:
    """Parse a pool's spec; ``ValueError`` names what is wrong."""
    target = spec.get("scaleTargetRef") or {}
    kind = str(target.get("kind", "Deployment"))
    name = str(target.get("name") or "")
    if kind not in TARGET_KINDS:
        raise ValueError(f"scaleTargetRef.kind must be one of {', '.join(TARGET_KINDS)}")
    if not _NAME.match(name) or len(name) > 253:
        raise ValueError("scaleTargetRef.name must name a Deployment or StatefulSet")
    queues = tuple(str(q) for q in spec.get("queues") or ["default"])
    bad = [q for q in queues if not _QUEUE.match(q)]
    if bad:
        raise ValueError(f"invalid queue name(s): {', '.join(bad)}")
    up, down = spec.get("scaleUpStep"), spec.get("scaleDownStep")
    scaling = PoolSpec(
        min_replicas=_int(spec, "minReplicas", 0),
        max_replicas=_int(spec, "maxReplicas", 10),
        tasks_per_replica=_int(spec, "tasksPerReplica", 10),
        activation_tasks=_int(spec, "activationTasks", 1),
        polling_interval=float(spec.get("pollingIntervalSeconds", 30)),
        cooldown=float(spec.get("cooldownSeconds", 300)),
        scale_up_step=None if up is None else int(up),
        scale_down_step=None if down is None else int(down),
    )
    return PoolConfig(kind, name, tuple(dict.fromkeys(queues)), scaling)


def _int(spec: Mapping[str, Any], name: str, default: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value
