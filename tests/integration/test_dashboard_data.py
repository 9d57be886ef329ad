"""The dashboard's data layer on a real PostgreSQL: the keyset task list against a
plain ORDER BY, capped counts and estimates, the throughput roll-up, bulk actions
(and what they leave to Git), run now, pool records, and the index plans."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from eventix_operator.db import dashboard, pools, triggers
from eventix_operator.db import queues as queue_db
from eventix_operator.db import schedules as schedule_db
from eventix_operator.db.dashboard import Cursor, TaskFilter
from eventix_operator.db.triggers import EventContext
from eventix_operator.resources import schedule_definition
from eventix_operator.schedules.scheduler import apply_schedule, fire_due, run_now

T0 = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def fill(engine: Engine, n: int = 400, seed: int = 7) -> None:
    """Tasks of three queues, every status and source, four task names; batches of
    rows share a created_at (one transaction's now()), as bulk enqueues do."""
    rnd = random.Random(seed)
    statuses = ["scheduled", "processing", "done", "error", "retry", "cancelled"]
    sources = ["api", "client", "cli", "k8s", "schedule", "trigger"]
    rows = []
    for i in range(n):
        batch = i // 25
        status = rnd.choice(statuses)
        pending = status in ("scheduled", "retry")  # one pending task per (queue, key)
        rows.append(
            {
                "uid": str(uuid.UUID(int=rnd.getrandbits(128))),
                "task": f"t{rnd.randrange(4)}",
                "namespace": f"q{rnd.randrange(3)}",
                "status": status,
                "source": rnd.choice(sources),
                "created_at": T0 + timedelta(minutes=batch),
                "unique_key": f"k{rnd.randrange(20)}"
                if rnd.random() < 0.3 and not pending
                else None,
            }
        )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (uid, task, namespace, status, source, created_at,"
                " unique_key) VALUES (:uid, :task, :namespace, :status, :source,"
                " :created_at, :unique_key)"
            ),
            rows,
        )


def expected(engine: Engine, where: TaskFilter) -> list[str]:
    """The same listing the plain way: filter, ORDER BY created_at DESC, uid DESC."""
    clauses, params = ["TRUE"], {}
    if where.queue:
        clauses.append("namespace = :queue")
        params["queue"] = where.queue
    if where.statuses:
        clauses.append("status = ANY(:statuses)")
        params["statuses"] = list(where.statuses)
    if where.sources:
        clauses.append("source = ANY(:sources)")
        params["sources"] = list(where.sources)
    if where.task:
        clauses.append("task = :task")
        params["task"] = where.task
    if where.unique_key:
        clauses.append("unique_key = :uk")
        params["uk"] = where.unique_key
    if where.since:
        clauses.append("created_at >= :since")
        params["since"] = where.since
    if where.until:
        clauses.append("created_at < :until")
        params["until"] = where.until
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT uid::text FROM eventix_task WHERE {' AND '.join(clauses)}"
                " ORDER BY created_at DESC, uid DESC"
            ),
            params,
        )
        return [r[0] for r in rows]


def walk(engine: Engine, where: TaskFilter, page: int) -> list[str]:
    """Every page of the dashboard's list, following its cursors."""
    seen: list[str] = []
    after: Cursor | None = None
    with engine.connect() as conn:
        while True:
            rows, after = dashboard.list_tasks(conn, where, after=after, limit=page)
            assert len(rows) <= page
            seen += [r.uid for r in rows]
            if after is None:
                return seen
            # a cursor survives its round trip through a link
            after = Cursor.decode(after.encode())


FILTERS = [
    TaskFilter(),
    TaskFilter(queue="q1"),
    TaskFilter(statuses=("error",)),
    TaskFilter(statuses=("done", "cancelled"), queue="q2"),
    TaskFilter(sources=("k8s",)),
    TaskFilter(task="t2"),
    TaskFilter(task="t3", statuses=("error", "retry"), queue="q0"),
    TaskFilter(unique_key="k3"),
    TaskFilter(unique_key="k4", task="t1", queue="q1"),
    TaskFilter(since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=9)),
    TaskFilter(queue="q2", since=T0 + timedelta(minutes=5), statuses=("scheduled",)),
    TaskFilter(queue="nope"),
]


@pytest.mark.parametrize("where", FILTERS, ids=lambda f: repr(f)[10:60])
def test_keyset_pages_list_exactly_what_order_by_lists(engine: Engine, where: TaskFilter) -> None:
    fill(engine)
    want = expected(engine, where)
    assert walk(engine, where, page=7) == want
    assert walk(engine, where, page=1000) == want


def test_a_page_shows_no_payload_and_the_error_message(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, status, args, error) VALUES ('x', 'error',"
                " CAST(:args AS jsonb), CAST(:error AS jsonb))"
            ),
            {
                "args": json.dumps(["big" * 1000]),
                "error": json.dumps({"type": "ValueError", "message": "m" * 1000}),
            },
        )
        (row,), _ = dashboard.list_tasks(conn, TaskFilter())
    assert not hasattr(row, "args")
    assert row.error_type == "ValueError"
    assert row.error_message == "m" * 300


def test_uid_prefix_finds_by_the_primary_key(engine: Engine) -> None:
    fill(engine, 50)
    with engine.connect() as conn:
        uid = conn.execute(text("SELECT uid::text FROM eventix_task LIMIT 1")).scalar_one()
        found = dashboard.find_by_uid_prefix(conn, uid[:8])
        assert uid in [f.uid for f in found]
        assert all(f.uid.startswith(uid[:8]) for f in found)
        assert [f.uid for f in dashboard.find_by_uid_prefix(conn, uid.upper())] == [uid]
        assert dashboard.find_by_uid_prefix(conn, "not hex") == []
        assert len(dashboard.find_by_uid_prefix(conn, "f" * 3)) <= 20


def test_counts_stop_at_the_cap_and_the_planner_estimates_beyond(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, eta) SELECT 't', 'big',"
                " 'done', now() FROM generate_series(1, 3000)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, eta) SELECT 't', 'small',"
                " 'scheduled', now() - interval '90 seconds' FROM generate_series(1, 7)"
            )
        )
        conn.execute(text("ANALYZE eventix_task"))
    with engine.connect() as conn:
        found = {q.queue: q for q in dashboard.queue_overview(conn, cap=1000)}
    big, small = found["big"], found["small"]
    assert big.counts["done"] == 1000
    assert big.capped("done")
    assert 2000 < big.estimates["done"] < 4000
    assert small.counts == {
        "scheduled": 7, "processing": 0, "done": 0, "error": 0, "retry": 0, "cancelled": 0,
    }  # fmt: skip
    assert not small.capped("scheduled")
    assert small.due == 7
    assert small.oldest_due_seconds is not None
    assert 80 < small.oldest_due_seconds < 3600


def test_the_oldest_due_task_is_found_across_priorities(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, priority, eta) VALUES"
                " ('t', 'mixed', 'scheduled', 0, now() + interval '1 hour'),"
                " ('t', 'mixed', 'retry', 5, now() - interval '120 seconds'),"
                " ('t', 'mixed', 'scheduled', -1, now() - interval '30 seconds'),"
                " ('t', 'mixed', 'done', 2, now() - interval '1 day'),"
                " ('t', 'later', 'scheduled', 0, now() + interval '1 minute')"
            )
        )
    with engine.connect() as conn:
        found = {q.queue: q for q in dashboard.queue_overview(conn, cap=1000)}
    assert found["mixed"].due == 2
    assert found["mixed"].oldest_due_seconds is not None
    assert 119 < found["mixed"].oldest_due_seconds < 600
    assert (found["later"].due, found["later"].oldest_due_seconds) == (0, None)


def finish(engine: Engine, queue: str, status: str, n: int, ago: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, finished_at) SELECT 't', :q,"
                " :s, now() - :ago FROM generate_series(1, :n)"
            ),
            {"q": queue, "s": status, "n": n, "ago": ago},
        )


def test_throughput_rolls_up_closed_minutes_once_and_counts_the_rest_live(
    engine: Engine,
) -> None:
    finish(engine, "a", "done", 5, timedelta(minutes=30))
    finish(engine, "a", "error", 2, timedelta(minutes=30))
    finish(engine, "b", "done", 3, timedelta(minutes=10))
    finish(engine, "b", "cancelled", 4, timedelta(minutes=10))  # neither done nor failed
    finish(engine, "a", "done", 1, timedelta(seconds=0))  # this minute: counted live
    rolled = 0
    with engine.begin() as conn:
        while step := dashboard.roll_up_throughput(conn):
            rolled += step
    assert 58 <= rolled <= 60
    with engine.begin() as conn:
        assert dashboard.roll_up_throughput(conn) == 0  # nothing new closed
        stored = conn.execute(text("SELECT sum(done), sum(failed) FROM eventix_throughput"))
        assert tuple(stored.one()) == (16, 4)  # the totals row and the queues' rows
        flow = dashboard.throughput(conn)
    assert len(flow.minutes) == 60
    assert flow.total() == (9, 2)
    assert flow.total("a") == (6, 2)
    assert flow.total("b") == (3, 0)
    assert not flow.partial


def test_one_process_rolls_up_at_a_time(engine: Engine) -> None:
    finish(engine, "a", "done", 1, timedelta(minutes=5))
    with engine.begin() as holder, engine.begin() as other:
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": dashboard.ROLL_UP_LOCK})
        assert dashboard.roll_up_throughput(other) == 0


def test_live_workers_are_the_holders_of_live_leases(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, status, worker_id, worker_expires, started_at)"
                " VALUES ('a', 'processing', 'w1', now() + interval '30 s', now()),"
                " ('b', 'processing', 'w1', now() + interval '20 s', now() - interval '1 s'),"
                " ('c', 'processing', 'w2', now() + interval '30 s', now()),"
                " ('d', 'processing', 'dead', now() - interval '1 s', now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, status, worker_id, worker_expires, started_at)"
                " SELECT 'busy-' || i, 'processing', 'w3', now() + interval '40 s',"
                " now() - make_interval(secs => 100 - i) FROM generate_series(1, 12) AS i"
            )
        )
        workers, capped = dashboard.live_workers(conn, per_worker=3)
        few, few_capped = dashboard.live_workers(conn, limit=4)
    assert {w.worker_id: [t.task for t in w.running] for w in workers} == {
        "w1": ["b", "a"],
        "w2": ["c"],
        "w3": ["busy-1", "busy-2", "busy-3"],  # the oldest first
    }
    assert [w.count for w in workers] == [2, 1, 12]
    assert workers[0].lease_until == max(t.lease_until for t in workers[0].running)
    assert not capped
    assert few_capped
    assert sum(w.count for w in few) == 4


def test_bulk_actions_follow_the_single_task_rules_and_leave_owned_rows(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "INSERT INTO eventix_task (task, status, source) VALUES"
                " ('a', 'error', 'api'), ('b', 'done', 'k8s'), ('c', 'processing', 'api'),"
                " ('d', 'scheduled', 'schedule'), ('e', 'retry', 'client')"
                " RETURNING task, uid::text"
            )
        )
        uid = dict(rows.all())
        everything = [*uid.values(), "not-a-uid"]
        retried = dashboard.bulk_action(conn, "retry", everything)
        assert sorted(retried.uids) == sorted([uid["a"], uid["b"], uid["e"]])
        assert retried.skipped == 3
        cancelled = dashboard.bulk_action(conn, "cancel", everything)
        # the retried ones and the pending run end cancelled; the running one is
        # marked for its worker to stop, and counts as changed
        assert sorted(cancelled.uids) == sorted([uid["a"], uid["b"], uid["c"], uid["d"], uid["e"]])
        states = dict(conn.execute(text("SELECT task, status FROM eventix_task")).all())
        assert states == {"a": "cancelled", "b": "cancelled", "c": "processing",
                          "d": "cancelled", "e": "cancelled"}  # fmt: skip
        deleted = dashboard.bulk_action(conn, "delete", everything)
        assert sorted(deleted.uids) == sorted([uid["a"], uid["c"], uid["e"]])  # not k8s/schedule
        with pytest.raises(ValueError, match="unknown action"):
            dashboard.bulk_action(conn, "explode", everything)


def test_bulk_retry_leaves_a_unique_key_to_one_pending_task(engine: Engine) -> None:
    """Finished runs of one key pile up; retrying them all at once, or one whose key
    a pending task holds, must not break the key's rule (nor fail the batch)."""
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, unique_key, created_at)"
                " VALUES ('old', 'q', 'error', 'k1', now() - interval '2 minutes'),"
                " ('new', 'q', 'done', 'k1', now() - interval '1 minute'),"
                " ('held', 'q', 'error', 'k2', now()), ('holder', 'q', 'scheduled', 'k2', now()),"
                " ('other-queue', 'r', 'error', 'k2', now()), ('plain', 'q', 'error', NULL, now()),"
                " ('waiting', 'q', 'retry', 'k3', now()), ('same-key', 'q', 'error', 'k3', now())"
                " RETURNING task, uid::text"
            )
        )
        uid = dict(rows.all())
        # a key is held per Kubernetes namespace too (tenancy): team-a's k2 is free
        uid["team-a"] = conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, unique_key, k8s_namespace,"
                " source) VALUES ('team-a', 'q', 'error', 'k2', 'team-a', 'trigger')"
                " RETURNING uid::text"
            )
        ).scalar_one()
        retried = dashboard.bulk_action(conn, "retry", list(uid.values()))
        assert sorted(retried.uids) == sorted(
            uid[t] for t in ("new", "other-queue", "plain", "waiting", "team-a")
        )
        assert retried.skipped == 4
        # the others' keys are held now: nothing more to do, and still no violation
        assert dashboard.bulk_action(conn, "retry", list(uid.values())).changed == 0


def test_everything_a_filter_matches_comes_a_batch_at_a_time(engine: Engine) -> None:
    fill(engine, 300)
    where = TaskFilter(statuses=("error",))
    want = expected(engine, where)
    seen: list[str] = []
    after: Cursor | None = None
    with engine.connect() as conn:
        while True:
            uids, after = dashboard.matching_uids(conn, where, after=after, limit=16)
            seen += uids
            if after is None:
                break
    assert seen == want


def define_schedule(engine: Engine, name: str = "nightly", **spec: Any) -> str:
    spec.setdefault("schedule", "*/2 * * * * *")
    spec.setdefault("template", {"task": "tick", "queue": "sched"})
    definition = schedule_definition(
        spec, uid=f"uid-{name}", namespace="ns", name=name, generation=1, created_at=T0
    )
    with engine.begin() as conn:
        apply_schedule(conn, definition, T0)
    return definition.uid


def test_run_now_is_a_run_of_the_schedule_that_no_tick_collides_with(engine: Engine) -> None:
    uid = define_schedule(engine, successfulRunsHistoryLimit=10)
    with engine.begin() as conn:
        schedule = schedule_db.get_schedule(conn, uid)
        assert schedule is not None
        # asked for exactly on a tick's second: the key is moved off the whole second
        task_uid, key = run_now(conn, schedule, T0 + timedelta(seconds=2), payload_limit=10**6)
        assert key == T0 + timedelta(seconds=2, microseconds=1)
    with engine.begin() as conn:
        fired = fire_due(conn, T0 + timedelta(seconds=4), payload_limit=10**6)
        assert [t for t, _ in fired[0].fired] == [T0 + timedelta(seconds=4)]
    with engine.begin() as conn:
        fire_due(conn, T0 + timedelta(seconds=2), payload_limit=10**6)
        runs = dashboard.recent_schedule_runs(conn, [uid])[uid]
        history = schedule_db.schedule_history(conn, [uid])[uid]
    manual = [r for r in runs if r.manual]
    assert [r.uid for r in manual] == [task_uid]
    assert manual[0].operator == "run now"
    assert task_uid in [r.task_uid for r in history.runs]  # the status sync sees it
    assert all(r.time.microsecond == 0 for r in runs if not r.manual)


def test_pool_records_keep_the_last_look_and_a_sample_per_minute(engine: Engine) -> None:
    def state(desired: int, depth: int) -> pools.PoolState:
        return pools.PoolState(
            "p-uid", "team", "reports", "Deployment", "report-workers", ("reports", "pdf"),
            0, 10, 5, 1, 300.0, desired, desired - 1, depth, 2, 1, True, "Scaling", "ok", None,
        )  # fmt: skip

    with engine.begin() as conn:
        pools.record_pools(conn, [state(3, 12)])
        pools.record_pools(conn, [state(2, 4)])
        (found,) = dashboard.list_pools(conn)
        samples = dashboard.pool_samples(conn, ["p-uid"], datetime.now(UTC) - timedelta(hours=1))
    assert (found.desired_replicas, found.queue_depth, found.queues) == (2, 4, ["reports", "pdf"])
    assert found.wanted_by_rule == 2  # ceil((4 + 2) / 5)
    (sample,) = samples["p-uid"]
    assert (sample.desired_replicas, sample.queue_depth) == (2, 12)  # the deepest of the minute
    with engine.begin() as conn:
        assert pools.delete_pool(conn, "p-uid")
        assert dashboard.list_pools(conn) == []
        assert conn.execute(text("SELECT count(*) FROM eventix_pool_sample")).scalar_one() == 0


def test_a_trigger_task_names_its_resource(engine: Engine) -> None:
    with engine.begin() as conn:
        record = triggers.upsert_trigger(
            conn,
            uid="tr-1",
            name="shop/ship",
            event_name="order.created",
            template={"task": "ship"},
            k8s_namespace="shop",
            k8s_name="ship",
        )
    task = triggers.trigger_task(record, EventContext(name="order.created"))
    assert (task.source, task.k8s_namespace, task.k8s_name) == ("trigger", "shop", "ship")


PLANS = [
    ("queues", TaskFilter(queue="q1", statuses=("error",)), "ix_eventix_task_listing"),
    ("task", TaskFilter(task="t1"), "ix_eventix_task_task_listing"),
    ("unique key", TaskFilter(unique_key="k1"), "ix_eventix_task_unique_key"),
]


@pytest.mark.parametrize(("name", "where", "index"), PLANS, ids=[p[0] for p in PLANS])
def test_each_listing_reads_its_index(
    engine: Engine, name: str, where: TaskFilter, index: str
) -> None:
    """No sequential scan of the task table, whatever the filter (the table is
    large enough that a scan would cost more than the index)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, unique_key, created_at)"
                " SELECT 't' || (i % 50), 'q' || (i % 7), (ARRAY['done','error','scheduled'])"
                "[1 + i % 3], 'k' || (i % 5000), now() - make_interval(secs => i)"
                " FROM generate_series(1, 20000) AS i"
            )
        )
        conn.execute(text("ANALYZE eventix_task"))
    captured: list[str] = []
    with engine.connect() as conn:
        original = conn.execute

        def explain(statement: Any, params: Any = None, **kw: Any) -> Any:
            sql = (
                str(statement.compile(dialect=conn.dialect))
                if hasattr(statement, "compile")
                else str(statement)
            )
            if "eventix_task AS t" in sql and "LIMIT" in sql:
                plan = original(text("EXPLAIN " + statement.text), params).scalars()
                captured.append("\n".join(plan))
            return original(statement, params, **kw)

        conn.execute = explain  # type: ignore[method-assign]
        dashboard.list_tasks(conn, where, limit=50)
    (plan,) = captured
    assert index in plan, plan
    assert "Seq Scan on eventix_task" not in plan, plan


def test_time_filters_combine_with_every_listing(engine: Engine) -> None:
    fill(engine, 200)
    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=6)
    for queue, task in itertools.product((None, "q0"), (None, "t1")):
        where = TaskFilter(queue=queue, task=task, since=since, until=until)
        assert walk(engine, where, page=5) == expected(engine, where)


def test_every_queue_is_named_whatever_state_its_tasks_are_in(engine: Engine) -> None:
    """Queue names come from the partial indexes of each state (finished, pending)
    and the running rows: a queue whose every task is in one state is still named."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, worker_id, worker_expires)"
                " VALUES ('t', 'q-running', 'processing', 'w', now() + interval '1 minute'),"
                " ('t', 'q-pending', 'retry', NULL, NULL),"
                " ('t', 'q-cancelled', 'cancelled', NULL, NULL),"
                " ('t', 'q-done', 'done', NULL, NULL)"
            )
        )
    with engine.connect() as conn:
        assert dashboard.queues(conn) == ["q-cancelled", "q-done", "q-pending", "q-running"]


def test_the_queues_page_names_every_queue_with_tasks_or_settings(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO eventix_task (task, namespace, status, eta, worker_id,"
                " worker_expires) SELECT 't', 'busy', 'scheduled', now() - interval '1 minute',"
                " NULL, NULL FROM generate_series(1, 30)"
                " UNION ALL SELECT 't', 'busy', 'processing', now(), 'w',"
                " now() + interval '1 minute' FROM generate_series(1, 2)"
                " UNION ALL SELECT 't', 'plain', 'done', now(), NULL, NULL"
            )
        )
        queue_db.set_queue(conn, "busy", queue_db.everything(concurrency_limit=2))
        queue_db.set_queue(conn, "idle", queue_db.everything(paused=True), k8s=("team", "i", "u"))
    with engine.connect() as conn:
        found = {q.name: q for q in dashboard.queue_controls(conn, cap=10)}
    assert list(found) == ["busy", "idle", "plain"]
    busy, idle, plain = found["busy"], found["idle"], found["plain"]
    assert (busy.due, busy.running, busy.concurrency_limit) == (10, 2, 2)  # due capped at 10
    assert busy.oldest_due_seconds is not None
    assert busy.configured_by is None
    assert busy.updated_at is not None  # settings, given by the CLI or the REST API
    assert (idle.paused, idle.configured_by, idle.due, idle.oldest_due_seconds) == (
        True, "team/i", 0, None,
    )  # fmt: skip
    assert (plain.paused, plain.updated_at, plain.concurrency_limit) == (False, None, None)
    with engine.connect() as conn:
        overview = {q.queue: q.paused for q in dashboard.queue_overview(conn, cap=10)}
    assert overview == {"busy": False, "plain": False}  # idle has no tasks


def test_the_dashboard_pauses_only_a_queue_no_resource_configures(engine: Engine) -> None:
    with engine.begin() as conn:
        assert dashboard.set_paused(conn, "free", True) is None
        queue_db.set_queue(conn, "gitops", queue_db.everything(), k8s=("team", "g", "uid-g"))
        assert dashboard.set_paused(conn, "gitops", True) == "team/g"
    with engine.begin() as conn:
        assert queue_db.get_queue(conn, "free").paused  # type: ignore[union-attr]
        assert not queue_db.get_queue(conn, "gitops").paused  # type: ignore[union-attr]
        assert dashboard.set_paused(conn, "free", False) is None
        assert not queue_db.get_queue(conn, "free").paused  # type: ignore[union-attr]
    # between its look at the owner and its commit, no resource can take the queue over
    with engine.connect() as first, engine.connect() as second:
        first.begin()
        assert dashboard.set_paused(first, "free", True) is None
        second.begin()
        second.execute(text("SET LOCAL lock_timeout = '200ms'"))
        with pytest.raises(OperationalError, match="lock timeout"):
            queue_db.set_queue(second, "free", queue_db.everything(), k8s=("team", "f", "uid-f"))
        second.rollback()
        first.commit()
