"""The worker-pool scaler's arithmetic, with a fake clock: wanted replicas,
activation from zero, cooldown, step limits, running leases, no flapping."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from eventix_operator.operator.kube import Scale
from eventix_operator.operator.status import invalid_pool_status, pool_status
from eventix_operator.scaling import (
    Decision,
    Limit,
    Load,
    PoolSpec,
    ScalerState,
    decide,
    pool_config,
    wanted_replicas,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Pool:
    """A target's replicas, driven by the scaler's decisions as the operator does."""

    def __init__(self, spec: PoolSpec, clock: FakeClock, replicas: int = 0) -> None:
        self.spec = spec
        self.clock = clock
        self.replicas = replicas
        self.state = ScalerState()
        self.changes: list[tuple[float, int]] = []
        self.last: Decision | None = None

    def look(self, due: int, running: int = 0, busy: int = 0) -> int:
        decision, self.state = decide(
            self.spec, Load(due, running, busy), self.replicas, self.state, self.clock.now
        )
        if decision.replicas != self.replicas:
            self.changes.append((self.clock.now, decision.replicas))
        self.replicas, self.last = decision.replicas, decision
        return self.replicas

    @property
    def decision(self) -> Decision:
        assert self.last is not None, "no look yet"
        return self.last

    def hold(self, seconds: float, due: int, running: int = 0, busy: int = 0) -> int:
        """Look once a second for ``seconds`` with the same load."""
        for _ in range(int(seconds)):
            self.clock.advance(1)
            self.look(due, running, busy)
        return self.replicas


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


SPEC = PoolSpec(min_replicas=0, max_replicas=10, tasks_per_replica=10, cooldown=60)


# -- what the load wants -----------------------------------------------------------


@pytest.mark.parametrize(
    ("due", "running", "current", "wanted"),
    [
        (1, 0, 0, 1),
        (10, 0, 1, 1),
        (11, 0, 1, 2),
        (5, 6, 1, 2),  # running tasks count: they occupy slots
        (0, 0, 3, 0),
        (250, 0, 3, 25),  # before the bounds
    ],
)
def test_wanted_is_ceil_of_work_over_tasks_per_replica(
    due: int, running: int, current: int, wanted: int
) -> None:
    assert wanted_replicas(SPEC, Load(due, running), current) == (wanted, wanted > 0)


def test_bounds_and_the_limit_reported(clock: FakeClock) -> None:
    pool = Pool(PoolSpec(min_replicas=2, max_replicas=5, tasks_per_replica=10), clock, 2)
    assert pool.look(due=500) == 5
    assert (pool.decision.wanted, pool.decision.limit) == (50, Limit.TOO_MANY)
    assert "maxReplicas is 5" in pool.decision.reasons
    assert pool.look(due=30) == 5  # down waits for the cooldown
    assert pool.hold(400, due=0) == 2  # never below minReplicas
    assert pool.decision.limit is Limit.TOO_FEW


# -- activation --------------------------------------------------------------------


def test_a_pool_at_zero_wakes_only_at_activation_tasks(clock: FakeClock) -> None:
    pool = Pool(PoolSpec(max_replicas=10, tasks_per_replica=10, activation_tasks=5), clock)
    assert pool.look(due=4) == 0
    assert not pool.decision.active
    assert pool.look(due=4, running=30) == 0  # work running elsewhere does not wake it
    assert pool.look(due=5) == 1
    assert pool.decision.active


def test_an_awake_pool_stays_up_below_activation_while_there_is_work(clock: FakeClock) -> None:
    """Hysteresis: a queue hovering around activationTasks does not bounce the pool."""
    spec = PoolSpec(max_replicas=10, tasks_per_replica=10, activation_tasks=5, cooldown=30)
    pool = Pool(spec, clock)
    assert pool.look(due=5) == 1
    assert pool.hold(300, due=2) == 1
    assert pool.hold(300, due=0, running=1) == 1
    assert pool.hold(29, due=0) == 1
    assert pool.hold(2, due=0) == 0


def test_wakes_within_the_same_look_as_the_first_task(clock: FakeClock) -> None:
    pool = Pool(SPEC, clock)
    pool.hold(3600, due=0)
    assert pool.replicas == 0
    assert pool.look(due=1) == 1  # no polling delay, no cooldown on the way up


# -- up at once, down after the cooldown ---------------------------------------------


def test_scales_up_at_once_and_down_only_after_the_cooldown(clock: FakeClock) -> None:
    pool = Pool(SPEC, clock)
    assert pool.look(due=80) == 8
    assert pool.hold(60, due=20) == 8  # 2 wanted since the first of these looks
    assert pool.decision.limit is Limit.COOLING_DOWN
    assert pool.hold(1, due=20) == 2  # 60 s after 2 was first wanted
    assert pool.hold(60, due=0) == 2
    assert pool.hold(1, due=0) == 0
    assert [r for _, r in pool.changes] == [8, 2, 0]


def test_down_goes_to_the_highest_value_wanted_in_the_window(clock: FakeClock) -> None:
    pool = Pool(SPEC, clock)
    pool.look(due=100)
    pool.hold(30, due=60)
    pool.hold(30, due=30)
    assert pool.replicas == 10
    assert pool.hold(1, due=30) == 6  # 30 s ago 6 were still wanted
    assert pool.hold(29, due=30) == 6
    assert pool.hold(1, due=30) == 3


def test_a_short_dip_resets_nothing_but_a_short_peak_restarts_the_wait(clock: FakeClock) -> None:
    pool = Pool(SPEC, clock)
    pool.look(due=50)
    pool.hold(50, due=10)
    pool.look(due=50)  # one busy moment
    assert pool.hold(59, due=10) == 5
    assert pool.hold(2, due=10) == 1


def test_a_fresh_scaler_does_not_scale_down_before_a_full_cooldown(clock: FakeClock) -> None:
    """After an operator restart the scaler has no history: the replicas it finds
    count as wanted until a whole cooldown has passed."""
    pool = Pool(SPEC, clock, replicas=6)
    assert pool.look(due=0) == 6
    assert pool.hold(59, due=0) == 6
    assert pool.hold(1, due=0) == 0


def test_a_lowered_max_applies_at_once(clock: FakeClock) -> None:
    pool = Pool(SPEC, clock)
    pool.look(due=100)
    pool.spec = PoolSpec(max_replicas=4, tasks_per_replica=10, cooldown=60)
    assert pool.look(due=100) == 4


def test_sparse_looks_do_not_shorten_the_cooldown(clock: FakeClock) -> None:
    """With looks farther apart than the cooldown, the value seen at the previous
    look still counts until the cooldown after it has passed."""
    spec = PoolSpec(max_replicas=10, tasks_per_replica=10, cooldown=10, polling_interval=30)
    pool = Pool(spec, clock)
    pool.look(due=50)
    clock.advance(30)
    assert pool.look(due=0) == 5  # the 5 seen 30 s ago held until just now
    clock.advance(30)
    assert pool.look(due=0) == 0


def test_a_later_small_rise_does_not_stretch_an_earlier_peak(clock: FakeClock) -> None:
    """Peak, then nothing, then a little: the peak ends when nothing was first
    seen, not when the little came."""
    spec = PoolSpec(max_replicas=20, tasks_per_replica=10, cooldown=300, polling_interval=30)
    pool = Pool(spec, clock)
    pool.look(due=200)  # t=0: 20
    clock.advance(30)
    pool.look(due=0)  # t=30: the peak is over
    clock.advance(150)
    pool.look(due=5)  # t=180: a single replica's worth
    clock.advance(150)
    assert pool.look(due=5) == 1  # t=330: 300 s after the peak ended


def test_cooldown_zero_follows_the_load(clock: FakeClock) -> None:
    pool = Pool(PoolSpec(max_replicas=10, tasks_per_replica=10, cooldown=0), clock)
    assert [pool.hold(1, due=d) for d in (30, 10, 0, 20)] == [3, 1, 0, 2]


# -- no flapping -------------------------------------------------------------------


def test_a_noisy_queue_does_not_make_the_pool_flap(clock: FakeClock) -> None:
    depths = _noise(1800)  # 30 minutes of depth between 30 and 70, a look a second
    spec = PoolSpec(max_replicas=20, tasks_per_replica=10, cooldown=120, polling_interval=5)
    steady, jumpy = Pool(spec, clock), Pool(dataclasses.replace(spec, cooldown=0), clock)
    for due in depths:
        clock.advance(1)
        steady.look(due)
        jumpy.look(due)
    assert len(steady.changes) <= 3, steady.changes  # up to the noise's peak, and stays
    assert steady.replicas == 7
    assert len(jumpy.changes) > 500  # what the same rule does without a cooldown


def _noise(n: int) -> list[int]:
    rng = random.Random(7)
    return [rng.randint(30, 70) for _ in range(n)]


# -- running tasks -----------------------------------------------------------------


def test_never_below_the_workers_holding_running_tasks(clock: FakeClock) -> None:
    pool = Pool(SPEC, clock, replicas=5)
    pool.look(due=0, running=5, busy=5)
    assert pool.hold(120, due=0, running=5, busy=5) == 5  # wants 1, but 5 are busy
    assert pool.decision.limit is Limit.TASKS_RUNNING
    assert pool.hold(1, due=0, running=3, busy=3) == 3
    assert pool.hold(1, due=0, running=0, busy=0) == 1  # 1 was wanted within the cooldown
    assert pool.hold(60, due=0) == 0


def test_draining_workers_do_not_pull_the_pool_back_up(clock: FakeClock) -> None:
    """After a scale-down the pods going away still hold leases while they drain;
    the floor never exceeds the replicas already asked for."""
    pool = Pool(SPEC, clock, replicas=2)
    assert pool.hold(1, due=0, running=6, busy=6) == 2
    pool.replicas = 0
    assert pool.hold(1, due=0, running=6, busy=6) == 0


def test_busy_workers_do_not_hold_the_pool_above_max(clock: FakeClock) -> None:
    pool = Pool(PoolSpec(max_replicas=3, tasks_per_replica=10, cooldown=60), clock, 6)
    assert pool.look(due=0, running=6, busy=6) == 3


# -- step limits -------------------------------------------------------------------


def test_scale_up_step_per_polling_interval(clock: FakeClock) -> None:
    spec = PoolSpec(max_replicas=20, tasks_per_replica=10, scale_up_step=4, polling_interval=10)
    pool = Pool(spec, clock)
    assert pool.look(due=200) == 4
    assert pool.decision.limit is Limit.SCALE_UP_STEP
    assert pool.hold(9, due=200) == 4  # notifications in between add nothing
    assert pool.hold(1, due=200) == 8
    assert pool.hold(30, due=200) == 20


def test_scale_down_step_per_polling_interval(clock: FakeClock) -> None:
    spec = PoolSpec(
        max_replicas=20, tasks_per_replica=10, cooldown=10, scale_down_step=3, polling_interval=5
    )
    pool = Pool(spec, clock)
    pool.look(due=200)
    assert pool.hold(11, due=0) == 17
    assert pool.hold(4, due=0) == 17
    assert pool.hold(1, due=0) == 14
    assert pool.hold(30, due=0) == 0


# -- the spec -----------------------------------------------------------------------


def test_pool_config_defaults() -> None:
    config = pool_config({"scaleTargetRef": {"name": "workers"}, "maxReplicas": 5})
    assert (config.target_kind, config.target_name, config.queues) == (
        "Deployment",
        "workers",
        ("default",),
    )
    assert config.scaling == PoolSpec(max_replicas=5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"scaleTargetRef": {"name": "w"}, "minReplicas": 6, "maxReplicas": 5}, "minReplicas"),
        ({"scaleTargetRef": {}, "maxReplicas": 5}, "scaleTargetRef.name"),
        ({"scaleTargetRef": {"name": "w", "kind": "Job"}, "maxReplicas": 5}, "kind"),
        ({"scaleTargetRef": {"name": "w"}, "maxReplicas": 5, "tasksPerReplica": 0}, "tasksPer"),
        ({"scaleTargetRef": {"name": "w"}, "maxReplicas": 5, "queues": ["a b"]}, "queue"),
        ({"scaleTargetRef": {"name": "w"}, "maxReplicas": "5"}, "maxReplicas"),
        ({"scaleTargetRef": {"name": "w"}, "maxReplicas": 5, "scaleUpStep": 0}, "scaleUpStep"),
    ],
)
def test_pool_config_rejects(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pool_config(spec)


# -- status ------------------------------------------------------------------------


def test_status_is_stable_while_nothing_but_time_passes(clock: FakeClock) -> None:
    config = pool_config({"scaleTargetRef": {"name": "w"}, "maxReplicas": 5})
    load = Load(due=30, running=0)
    decision, _ = decide(config.scaling, load, 3, ScalerState(), clock.now)

    def status(previous: dict[str, Any], day: int) -> dict[str, Any]:
        return pool_status(
            config,
            load,
            Scale(3, 3),
            decision,
            ready=(True, "Scaling", "ok"),
            previous=previous,
            generation=2,
            last_scale=None,
            now=datetime(2030, 1, day, tzinfo=UTC),
        )

    first = status({}, 1)
    again = status(first, 2)
    assert again == first
    assert [c["type"] for c in first["conditions"]] == [
        "Ready", "Reconciling", "Stalled", "Active", "ScalingLimited",
    ]  # fmt: skip
    assert first["desiredReplicas"] == 3
    assert first["queueDepth"] == 30
    assert first["observedGeneration"] == 2


def test_an_invalid_spec_is_stalled_until_it_is_fixed(clock: FakeClock) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    invalid = invalid_pool_status("spec cannot be used: x", {"queueDepth": 4}, generation=1,
                                  now=now)  # fmt: skip
    by_type = {c["type"]: c for c in invalid["conditions"]}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "InvalidSpec")
    assert (by_type["Stalled"]["status"], by_type["Stalled"]["reason"]) == ("True", "InvalidSpec")
    assert invalid["queueDepth"] == 4  # the last live figures stay
    config = pool_config({"scaleTargetRef": {"name": "w"}, "maxReplicas": 5})
    load = Load(due=1, running=0)
    decision, _ = decide(config.scaling, load, 1, ScalerState(), clock.now)
    fixed = pool_status(config, load, Scale(1, 1), decision, ready=(True, "Scaling", "ok"),
                        previous=invalid, generation=2, last_scale=None, now=now)  # fmt: skip
    types = [c["type"] for c in fixed["conditions"]]
    assert types == ["Ready", "Reconciling", "Stalled", "Active", "ScalingLimited"]
    assert fixed["conditions"][2]["status"] == "False"
