"""How many replicas a worker pool should have, decided from the queue's load.

The rule, in the order :func:`decide` applies it:

1. **Wanted**: ``ceil((due + running) / tasksPerReplica)``: the workers that keep
   every due and running task within one replica's share.
2. **Activation**: a pool at zero wakes only when ``due >= activationTasks``
   (tasks already running elsewhere, e.g. on pods still draining, do not wake it).
   Once awake it stays awake while anything is due or running, so a queue hovering
   around the threshold does not bounce the pool between zero and one.
3. **Bounds**: clamped to ``[minReplicas, maxReplicas]``.
4. **Up**: at once (waiting tasks cost latency), at most ``scaleUpStep`` replicas
   added per ``pollingIntervalSeconds``.
5. **Down**: only to the highest value wanted during the last ``cooldownSeconds``
   (what Kubernetes' HPA calls a stabilization window): a lower value must have
   held for the whole cooldown, and a noisy queue keeps the pool at its recent
   peak instead of flapping. A fresh scaler counts the replicas it found as
   wanted at its start, so an operator restart never scales down early. Never
   below the workers holding leases of running tasks (scaling them away would
   interrupt work), unless the pool was already asked to shrink below them
   (those pods are draining gracefully); at most ``scaleDownStep`` removed per
   ``pollingIntervalSeconds``.

Time is a plain float in seconds from any monotonic origin, given by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

Samples = tuple[tuple[float, int], ...]


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """The scaling knobs of one pool (``EventixWorkerPool.spec``, minus its target)."""

    min_replicas: int = 0
    max_replicas: int = 10
    tasks_per_replica: int = 10
    activation_tasks: int = 1
    polling_interval: float = 30.0
    cooldown: float = 300.0
    scale_up_step: int | None = None
    scale_down_step: int | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.min_replicas < 0:
            problems.append("minReplicas must be at least 0")
        if self.max_replicas < 1:
            problems.append("maxReplicas must be at least 1")
        if self.min_replicas > self.max_replicas:
            problems.append("minReplicas must not exceed maxReplicas")
        if self.tasks_per_replica < 1:
            problems.append("tasksPerReplica must be at least 1")
        if self.activation_tasks < 1:
            problems.append("activationTasks must be at least 1")
        if self.polling_interval <= 0:
            problems.append("pollingIntervalSeconds must be positive")
        if self.cooldown < 0:
            problems.append("cooldownSeconds must be at least 0")
        steps = {"scaleUpStep": self.scale_up_step, "scaleDownStep": self.scale_down_step}
        for name, step in steps.items():
            if step is not None and step < 1:
                problems.append(f"{name} must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class Load:
    """What the pool's queues hold right now."""

    due: int
    running: int = 0
    busy_workers: int = 0  # distinct workers holding leases of running tasks


class Limit(StrEnum):
    """Why the replicas decided differ from the replicas wanted (a condition reason)."""

    TOO_MANY = "TooManyReplicas"
    TOO_FEW = "TooFewReplicas"
    SCALE_UP_STEP = "ScaleUpStep"
    SCALE_DOWN_STEP = "ScaleDownStep"
    COOLING_DOWN = "CoolingDown"
    TASKS_RUNNING = "TasksRunning"


@dataclass(frozen=True, slots=True)
class ScalerState:
    """What a pool's scaler remembers between decisions (in memory: after a
    restart the cooldown simply starts again).

    ``window`` holds (time, wanted) samples with strictly decreasing values: the
    maximum of the samples since an entry's time is that entry's value, so the
    highest value wanted over the cooldown is one lookup, and the window stays a
    few entries long however often the scaler runs. ``changes`` holds (time,
    replicas added or removed) within the last step period.
    """

    window: Samples = ()
    changes: Samples = ()


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int  # what the target should be set to
    wanted: int  # before bounds, steps, cooldown and running leases
    active: bool  # the queue has work for this pool
    limit: Limit | None = None  # why ``replicas`` is not ``wanted``
    reasons: tuple[str, ...] = field(default=())  # for messages and events


def wanted_replicas(spec: PoolSpec, load: Load, current: int) -> tuple[int, bool]:
    """Replicas the load asks for, and whether the pool is active (steps 1 and 2)."""
    work = max(0, load.due) + max(0, load.running)
    active = load.due >= spec.activation_tasks if current == 0 else work > 0
    return (math.ceil(work / spec.tasks_per_replica) if active else 0), active


def decide(
    spec: PoolSpec, load: Load, current: int, state: ScalerState, now: float
) -> tuple[Decision, ScalerState]:
    """The replicas to set now, and the state to pass to the next decision."""
    wanted, active = wanted_replicas(spec, load, current)
    bounded = min(max(wanted, spec.min_replicas), spec.max_replicas)
    limit: Limit | None = None
    if wanted > spec.max_replicas:
        limit = Limit.TOO_MANY
    elif wanted < spec.min_replicas:
        limit = Limit.TOO_FEW

    window = state.window or ((now, current),)
    window = _push(window, now, bounded)
    window = _since(window, now - spec.cooldown)
    changes = tuple(c for c in state.changes if c[0] > now - spec.polling_interval)

    target = bounded
    if target > current:
        if spec.scale_up_step is not None:
            added = sum(d for _, d in changes if d > 0)
            allowed = current + max(0, spec.scale_up_step - added)
            if target > allowed:
                target, limit = allowed, Limit.SCALE_UP_STEP
    elif target < current:
        # The highest value wanted during the cooldown, within today's bounds.
        peak = min(max(window[0][1], spec.min_replicas), spec.max_replicas)
        if peak > target:
            target, limit = min(peak, current), Limit.COOLING_DOWN
        floor = min(load.busy_workers, current, spec.max_replicas)
        if target < floor:
            target, limit = floor, Limit.TASKS_RUNNING
        if spec.scale_down_step is not None and target < current:
            removed = -sum(d for _, d in changes if d < 0)
            allowed = current - max(0, spec.scale_down_step - removed)
            if target < allowed:
                target, limit = allowed, Limit.SCALE_DOWN_STEP
    if target != current:
        changes = (*changes, (now, target - current))
    decision = Decision(
        replicas=target,
        wanted=wanted,
        active=active,
        limit=limit,
        reasons=_explain(spec, load, wanted, target, limit),
    )
    return decision, replace(state, window=window, changes=changes)


def _push(window: Samples, now: float, value: int) -> Samples:
    """Add a sample, dropping older ones it dominates. The new entry takes the time
    of the oldest sample it drops: that is when the entry before it stopped being
    wanted (a later, larger sample must not stretch an earlier peak). An equal
    older entry stays as it is, because it says since when the value has held."""
    kept = list(window)
    since = now
    while kept and kept[-1][1] < value:
        since = kept.pop()[0]
    if not kept or kept[-1][1] > value:
        kept.append((since, value))
    return tuple(kept)


def _since(window: Samples, cutoff: float) -> Samples:
    """Drop samples that ended before ``cutoff``; the one in effect at ``cutoff``
    stays (a value counts until the next sample replaces it)."""
    start = 0
    while start + 1 < len(window) and window[start + 1][0] <= cutoff:
        start += 1
    return window[start:]


def _explain(
    spec: PoolSpec, load: Load, wanted: int, target: int, limit: Limit | None
) -> tuple[str, ...]:
    work = f"{load.due} due + {load.running} running at {spec.tasks_per_replica} per replica"
    reasons = [f"{work} wants {wanted}"]
    if limit is Limit.TOO_MANY:
        reasons.append(f"maxReplicas is {spec.max_replicas}")
    elif limit is Limit.TOO_FEW:
        reasons.append(f"minReplicas is {spec.min_replicas}")
    elif limit is Limit.SCALE_UP_STEP:
        reasons.append(f"scaleUpStep allows {spec.scale_up_step} per {spec.polling_interval:g}s")
    elif limit is Limit.SCALE_DOWN_STEP:
        reasons.append(
            f"scaleDownStep allows {spec.scale_down_step} per {spec.polling_interval:g}s"
        )
    elif limit is Limit.COOLING_DOWN:
        reasons.append(f"{target} were wanted within the last {spec.cooldown:g}s (cooldown)")
    elif limit is Limit.TASKS_RUNNING:
        reasons.append(f"{load.busy_workers} workers hold running tasks")
    return tuple(reasons)
