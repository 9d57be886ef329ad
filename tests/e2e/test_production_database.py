"""The operator and its workers on a production-shaped database, end to end.

- Two operator replicas (standalone: both watch every resource) through PgBouncer in
  transaction mode: at no moment do both hold a leadership lease, every pool scaling and
  status sync of a replica falls within its lease, and when the leader is killed with
  SIGKILL the survivor takes status sync and the pool over; no pooler error anywhere.
- A primary with a synchronous standby, failed over while two workers drain tasks that
  a client keeps enqueuing and the operator fires a ``*/2`` schedule: behind one address
  (a TCP proxy standing in for CloudNativePG's ``-rw`` Service) and with a libpq
  multi-host URL. No acknowledged enqueue lost, every task run once, no tick lost or
  doubled, work resumed (how fast is printed, not asserted).

These tests start a Kubernetes API server of their own: the session's operator watches
every namespace of the session's cluster and would act on these resources too.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from eventix_operator.client import new_task
from eventix_operator.db.engine import make_engine
from eventix_operator.db.enqueue import insert_tasks
from eventix_operator.settings import Settings
from tests.e2e.conftest import SHARED, Cluster
from tests.e2e.test_pools import deployment, pool, replicas
from tests.e2e.test_schedules import SCHEDULES, assert_every_tick_once, every_2s
from tests.support.kube import KUBECONFIG_ENV, KubeAPI, kube_api_session
from tests.support.pgbouncer import PgBouncer
from tests.support.processes import Processes, make_processes
from tests.support.replication import ReplicatedPair

pytestmark = [pytest.mark.kube, pytest.mark.slow]

TASKS = "eventixtasks"
#: A lease short enough for a quick takeover in the test (the default is 6 s).
LEASE_SECONDS = "3"
#: What a pooler-related failure looks like in eventix's logs.
POOLER_TROUBLE = re.compile(
    r"prepared statement|_pg3_|advisory|pooler error|server conn crashed|"
    r"unsupported startup parameter|cannot .* in a read-only transaction",
    re.IGNORECASE,
)

DONE = text(
    "SELECT count(*) FROM eventix_task WHERE status = 'done' AND uid = ANY(CAST(:u AS uuid[]))"
)
PRESENT = text("SELECT uid FROM eventix_task WHERE uid = ANY(CAST(:u AS uuid[]))")
TICKS = text("SELECT schedule_time FROM eventix_task WHERE schedule_uid IS NOT NULL ORDER BY 1")
FINISHED_AFTER = text("SELECT min(finished_at) FROM eventix_task WHERE finished_at > :t")


@pytest.fixture(scope="module")
def plane() -> Iterator[KubeAPI]:
    if os.environ.get(KUBECONFIG_ENV):
        pytest.skip("needs an API server of its own: the session's operator watches them all")
    with kube_api_session() as api:
        yield api


@dataclass
class Replica:
    """An operator process whose JSON log is read back."""

    proc: Any
    log: Path
    killed_at: datetime | None = None

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def holder(self) -> str | None:
        return next((e["holder"] for e in self.events() if "holder" in e), None)


def start_replica(cluster: Cluster, **env: str) -> Replica:
    log = cluster.procs.log_dir / f"operator-{len(cluster.procs.procs)}.log"
    proc = cluster.operator(
        "--namespace", cluster.namespace, ready=True, EVENTIX_LOG_FORMAT="json",
        EVENTIX_OPERATOR_LEASE_SECONDS=LEASE_SECONDS, EVENTIX_METRICS_PORT="0",
        **{**SHARED, **env},
    )  # fmt: skip
    return Replica(proc, log)


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


@dataclass
class Interval:
    holder: str
    start: datetime
    end: datetime


def lease_intervals(replicas: list[Replica], name: str, end: datetime) -> list[Interval]:
    """When each replica held lease ``name``: from its "lease acquired" to its "lease
    lost" or "lease released", to its SIGKILL, or to ``end``."""
    intervals = []
    for replica in replicas:
        start: datetime | None = None
        for event in replica.events():
            if event.get("lease") != name:
                continue
            if event["event"] == "lease acquired":
                start = at(event)
            elif event["event"] in ("lease lost", "lease released") and start is not None:
                intervals.append(Interval(event["holder"], start, at(event)))
                start = None
        if start is not None:
            holder = replica.holder()
            assert holder is not None
            intervals.append(Interval(holder, start, replica.killed_at or end))
    return sorted(intervals, key=lambda i: i.start)


def assert_one_at_a_time(intervals: list[Interval]) -> None:
    for earlier, later in itertools.pairwise(intervals):
        assert earlier.end <= later.start, f"two holders at once: {earlier} and {later}"


def within(intervals: list[Interval], holder: str, moment: datetime) -> bool:
    return any(i.holder == holder and i.start <= moment <= i.end for i in intervals)


def pooler_trouble(procs: Processes) -> list[str]:
    lines = []
    for path in sorted(procs.log_dir.glob("*.log")):
        lines += [f"{path.name}: {line}" for line in path.read_text().splitlines()
                  if POOLER_TROUBLE.search(line)]  # fmt: skip
    return lines


def task_phase(cluster: Cluster, name: str) -> str | None:
    phase: str | None = cluster.status(TASKS, name).get("phase")
    return phase


def add_tasks(engine: Engine, queue: str, n: int) -> None:
    with engine.begin() as conn:
        items = [new_task("tests.record", [-1], queue=queue) for _ in range(n)]
        insert_tasks(conn, items, payload_limit=1_000_000)


def test_two_replicas_through_pgbouncer_lead_one_at_a_time_and_take_over(
    plane: KubeAPI,
    pgbouncer: PgBouncer,
    pooled_database_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    mark = pgbouncer.log_mark()
    procs = make_processes(pooled_database_url, tmp_path)
    cluster = Cluster(plane, plane.create_namespace("pooled"), procs)
    direct = create_engine(database_url)
    try:
        # One replica listens on a direct URL, as the chart sets it up; the other has
        # only the pooled URL and polls. The first leads both status sync and the pool
        # before the second starts (leases are taken independently: whichever replica
        # comes first to each), so killing it moves both.
        first = start_replica(cluster, EVENTIX_LISTEN_DATABASE_URL=database_url)
        procs.worker("--concurrency", "4", EVENTIX_LISTEN_DATABASE_URL=database_url)
        deployment(cluster, "pool-target")
        pool(cluster, "pooled", {
            "scaleTargetRef": {"name": "pool-target"}, "queues": ["pool-q"], "maxReplicas": 8,
            "tasksPerReplica": 1, "cooldownSeconds": 300, "pollingIntervalSeconds": 30,
        })  # fmt: skip
        lease_names = ("status-sync", f"pool-scaler:{cluster.namespace}/pooled")

        def first_holds_both() -> bool:
            with direct.connect() as conn:
                held = dict(conn.execute(text("SELECT name, holder FROM eventix_lease")).all())
            holder = first.holder()
            return holder is not None and {held.get(n) for n in lease_names} == {holder}

        cluster.wait("the first replica leading", first_holds_both, 60)
        second = start_replica(cluster)
        both = [first, second]
        cluster.create(SCHEDULES, "ticks", every_2s(catchUp="All", template={
            "task": "tests.record", "args": [0], "queue": "nobody-serves-ticks"}))  # fmt: skip
        for i in range(3):
            cluster.create(TASKS, f"before-{i}", {"task": "tests.record", "args": [i]})
        for i in range(3):
            cluster.wait(f"before-{i} synced", lambda i=i: task_phase(cluster, f"before-{i}")
                         == "Succeeded", 60)  # fmt: skip
        add_tasks(direct, "pool-q", 2)
        cluster.wait("2 replicas", lambda: replicas(cluster, "pool-target") == 2, 60)

        def ticked() -> bool:  # the schedule fired under the first leader
            with direct.connect() as conn:
                return bool(conn.execute(TICKS).first())

        cluster.wait("a tick before the kill", ticked, 60)
        assert first_holds_both()  # a live leader keeps its leases
        leader, survivor = first, second
        leader.killed_at = datetime.now(UTC)
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        killed = time.monotonic()

        cluster.create(TASKS, "after", {"task": "tests.record", "args": [7]})
        add_tasks(direct, "pool-q", 3)
        cluster.wait("after synced", lambda: task_phase(cluster, "after") == "Succeeded", 120)
        cluster.wait("5 replicas", lambda: replicas(cluster, "pool-target") == 5, 120)
        print(f"\nstatus sync and the pool taken over {time.monotonic() - killed:.1f} s "
              f"after SIGKILL (lease {LEASE_SECONDS} s)")  # fmt: skip
        time.sleep(4)  # some ticks after the takeover
        procs.stop(survivor.proc)
        end = datetime.now(UTC)

        for name in lease_names:
            intervals = lease_intervals(both, name, end)
            assert {i.holder for i in intervals} == {first.holder(), second.holder()}, name
            assert_one_at_a_time(intervals)
        scaler = lease_intervals(both, f"pool-scaler:{cluster.namespace}/pooled", end)
        sync = lease_intervals(both, "status-sync", end)
        scalings = [(r, e) for r in both for e in r.events() if e["event"] == "scaled worker pool"]
        assert {e["holder"] for _, e in scalings} == {first.holder(), second.holder()}
        for _, event in scalings:
            assert within(scaler, event["holder"], at(event)), event
        for replica in both:
            for event in replica.events():
                if event["event"] in ("leading status sync", "stopped leading status sync"):
                    assert within(sync, event["holder"], at(event)), event
        # Kubernetes saw each scaling from the replica holding the pool's lease.
        events = cluster.core.list_namespaced_event(
            cluster.namespace, field_selector="involvedObject.name=pooled"
        ).items
        scaled_by = {e.reporting_instance for e in events if e.reason == "Scaled"}
        assert scaled_by == {first.holder(), second.holder()}

        with direct.connect() as conn:
            ticks = list(conn.execute(TICKS).scalars())
        assert_every_tick_once(ticks)
        assert ticks[0] < leader.killed_at < ticks[-1]
    finally:
        procs.stop_all()
        direct.dispose()
        plane.delete_namespace(cluster.namespace)
    assert pooler_trouble(procs) == []
    assert pgbouncer.pooler_errors(mark) == []


# -- failover ------------------------------------------------------------------------------


@dataclass
class Enqueuer:
    """Enqueues one task after another through eventix's client, each in its own
    transaction, remembering the ones whose commit was acknowledged."""

    url: str
    acknowledged: list[tuple[str, int]] = field(default_factory=list)
    failures: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        settings = Settings.model_validate({"DATABASE_URL": self.url, "db_connect_timeout": 2})
        self.engine = make_engine(settings)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            try:
                with self.engine.begin() as conn:
                    [uid] = insert_tasks(conn, [new_task("tests.record", [n])],
                                         payload_limit=1_000_000)  # fmt: skip
                self.acknowledged.append((uid, n))
            except Exception:  # the outage: what was not acknowledged may or may not exist
                self.failures += 1
                time.sleep(0.05)
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        self.engine.dispose()


def run_through_a_failover(
    plane: KubeAPI, pair: ReplicatedPair, tmp_path: Path, url: str, *, proxy: bool
) -> None:
    procs = make_processes(url, tmp_path)
    cluster = Cluster(plane, plane.create_namespace("failover"), procs)
    enqueuer = Enqueuer(url)
    try:
        # Shared tenancy (tests/e2e/conftest.py): the tasks use queues of their own names.
        cluster.operator("--namespace", cluster.namespace, ready=True, **SHARED)
        for _ in range(2):
            procs.worker("--concurrency", "4")
        cluster.create(SCHEDULES, "ticks", every_2s(catchUp="All", template={
            "task": "tests.record", "args": [0], "queue": "nobody-serves-ticks"}))  # fmt: skip
        enqueuer.thread.start()
        procs.wait_for(lambda: len(procs.executions()) >= 100, 60, "100 tasks run")
        time.sleep(3)

        killed_at = datetime.now(UTC)
        killed = time.monotonic()
        pair.kill_primary()
        pair.promote()
        if proxy:
            pair.proxy.switch_to(pair.standby.port)
        promoted = time.monotonic() - killed
        promoted_at = datetime.now(UTC)
        new_primary = create_engine(pair.current_primary().url("evx"))
        try:

            def finished_after_the_promotion() -> Any:
                with new_primary.connect() as conn:
                    return conn.execute(FINISHED_AFTER, {"t": promoted_at}).scalar()

            procs.wait_for(finished_after_the_promotion, 120, "a task finished after the failover")
            resumed = (finished_after_the_promotion() - killed_at).total_seconds()
            time.sleep(8)  # more enqueues, runs and ticks on the promoted primary
            enqueuer.stop()
            acked = dict(enqueuer.acknowledged)

            def all_done() -> bool:
                with new_primary.connect() as conn:
                    done = conn.execute(DONE, {"u": list(acked)}).scalar()
                return done == len(acked)

            # A claim committed while its answer was lost comes back after its lease (30 s).
            procs.wait_for(all_done, 120, "every acknowledged task done")
            with new_primary.connect() as conn:
                present = {str(u) for u in conn.execute(PRESENT, {"u": list(acked)}).scalars()}
                ticks = list(conn.execute(TICKS).scalars())
        finally:
            new_primary.dispose()
        runs = procs.executions()
        print(
            f"\nfailover ({'proxy' if proxy else 'multi-host URL'}): promoted "
            f"{promoted:.1f} s after the kill, a first task done on it {resumed:.1f} s after; "
            f"{len(acked)} enqueues acknowledged, {enqueuer.failures} refused during the outage"
        )
        lost = set(acked) - present
        assert not lost, f"{len(lost)} acknowledged enqueues lost"
        assert [n for n in acked.values() if runs[f"run {n}"] != 1] == []  # each run once
        assert_every_tick_once(ticks)
        assert ticks[0] < killed_at < ticks[-1]
    finally:
        if not enqueuer.stopping.is_set():
            enqueuer.stop()
        procs.stop_all()
        plane.delete_namespace(cluster.namespace)


def test_failover_behind_one_address(
    plane: KubeAPI, failover_pair: ReplicatedPair, tmp_path: Path
) -> None:
    failover_pair.create_database("evx", migrate=True)
    url = failover_pair.proxy_url("evx")
    run_through_a_failover(plane, failover_pair, tmp_path, url, proxy=True)


def test_failover_with_a_multi_host_url(
    plane: KubeAPI, failover_pair: ReplicatedPair, tmp_path: Path
) -> None:
    failover_pair.create_database("evx", migrate=True)
    url = failover_pair.multi_host_url("evx")  # libpq's form, as a user writes it
    run_through_a_failover(plane, failover_pair, tmp_path, url, proxy=False)
