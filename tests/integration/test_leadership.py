"""Leadership leases through PgBouncer in transaction mode: one holder per lease at a
time, handed over when released, taken over once expired, and given up by a holder
that cannot reach the database before the database lets anyone else in. (Two real
operator processes, one of them killed: tests/e2e/test_pooled_operators.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from eventix_operator.db import leadership as lease_db
from eventix_operator.db.engine import make_engine
from eventix_operator.operator.leadership import LEADER, Leadership, pool_lease
from eventix_operator.settings import Settings
from tests.support.pgbouncer import PgBouncer
from tests.support.replication import TcpProxy


async def eventually(predicate: Callable[[], bool]) -> None:
    """Until ``predicate()`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def engine_for(url: str) -> Engine:
    return make_engine(Settings.model_validate({"DATABASE_URL": url, "db_pool_size": 2}))


@pytest.fixture
def pooled(pooled_database_url: str) -> Iterator[Engine]:
    engine = engine_for(pooled_database_url)
    yield engine
    engine.dispose()


def test_one_holder_at_a_time_and_takeover_after_expiry(pooled: Engine) -> None:
    with pooled.begin() as conn:
        assert lease_db.acquire(conn, ["a", "b"], "one", 1.0) == {"a", "b"}
    with pooled.begin() as conn:
        assert lease_db.acquire(conn, ["a", "b", "c"], "two", 1.0) == {"c"}
        assert lease_db.acquire(conn, ["a"], "one", 1.0) == {"a"}  # renewed by its holder
    time.sleep(1.2)  # "b" expired; "a" too, since its renewal
    with pooled.begin() as conn:
        assert lease_db.acquire(conn, ["a", "b"], "two", 5.0) == {"a", "b"}
        assert lease_db.acquire(conn, ["a", "b"], "one", 5.0) == set()
        lease_db.release(conn, ["a"], "one")  # not its own: nothing happens
        lease_db.release(conn, ["b"], "two")
        leases = {lease.name: lease for lease in lease_db.leases(conn)}
    assert set(leases) == {"a", "c"}
    assert (leases["a"].holder, leases["a"].live) == ("two", True)
    assert (leases["c"].holder, leases["c"].live) == ("two", False)


def test_two_replicas_never_both_lead_and_a_release_hands_over_at_once(
    pgbouncer: PgBouncer, pooled_database_url: str
) -> None:
    mark = pgbouncer.log_mark()
    engines = [engine_for(pooled_database_url) for _ in range(2)]
    both: list[float] = []
    leaders: list[str] = []

    async def run() -> tuple[lease_db.Lease, lease_db.Lease]:
        replicas = [Leadership(e, seconds=2.0, holder=f"r{i}") for i, e in enumerate(engines)]
        pool = pool_lease("ns", "workers")
        for replica in replicas:
            replica.want(LEADER)
            replica.want(pool)
        tasks = [asyncio.create_task(r.run()) for r in replicas]
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            for name in (LEADER, pool):
                holding = [r.holder for r in replicas if r.holds(name)]
                if len(holding) > 1:
                    both.append(time.monotonic())
                leaders.extend(holding)
            await asyncio.sleep(0.01)
        first = next(r for r in replicas if r.holds(LEADER))
        other = next(r for r in replicas if r is not first)
        before = leader_lease()
        first.stop()  # a clean stop gives the leases back
        await tasks[replicas.index(first)]
        await eventually(lambda: other.holds(LEADER))
        after = leader_lease()
        other.stop()
        await asyncio.gather(*tasks)
        return before, after

    def leader_lease() -> lease_db.Lease:
        with engines[0].connect() as conn:
            return next(lease for lease in lease_db.leases(conn) if lease.name == LEADER)

    try:
        before, after = asyncio.run(run())
        with engines[0].connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM eventix_lease")).scalar() == 0
    finally:
        for engine in engines:
            engine.dispose()
    assert both == []
    assert leaders, "nobody led"
    assert before.holder != after.holder
    # Handed over at the other's next renewal, before the released lease would have expired.
    assert after.acquired_at < before.expires_at
    assert pgbouncer.pooler_errors(mark) == []


def test_a_holder_cut_off_from_the_database_stops_before_its_lease_expires(
    pooled_database_url: str, database_url: str
) -> None:
    """The proxy between the holder and the pooler closes: renewals fail. The holder
    stops acting a quarter of a lease before the database would let another in."""
    from sqlalchemy.engine import make_url

    pooled = make_url(pooled_database_url)
    proxy = TcpProxy(pooled.port)
    proxy.start()
    cut = engine_for(pooled.set(port=proxy.port).render_as_string(False))
    observer = engine_for(pooled_database_url)
    lost_while_live: list[bool] = []

    async def run() -> None:
        replica = Leadership(cut, seconds=2.0, holder="cut-off")

        def changed(name: str, held: bool) -> None:
            if not held:
                with observer.connect() as conn:
                    lease = lease_db.leases(conn)[0]
                lost_while_live.append(lease.holder == "cut-off" and lease.live)

        replica.on_change(changed)
        replica.want(LEADER)
        task = asyncio.create_task(replica.run())
        await eventually(lambda: replica.holds(LEADER))
        proxy.switch_to(None)  # every connection closed, new ones refused
        await eventually(lambda: not replica.holds(LEADER))
        replica.stop()
        await task

    try:
        asyncio.run(run())
    finally:
        cut.dispose()
        observer.dispose()
        proxy.stop()
    assert lost_while_live == [True]
