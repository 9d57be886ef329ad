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
    capped: str | None = None  # why the bounds are lower than the spec's


def pool_config(spec: Mapping[str, Any], *, ceiling: int | None = None) -> PoolConfig:
    """Parse a pool's spec; ``ValueError`` names what is wrong.

    ``ceiling`` is the operator's cluster-wide most replicas of any pool
    (``EVENTIX_OPERATOR_MAX_REPLICAS``): ``maxReplicas`` and ``minReplicas`` above it
    are lowered to it, and ``capped`` says so."""
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
    low, high = _int(spec, "minReplicas", 0), _int(spec, "maxReplicas", 10)
    capped = None
    if ceiling is not None and max(low, high) > ceiling:
        asked = " and ".join(
            f"{field} {value}"
            for field, value in (("minReplicas", low), ("maxReplicas", high))
            if value > ceiling
        )
        capped = f"{asked} capped at {ceiling}, the operator's EVENTIX_OPERATOR_MAX_REPLICAS"
        low, high = min(low, ceiling), min(high, ceiling)
    scaling = PoolSpec(
        min_replicas=low,
        max_replicas=high,
        tasks_per_replica=_int(spec, "tasksPerReplica", 10),
        activation_tasks=_int(spec, "activationTasks", 1),
        polling_interval=float(spec.get("pollingIntervalSeconds", 30)),
        cooldown=float(spec.get("cooldownSeconds", 300)),
        scale_up_step=None if up is None else int(up),
        scale_down_step=None if down is None else int(down),
    )
    return PoolConfig(kind, name, tuple(dict.fromkeys(queues)), scaling, capped)


def _int(spec: Mapping[str, Any], name: str, default: int) -> int:
    value = spec.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    return value
