"""Worker-pool autoscaling on a simulated load curve: time tasks wait against pods paid for.

Run from the repository root::

    python bench/autoscale.py [--hours H] [--seed N] [--startup S] [--task-seconds S]

A two-hour curve (idle stretches, single tasks minutes apart, a burst, a noisy hour,
a spike beyond the pool's maximum) is fed, in steps of 0.25 s of simulated time, to
several sizing rules; the pool of workers they size runs the tasks. Each rule is
charged the replica-seconds of the pods it keeps (starting, running or draining) and
credited with the task-seconds its tasks waited between being due and starting.

The rules:

- ``eventix pool``: the operator's own decisions (``eventix_operator.scaling.decide``,
  the code the operator runs, with a fake clock), looked at every
  ``pollingIntervalSeconds`` and, as the operator does, at once (0.25 s debounce) when
  an enqueue notification comes;
- ``fixed N``: a Deployment of N workers, sized for the peak or for the mean;
- ``HPA``: Kubernetes' proportional rule, ``ceil(current * perPod / target)`` with a
  10 % tolerance, every 15 s, a 300 s scale-down stabilization window and its default
  scale-up policy (at most max(4 pods, 100 %) per 15 s), minReplicas 1 (an HPA cannot
  reach zero);
- ``KEDA``: the HPA rule plus KEDA's activation: polled every 30 s, the pool goes to 1
  when a task is due and back to 0 after a 300 s cooldown without work.

Columns: task-seconds waited in all, mean / 95th percentile / longest wait of a task,
the mean wait of tasks that arrived while the pool had no pod ("from zero"),
replica-seconds paid, and how often the rule changed the replica count.

Every rule targets 10 tasks per replica (the workers' concurrency), at most 20 replicas.
A pod serves tasks ``--startup`` seconds after it is asked for (image cached). It is
a simulation, not a measurement of a cluster: nothing here asserts.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import math
import random
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/autoscale.py` puts bench/ first instead
    sys.path.insert(0, str(REPO))

from eventix_operator.scaling import Load, PoolSpec, ScalerState, decide  # noqa: E402

STEP = 0.25
CONCURRENCY = 10  # tasks per worker process, and every rule's target per replica
MAX_REPLICAS = 20


# -- the load --------------------------------------------------------------------


def load_curve(seconds: int, rng: random.Random) -> list[float]:
    """Arrival times (seconds) of every task over ``seconds``; a two-hour pattern,
    repeated for longer runs."""
    arrivals: list[float] = []

    def poisson(start: float, end: float, rate: Callable[[float], float]) -> None:
        t = start
        while True:
            t += rng.expovariate(max(rate(t), 1e-9))
            if t >= end:
                return
            arrivals.append(t)

    for b in range(0, seconds, 7200):
        # 0-10 min idle; 10-30 min a single task every 5 minutes (wake from zero each time)
        arrivals.extend(b + o + rng.uniform(0, 60) for o in range(600, 1800, 300))
        # 30-35 min: a burst of 40 tasks/s (8 replicas' worth of 2 s tasks)
        poisson(b + 1800, b + 2100, lambda _t: 40.0)
        # 35-60 min idle; 60-90 min: noisy load around 15 tasks/s
        poisson(b + 3600, b + 5400, lambda t: 15.0 * (1 + 0.5 * math.sin(t / 40.0)))
        # 90-91 min: a spike of 150 tasks/s, beyond 20 replicas' 100 tasks/s
        poisson(b + 5400, b + 5460, lambda _t: 150.0)
        # then a trickle: one task a minute until the end of the two hours
        arrivals.extend(b + o + rng.uniform(0, 30) for o in range(5700, 7170, 60))
    return sorted(a for a in arrivals if a < seconds)


# -- the rules ---------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What a rule may look at in one step."""

    now: float
    due: int
    running: int
    busy: int  # workers with running tasks
    notified: bool  # a task was enqueued during the step
    current: int  # replicas asked for so far


class Rule:
    name = ""

    def decide(self, seen: Seen) -> int:
        raise NotImplementedError


class Fixed(Rule):
    def __init__(self, replicas: int, why: str) -> None:
        self.replicas = replicas
        self.name = f"fixed {replicas} ({why})"

    def decide(self, seen: Seen) -> int:
        return self.replicas


class EventixPool(Rule):
    def __init__(self, polling: float, cooldown: float) -> None:
        self.spec = PoolSpec(
            min_replicas=0,
            max_replicas=MAX_REPLICAS,
            tasks_per_replica=CONCURRENCY,
            activation_tasks=1,
            polling_interval=polling,
            cooldown=cooldown,
        )
        self.state = ScalerState()
        self.next_look = 0.0
        self.last_look = -math.inf
        self.name = f"eventix pool (notify, poll {polling:g}s, cooldown {cooldown:g}s)"

    def decide(self, seen: Seen) -> int:
        now = seen.now
        if seen.notified:
            self.next_look = min(self.next_look, max(now, self.last_look + 0.25))
        if now < self.next_look:
            return seen.current
        self.last_look, self.next_look = now, now + self.spec.polling_interval
        load = Load(seen.due, seen.running, seen.busy)
        decision, self.state = decide(self.spec, load, seen.current, self.state, now)
        return decision.replicas


class Hpa(Rule):
    """Kubernetes' HorizontalPodAutoscaler on an average-value metric (tasks per pod)."""

    def __init__(self, *, sync: float = 15.0, window: float = 300.0, min_replicas: int = 1) -> None:
        self.sync, self.window, self.min_replicas = sync, window, min_replicas
        self.next_sync = 0.0
        self.recommendations: deque[tuple[float, int]] = deque()
        self.name = "HPA (proportional, 15s sync, 300s window, min 1)"

    def proportional(self, now: float, tasks: int, current: int) -> int:
        if current == 0:
            return current
        ratio = (tasks / current) / CONCURRENCY
        wanted = current if abs(ratio - 1) <= 0.1 else math.ceil(current * ratio)
        wanted = min(max(wanted, self.min_replicas), MAX_REPLICAS)
        self.recommendations.append((now, wanted))
        while self.recommendations and self.recommendations[0][0] < now - self.window:
            self.recommendations.popleft()
        if wanted < current:  # down: the highest recommendation of the window
            wanted = min(current, max(r for _, r in self.recommendations))
        up_limit = max(current + 4, current * 2)  # default scale-up policy per 15 s
        return min(wanted, up_limit)

    def decide(self, seen: Seen) -> int:
        current = max(seen.current, self.min_replicas)
        if seen.now < self.next_sync:
            return current
        self.next_sync = seen.now + self.sync
        return self.proportional(seen.now, seen.due + seen.running, current)


class Keda(Hpa):
    """KEDA over an HPA: activation from zero by polling, back to zero after a cooldown."""

    def __init__(self, *, polling: float = 30.0, cooldown: float = 300.0) -> None:
        super().__init__(min_replicas=1)
        self.polling, self.cooldown = polling, cooldown
        self.next_poll = 0.0
        self.last_active = -math.inf
        self.name = "KEDA (HPA rule + poll 30s from zero, cooldown 300s)"

    def decide(self, seen: Seen) -> int:
        now, current, work = seen.now, seen.current, seen.due + seen.running
        if now >= self.next_poll:
            self.next_poll = now + self.polling
            if work > 0:
                self.last_active = now
                if current == 0:
                    self.next_sync = now + self.sync
                    return 1
            elif current > 0 and now - self.last_active >= self.cooldown:
                self.recommendations.clear()
                return 0
        if current == 0:
            return 0
        if now < self.next_sync:
            return current
        self.next_sync = now + self.sync
        return self.proportional(now, work, current)


# -- the pool that runs the tasks --------------------------------------------------


@dataclass
class Outcome:
    rule: str
    waits: list[float] = field(default_factory=list)
    cold_waits: list[float] = field(default_factory=list)  # of tasks that found no pod
    replica_seconds: float = 0.0
    changes: int = 0

    @property
    def waited(self) -> float:
        return sum(self.waits)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.waits)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def simulate(
    rule: Rule, arrivals: list[float], seconds: int, startup: float, task_seconds: float
) -> Outcome:
    outcome = Outcome(rule.name)
    queue: deque[tuple[float, bool]] = deque()  # due tasks (arrival, found no pod)
    running: list[float] = []  # finish times (heap)
    pods: list[float] = []  # when each requested pod serves tasks, oldest first
    next_arrival = 0
    steps = int(seconds / STEP)
    for i in range(steps):
        now = i * STEP
        end = bisect.bisect_left(arrivals, now + STEP, lo=next_arrival)
        notified = end > next_arrival
        queue.extend((a, not pods) for a in arrivals[next_arrival:end])
        next_arrival = end
        while running and running[0] <= now:
            heapq.heappop(running)
        ready = sum(1 for p in pods if p <= now)
        busy = min(ready, len(running))  # tasks spread over the ready pods
        wanted = rule.decide(Seen(now, len(queue), len(running), busy, notified, len(pods)))
        if wanted != len(pods):
            outcome.changes += 1
        while len(pods) < wanted:
            pods.append(now + startup)
        while len(pods) > wanted:
            pods.pop()  # the newest first (a starting pod goes before a serving one)
        capacity = sum(1 for p in pods if p <= now) * CONCURRENCY
        while queue and len(running) < capacity:
            arrived, cold = queue.popleft()
            start = max(now, arrived)
            outcome.waits.append(start - arrived)
            if cold:
                outcome.cold_waits.append(start - arrived)
            heapq.heappush(running, start + task_seconds)
        # Pods asked for, and pods still draining tasks they had started.
        alive = max(len(pods), math.ceil(len(running) / CONCURRENCY))
        outcome.replica_seconds += alive * STEP
    for arrived, _cold in queue:  # never started: they waited until the end
        outcome.waits.append(seconds - arrived)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--startup", type=float, default=8.0, help="seconds a pod takes to serve")
    parser.add_argument("--task-seconds", type=float, default=2.0)
    args = parser.parse_args()
    seconds = int(args.hours * 3600)
    arrivals = load_curve(seconds, random.Random(args.seed))
    work = len(arrivals) * args.task_seconds
    mean = math.ceil(work / seconds / CONCURRENCY)
    rules: list[Rule] = [
        EventixPool(polling=30, cooldown=300),
        EventixPool(polling=30, cooldown=60),
        Keda(),
        Hpa(),
        Fixed(MAX_REPLICAS, "peak"),
        Fixed(mean, "mean load"),
    ]
    print(
        f"{len(arrivals)} tasks of {args.task_seconds:g}s over {args.hours:g}h "
        f"({work / seconds / CONCURRENCY:.2f} replicas of work on average); pods serve "
        f"{args.startup:g}s after they are asked for; {CONCURRENCY} tasks per replica, "
        f"at most {MAX_REPLICAS} replicas\n"
    )
    header = (
        f"{'rule':<52} {'task-s waited':>13} {'mean wait':>9} {'p95 wait':>8} "
        f"{'max wait':>8} {'from zero':>9} {'replica-s':>10} {'changes':>7}"
    )
    print(header)
    print("-" * len(header))
    for rule in rules:
        o = simulate(rule, arrivals, seconds, args.startup, args.task_seconds)
        cold = f"{sum(o.cold_waits) / len(o.cold_waits):.1f}s" if o.cold_waits else "-"
        print(
            f"{o.rule:<52} {o.waited:>13,.0f} {o.waited / len(o.waits):>8.2f}s "
            f"{o.percentile(0.95):>7.2f}s {max(o.waits):>7.1f}s {cold:>9} "
            f"{o.replica_seconds:>10,.0f} {o.changes:>7}"
        )


if __name__ == "__main__":
    main()
