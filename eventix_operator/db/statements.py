"""Every SQL statement of eventix-operator, named, in one place, by concern.

Nothing outside :mod:`eventix_operator.db` builds SQL. The sections follow the
data layer's modules: enqueue, leases (native workers), write-back (Eventix's
HTTP workers), administration (CLI, REST, operator), schedules, triggers,
pools and metrics. Column lists come from the tables in :mod:`.schema`, never
by hand: a statement that returns whole task rows returns :data:`TASK_COLUMNS`
in table order, which is the field order of
:class:`~eventix_operator.db.rows.TaskRecord`. Batch statements take parallel
arrays and ``unnest`` them (typed from the schema by :func:`unnest`), so a batch
of any size is one round trip.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ClauseElement, ColumnElement, Select, TextClause, case, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from eventix_operator.db.rows import INSERT_COLUMNS
from eventix_operator.db.schema import (
    FINISHED_PREDICATE,
    FINISHED_STATUSES,
    PENDING_PREDICATE,
    PENDING_STATUSES,
    UNIQUE_KEY_SCOPE,
    schedule_table,
    task_table,
)
from eventix_operator.db.trigger_schema import trigger_table
from eventix_operator.retry import failures_so_far_sql

#: Channel that carries the queue name of newly ready tasks (see the migration's
#: insert trigger, and :func:`waking` for updates).
READY_CHANNEL = "eventix_task_ready"
#: Channel that wakes the scheduler when a schedule is created, changed or resumed.
SCHEDULE_CHANNEL = "eventix_schedule_changed"
#: Channel that carries the uid of a running task whose cancel was asked for (or
#: whose row was deleted under its worker): the worker running it stops it.
CANCEL_CHANNEL = "eventix_task_cancel"

#: Every column of ``eventix_task``, in table order: what whole-row statements return.
TASK_COLUMNS: tuple[str, ...] = tuple(c.name for c in task_table.c)
#: What a native worker needs of a claimed task (decoding the rest cost more than
#: running a no-op task), in :class:`~eventix_operator.db.rows.ClaimedTask` order.
CLAIMED_COLUMNS = (
    "uid", "task", "namespace", "status", "args", "kwargs", "attempts", "retry",
    "max_retries", "error_eta_inc", "error_eta_max", "timeout_seconds", "store_result",
    "trace_context",
)  # fmt: skip
SCHEDULE_COLUMNS: tuple[str, ...] = tuple(c.name for c in schedule_table.c)
TRIGGER_COLUMNS: tuple[str, ...] = tuple(c.name for c in trigger_table.c)

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_PSYCOPG_DIALECT = psycopg_dialect()  # type: ignore[no-untyped-call]


@functools.cache
def for_psycopg(statement: ClauseElement) -> str:
    """``statement`` as SQLAlchemy compiles it for psycopg (``%(name)s`` parameters),
    once per statement: for what runs on psycopg itself (a pipeline, a one-shot
    command)."""
    compiled: str = statement.compile(dialect=_PSYCOPG_DIALECT).string
    return compiled


def columns(names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + n for n in names)


def unnest(names: Sequence[str], **extra: str) -> str:
    """``unnest(CAST(:a AS type[]), …) AS v(a, …)``: one array parameter per name,
    typed like the task table's column of that name (``extra`` types the others)."""
    casts = []
    for name in names:
        kind = extra.get(name) or task_table.c[name].type.compile(dialect=_DIALECT)
        casts.append(f"CAST(:{name} AS {kind}[])")
    return f"unnest({', '.join(casts)}) AS v({columns(names)})"


def waking(update: str) -> TextClause:
    """``update`` (returning at least ``namespace`` and ``status``), and one
    notification on :data:`READY_CHANNEL` for each queue where it left a task
    pending: a statement that makes tasks ready again wakes their workers by
    itself, in its own transaction (the insert trigger covers new rows). Queues
    with a concurrency limit are woken too (see :func:`freeing`)."""
    return text(
        f"""
        WITH changed AS ({update}),
        woken AS (
            SELECT count(pg_notify('{READY_CHANNEL}', q.namespace)) AS queues
            FROM (SELECT namespace FROM changed WHERE status IN ('scheduled', 'retry')
                  UNION {_LIMITED_AMONG_CHANGED}) AS q
        )
        SELECT changed.* FROM changed, woken
        """
    )


def _limited_among(names: str) -> str:
    """The queues among ``names`` (SQL giving queue names) with a concurrency limit:
    a task of such a queue ending frees a start that a worker may have been refused,
    and nothing else would tell it before its next poll."""
    return f"""
    SELECT s.name AS namespace FROM eventix_queue AS s
    WHERE s.concurrency_limit IS NOT NULL AND NOT s.paused AND s.name IN ({names})
"""


#: Queues of ``changed`` (rows that left ``processing``) with a concurrency limit.
_LIMITED_AMONG_CHANGED = _limited_among("SELECT namespace FROM changed")


def freeing(update: str) -> TextClause:
    """``update`` (returning ``namespace`` after the columns its caller reads), and
    one notification on :data:`READY_CHANNEL` for each queue with a concurrency
    limit where it ended a running task (see :data:`_LIMITED_AMONG_CHANGED`)."""
    return text(
        f"""
        WITH changed AS ({update}),
        woken AS (
            SELECT count(pg_notify('{READY_CHANNEL}', q.namespace)) AS queues
            FROM ({_LIMITED_AMONG_CHANGED}) AS q
        )
        SELECT changed.* FROM changed, woken
        """
    )


def _kept_from_now(retention: str, own: str) -> str:
    """``expires`` of a task ``t`` that ends now: its queue's ``retention`` (a column
    of ``eventix_queue``) when the queue has one, else the task's ``own`` seconds;
    neither (NULL) keeps it. A primary-key probe per row."""
    return (
        "now() + make_interval(secs => COALESCE("
        f"(SELECT q.{retention} FROM eventix_queue AS q WHERE q.name = t.namespace), {own}))"
    )


#: ``expires`` of a task ``t`` that succeeds now (docs/queues.md, retention).
_SUCCEEDED_EXPIRES = _kept_from_now("retain_succeeded_seconds", "t.result_expires")
#: ``expires`` of a task ``t`` that ends failed or cancelled now: every path that ends
#: a task so (a failure, a cancel of a pending task, a running task recorded
#: cancelled, released cancelled or recovered from a lost lease) writes this one.
_FAILED_EXPIRES = _kept_from_now("retain_failed_seconds", "t.error_expires")


# -- Enqueue ------------------------------------------------------------------------

# INSERT_COLUMNS (imported above from .rows): the parameters of an enqueue.
_STORED = [c for c in INSERT_COLUMNS if c != "delay"]
_VALUES = [
    "COALESCE(v.eta, now() + make_interval(secs => COALESCE(v.delay, 0)))"
    if c == "eta"
    else "v." + c
    for c in _STORED
]
_INSERT = f"""
    INSERT INTO eventix_task AS t ({columns(_STORED)})
    SELECT {columns(_VALUES)}
    FROM {unnest(INSERT_COLUMNS, delay="float8")}
"""
#: Eventix's unique-key merge: a pending task with the same (queue, unique key)
#: takes the earliest eta, the lowest priority number and the newest args; only a
#: task of the same Kubernetes namespace, or of none (:data:`.schema.UNIQUE_KEY_SCOPE`).
#: Its trace context stays the first enqueuer's: one run cannot continue two traces.
_MERGE = f"""
    ON CONFLICT (namespace, unique_key, ({UNIQUE_KEY_SCOPE}))
        WHERE unique_key IS NOT NULL AND {PENDING_PREDICATE}
    DO UPDATE SET
        eta = LEAST(t.eta, EXCLUDED.eta),
        priority = LEAST(t.priority, EXCLUDED.priority),
        args = EXCLUDED.args,
        kwargs = EXCLUDED.kwargs,
        trace_context = COALESCE(t.trace_context, EXCLUDED.trace_context),
        status = 'scheduled',
        updated_at = now(),
        revision = t.revision + 1
"""

# -- name: insert_tasks --
# Insert a batch, merging into pending tasks by unique key; returns what resolves
# each input to its row (a merged task has the uid of the row it merged into).
INSERT_TASKS: TextClause = text(
    _INSERT + _MERGE + "RETURNING t.uid, t.namespace, t.unique_key, t.k8s_namespace"
)

# -- name: insert_task_rows --
# INSERT_TASKS returning whole rows: POST /task answers with the task in the same
# round trip.
INSERT_TASK_ROWS: TextClause = text(_INSERT + _MERGE + f"RETURNING {columns(TASK_COLUMNS, 't.')}")

# -- name: insert_tasks_once --
# Insert tasks that carry their own identity (a resource uid, a schedule tick):
# a row that exists already is left alone, so replays and racing replicas
# insert each at most once. Returns only the rows inserted.
INSERT_TASKS_ONCE: TextClause = text(_INSERT + "ON CONFLICT DO NOTHING RETURNING t.uid")

# -- name: copy_tasks --
# Bulk load of plain tasks (no unique key, no delay, no resource or tick
# identity: nothing can conflict). COPY skips parsing one array per column, the
# largest cost of a 100k-task enqueue; without an eta column the row's default,
# now() of the transaction, is what INSERT_TASKS would give.
COPY_COLUMNS = (
    "uid", "task", "namespace", "priority", "args", "kwargs", "retry", "max_retries",
    "error_eta_inc", "error_eta_max", "timeout_seconds", "store_result", "result_expires",
    "error_expires", "operator", "source", "trace_context",
)  # fmt: skip
COPY_TASKS = f"COPY eventix_task ({columns(COPY_COLUMNS)}) FROM STDIN"
COPY_TASKS_WITH_ETA = f"COPY eventix_task ({columns(COPY_COLUMNS)}, eta) FROM STDIN"

# -- Leases ------------------------------------------------------------------------


#: The queues of ``:queues`` that a claim may take tasks of, each with how many at
#: most (``n``): the one place where queue settings (migration 0011) meet the claim,
#: shared by native and HTTP workers. A queue without a settings row, or whose row
#: neither pauses nor limits it, costs one primary-key probe of ``eventix_queue``
#: and takes no lock: ``eventix_queue_allowance`` runs only when one of the queues
#: has a limit. A paused queue gets 0 without a lock. A limited queue gets what its
#: limits leave, counted by the function under the row lock of its settings row, so
#: racing claims of that queue (and only of that queue) take turns; a claim of
#: several queues skips a limited one whose row is taken (0 of it this time) rather
#: than wait on it. See the migration for why the count must be the function's own.
#: ``{ended}``: the tasks the claiming statement itself ended, whose starts it
#: retakes without the lock (migration 0014).
_CLAIMABLE_QUEUES = """
    held AS MATERIALIZED (
        SELECT name, paused FROM eventix_queue
        WHERE name = ANY(CAST(:queues AS text[]))
          AND (paused OR concurrency_limit IS NOT NULL OR rate_count IS NOT NULL)
    ), allowed AS MATERIALIZED (
        SELECT a.queue_name, a.allowance
        FROM eventix_queue_allowance(
            ARRAY(SELECT name FROM held WHERE NOT paused ORDER BY name), :limit,
            cardinality(CAST(:queues AS text[])) > 1, {ended}) AS a
        WHERE EXISTS (SELECT 1 FROM held WHERE NOT paused)
    ), claimable AS (
        SELECT q.name, CASE WHEN h.paused THEN 0 ELSE COALESCE(a.allowance, :limit) END AS n
        FROM unnest(CAST(:queues AS text[])) AS q(name)
        LEFT JOIN held AS h ON h.name = q.name
        LEFT JOIN allowed AS a ON a.queue_name = q.name
    )
"""

#: Records the starts of a claim in the rate log of each rate-limited queue it
#: claimed from (``picked`` has a ``namespace`` column). The row is locked already
#: (by the allowance), and the update works on its newest version, so the log
#: holds every start of every claim that took its turn before this one.
_RECORD_STARTS = """
    started AS (
        UPDATE eventix_queue AS s
        SET recent_starts = ARRAY(
            SELECT r.at FROM (
                SELECT unnest(s.recent_starts)
                UNION ALL SELECT now() FROM generate_series(1, p.n)
            ) AS r(at)
            ORDER BY r.at DESC
            LIMIT s.rate_count)
        FROM (SELECT namespace, count(*)::integer AS n FROM picked
              WHERE namespace IN (SELECT queue_name FROM allowed)
              GROUP BY namespace) AS p
        WHERE s.name = p.namespace AND s.rate_count IS NOT NULL
        RETURNING s.name
    )
"""


def _one_line(sql: str) -> TextClause:
    """``sql`` with its runs of white space as single spaces (it must hold no ``--``
    comment and no string literal with two spaces in a row)."""
    return text(" ".join(sql.split()))


def _claim(returning: Sequence[tuple[str, str]], completing: str | None = None) -> TextClause:
    # The one claim of native and HTTP workers: up to :limit due tasks of the
    # queues in claim order (priority, eta), locked with SKIP LOCKED so that no two
    # claims take a task, leased to :worker_ids by slot (the n-th task to the n-th
    # id, round the list: a native worker passes its one id, concurrent HTTP
    # claims one id each). One lateral index scan per queue keeps the claim on the
    # partial ready index however large other queues grow; each takes at most what
    # the queue's settings allow (_CLAIMABLE_QUEUES). The rows come back in slot
    # order (claim order) by an explicit sort: the order of an UPDATE's RETURNING
    # is the plan's, which the queue settings' joins made vary. ``returning`` is
    # (expression, name) pairs. ``completing``: an UPDATE that ends tasks (RETURNING
    # uid, namespace), run first as the CTE ``completed``; the queue settings count
    # its tasks as ended and the claim retakes the starts they freed without a lock
    # (migration 0014). Then every row leads with the uids and queues it ended, and
    # one row with no claimed task says so when nothing was claimed.
    exprs = ", ".join(f"{expr} AS {name}" for expr, name in returning)
    names = ", ".join(name for _, name in returning)
    ended, final = "CAST('{}' AS uuid[])", f"SELECT {names} FROM claimed ORDER BY claim_order"
    if completing is not None:
        ended = "ARRAY(SELECT CAST(uid AS uuid) FROM completed)"
        final = f"""
        SELECT e.uids, e.queues, {", ".join(f"c.{name}" for _, name in returning)}
        FROM (SELECT array_agg(uid) AS uids, array_agg(namespace) AS queues FROM completed) AS e
        LEFT JOIN claimed AS c ON true
        ORDER BY c.claim_order"""
    # On one line: psycopg prepares a statement (and keeps its parsing) only up to
    # 4,096 characters (MAX_CACHED_STATEMENT_LENGTH); CLAIM_TASK_ROWS and
    # COMPLETE_AND_CLAIM are longer as written, and were planned at every run.
    return _one_line(
        f"""
        WITH {"" if completing is None else f"completed AS ({completing}),"}
        {_CLAIMABLE_QUEUES.format(ended=ended)},
        picked AS (
            SELECT c.uid, c.priority, c.eta, c.namespace
            FROM claimable AS q,
            LATERAL (
                SELECT uid, priority, eta, namespace
                FROM eventix_task
                WHERE namespace = q.name AND {PENDING_PREDICATE} AND eta <= now()
                ORDER BY priority, eta
                LIMIT q.n
                FOR UPDATE SKIP LOCKED
            ) AS c
            ORDER BY c.priority, c.eta
            LIMIT :limit
        ), {_RECORD_STARTS},
        next AS (
            SELECT uid, row_number() OVER (ORDER BY priority, eta) AS slot FROM picked
        ), claimed AS (
        UPDATE eventix_task AS t
        SET status = 'processing',
            worker_id = (CAST(:worker_ids AS text[]))[
                1 + (next.slot - 1) % cardinality(CAST(:worker_ids AS text[]))],
            worker_expires = now() + make_interval(secs => :lease_seconds),
            attempts = t.attempts + 1,
            started_at = now(),
            updated_at = now(),
            revision = t.revision + 1
        FROM next
        WHERE t.uid = next.uid
        RETURNING next.slot AS claim_order, {exprs}
        )
        {final}
        """
    )


# -- name: claim_tasks --
# The claim for a native worker: only the columns it needs.
_CLAIMED = [("t.uid::text", "uid"), *((f"t.{c}", c) for c in CLAIMED_COLUMNS[1:])]
CLAIM_TASKS: TextClause = _claim(_CLAIMED)

# -- name: claim_task_rows --
# The claim for HTTP workers: whole rows, each with the slot it was leased to.
CLAIM_TASK_ROWS: TextClause = _claim(
    [("next.slot", "claim_slot"), *((f"t.{c}", c) for c in TASK_COLUMNS)]
)

# -- name: complete_tasks --
# Record successes of tasks this worker still holds; rows whose lease was lost are
# left to whoever holds them now. A queue's retention of succeeded tasks, when it
# has one, overrides the task's own result_expires (_SUCCEEDED_EXPIRES; its failed
# one, _FAILED_EXPIRES, the error_expires of every failed or cancelled end). The
# uids come as one comma-separated text and the results as one JSON array: two
# parameters psycopg sends as they are, where arrays of text cost it a
# regular-expression escape per element (4 us a task of the worker's ~40,
# bench/README.md "#14").
_COMPLETE = f"""
    UPDATE eventix_task AS t
    SET status = 'done',
        result = CASE WHEN t.store_result THEN v.result END,
        error = NULL,
        finished_at = now(),
        updated_at = now(),
        worker_id = NULL,
        worker_expires = NULL,
        expires = {_SUCCEEDED_EXPIRES},
        revision = t.revision + 1
    FROM unnest(
        CAST(string_to_array(:uids, ',') AS uuid[]),
        ARRAY(SELECT r.value FROM jsonb_array_elements(CAST(:results AS jsonb))
              WITH ORDINALITY AS r(value, n) ORDER BY r.n)
    ) AS v(uid, result)
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid::text AS uid, t.namespace
    """
COMPLETE_TASKS: TextClause = freeing(_COMPLETE)

# -- name: complete_and_claim --
# COMPLETE_TASKS (waking nobody) and CLAIM_TASKS in one statement, for the
# write-back of a worker held back by a queue's limit (LeaseStore.record_and_claim):
# one round trip, and the starts its successes freed are retaken without the
# queue's lock (migration 0014); those it leaves are announced after by
# NOTIFY_FREED. Each row: the uids and queues of the tasks it recorded, then a
# claimed task's columns (NULL in the one row when nothing was claimed).
COMPLETE_AND_CLAIM: TextClause = _claim(_CLAIMED, completing=_COMPLETE)

# -- name: notify_freed --
# Wake the workers of those of :queues that have a concurrency limit (see freeing).
NOTIFY_FREED: TextClause = text(
    f"""
    SELECT count(pg_notify('{READY_CHANNEL}', q.namespace))
    FROM ({_limited_among("SELECT unnest(CAST(:queues AS text[]))")}) AS q
    """
)

# -- name: fail_tasks --
# Record failures: a row with a retry delay goes back to `retry` at now() + delay,
# one without becomes `error` for good.
FAIL_TASKS: TextClause = waking(
    f"""
    UPDATE eventix_task AS t
    SET status = CASE WHEN v.retry_in IS NULL THEN 'error' ELSE 'retry' END,
        eta = CASE WHEN v.retry_in IS NULL THEN t.eta
                   ELSE now() + make_interval(secs => v.retry_in) END,
        error = v.error,
        finished_at = CASE WHEN v.retry_in IS NULL THEN now() END,
        updated_at = now(),
        worker_id = NULL,
        worker_expires = NULL,
        expires = CASE WHEN v.retry_in IS NULL THEN {_FAILED_EXPIRES} END,
        revision = t.revision + 1
    FROM {unnest(("uid", "error", "retry_in"), retry_in="float8")}
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid::text AS uid, t.namespace, t.status
    """
)

# -- name: release_tasks --
# Give back tasks this worker claimed but will not finish (shutdown). Tasks that
# never started do not count the attempt. A task cancelled meanwhile ends
# `cancelled` instead: it is never run again.
RELEASE_TASKS: TextClause = waking(
    f"""
    UPDATE eventix_task AS t
    SET status = CASE WHEN t.cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
        error = CASE WHEN t.cancel_requested_at IS NULL THEN t.error
                     ELSE jsonb_build_object('type', 'Cancelled', 'message',
                          'cancelled by ' || COALESCE(t.cancelled_by, 'unknown')) END,
        finished_at = CASE WHEN t.cancel_requested_at IS NULL THEN t.finished_at ELSE now() END,
        expires = CASE WHEN t.cancel_requested_at IS NULL THEN t.expires
                       ELSE {_FAILED_EXPIRES} END,
        worker_id = NULL,
        worker_expires = NULL,
        attempts = CASE WHEN v.started THEN t.attempts ELSE t.attempts - 1 END,
        updated_at = now(),
        revision = t.revision + 1
    FROM {unnest(("uid", "started"), started="boolean")}
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid::text AS uid, t.namespace, t.status
    """
)

# -- name: heartbeat --
# Renew the leases of every task this worker holds; returns how many, and the uids
# of those whose cancel was asked for (what a worker that cannot LISTEN learns of
# cancels by).
HEARTBEAT: TextClause = text(
    """
    WITH renewed AS (
        UPDATE eventix_task
        SET worker_expires = now() + make_interval(secs => :lease_seconds)
        WHERE worker_id = :worker_id AND status = 'processing'
        RETURNING uid, cancel_requested_at
    )
    SELECT count(*) AS renewed,
           COALESCE(array_agg(uid::text) FILTER (WHERE cancel_requested_at IS NOT NULL),
                    '{}') AS cancelled
    FROM renewed
    """
)

# -- name: running_cancels --
# Of the tasks a worker runs (:uids), those it must stop: their cancel was asked
# for, or the row is no longer this worker's to finish (deleted with its resource,
# or its lease passed on). A read on the primary key, between heartbeats, by a
# worker that cannot LISTEN.
RUNNING_CANCELS: TextClause = text(
    """
    SELECT u.uid FROM unnest(CAST(:uids AS text[])) AS u(uid)
    WHERE NOT EXISTS (
        SELECT 1 FROM eventix_task AS t
        WHERE t.uid = CAST(u.uid AS uuid) AND t.worker_id = :worker_id
          AND t.status = 'processing' AND t.cancel_requested_at IS NULL
    )
    """
)

# -- name: record_cancelled --
# Record tasks this worker stopped (or gave up waiting for) after their cancel:
# `cancelled` for good, never retried, the error saying who cancelled it; only rows
# this worker still holds. A task of a queue with a concurrency limit frees its
# slot, and wakes the queue's workers as a success or a failure does (freeing).
RECORD_CANCELLED: TextClause = freeing(
    f"""
    UPDATE eventix_task AS t
    SET status = 'cancelled',
        error = jsonb_build_object(
            'type', 'Cancelled',
            'message', 'cancelled by ' || COALESCE(t.cancelled_by, 'unknown') || v.note,
            'attempt', t.attempts),
        finished_at = now(),
        updated_at = now(),
        worker_id = NULL,
        worker_expires = NULL,
        expires = {_FAILED_EXPIRES},
        revision = t.revision + 1
    FROM {unnest(("uid", "note"), note="text")}
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid::text AS uid, t.namespace
    """
)

# -- name: lock_expired_leases --
# Tasks of workers that stopped heartbeating, locked for recovery; what happens
# to each is the retry policy's decision (run again, or WorkerLost).
LOCK_EXPIRED_LEASES: TextClause = text(
    """
    SELECT uid::text, worker_id, retry, max_retries, attempts, error_eta_inc, error_eta_max,
           cancelled_by
    FROM eventix_task
    WHERE status = 'processing' AND worker_expires < now()
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

# -- name: recover_leases --
# Put recovered tasks back in the queue, due now, or end them with their error
# (kept as a failure is: the queue's failed retention, else the task's own).
RECOVER_LEASES: TextClause = waking(
    f"""
    UPDATE eventix_task AS t
    SET status = v.status,
        error = COALESCE(v.error, t.error),
        finished_at = CASE WHEN v.status IN ('error', 'cancelled') THEN now() END,
        expires = CASE WHEN v.status IN ('error', 'cancelled') THEN {_FAILED_EXPIRES} END,
        eta = now(),
        worker_id = NULL,
        worker_expires = NULL,
        updated_at = now(),
        revision = t.revision + 1
    FROM {unnest(("uid", "status", "error"))}
    WHERE t.uid = v.uid AND t.status = 'processing' AND t.worker_expires < now()
    RETURNING t.uid::text AS uid, t.namespace, t.status
    """
)

# -- name: due_queues --
# Which of :queues hold a task that is due now: what a process that cannot LISTEN
# asks between claims. One read of the partial ready index per queue (the claim's
# own index scan, without locking, updating or planning a CTE), stopping at the
# first due task. A paused queue has nothing due.
_DUE_QUEUES = f"""
    SELECT q.name FROM unnest(CAST(:queues AS text[])) AS q(name)
    WHERE EXISTS (
        SELECT 1 FROM eventix_task
        WHERE namespace = q.name AND {PENDING_PREDICATE} AND eta <= now()
    ) AND NOT EXISTS (SELECT 1 FROM eventix_queue AS s WHERE s.name = q.name AND s.paused)
"""
DUE_QUEUES: TextClause = text(_DUE_QUEUES)

# -- name: due_queues_and_rate_window --
# DUE_QUEUES, and for a worker a limit held back: in how many seconds the first of
# those queues whose rate window is full lets a start in again (NULL: none is), the
# oldest start of its log (newest first, ``rate_count`` long) leaving the window.
# That window frees with no notification; the worker claims again right then.
DUE_QUEUES_AND_RATE_WINDOW: TextClause = text(
    f"""
    WITH due AS ({_DUE_QUEUES}),
    oldest AS (
        SELECT s.recent_starts[cardinality(s.recent_starts)] AS at, s.rate_per_seconds
        FROM eventix_queue AS s
        WHERE s.name IN (SELECT name FROM due) AND s.rate_count IS NOT NULL
          AND cardinality(s.recent_starts) >= s.rate_count
    )
    SELECT ARRAY(SELECT name FROM due) AS due,
           (SELECT min(extract(epoch FROM o.at - now()) + o.rate_per_seconds) FROM oldest AS o
            WHERE o.at > now() - make_interval(secs => o.rate_per_seconds)) AS frees_in
    """
)

# -- name: purge_expired --
# Remove finished tasks whose result or error has expired, a bounded batch at a time.
PURGE_EXPIRED: TextClause = text(
    """
    DELETE FROM eventix_task
    WHERE uid IN (
        SELECT uid FROM eventix_task
        WHERE expires < now() AND status IN ('done', 'error', 'cancelled')
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    """
)

# -- Write-back by revision (Eventix's HTTP workers) --------------------------------

#: What a write-back replaces, in the order of the parallel arrays. Eventix counts
#: retries down (``remaining_retries``); ``error_eta_inc`` stays the row's own.
REPLACE_COLUMNS = (
    "uid", "revision", "task", "namespace", "status", "priority", "eta", "args", "kwargs",
    "unique_key", "worker_id", "worker_expires", "retry", "remaining_retries",
    "error_eta_max", "store_result", "result", "error", "result_expires", "error_expires",
    "expires", "operator",
)  # fmt: skip

# -- name: replace_tasks --
# Eventix's write-back (PUT /task/{uid}), for a batch of tasks: replace each
# document while its revision is still the one its writer read; a row whose
# revision moved on is not returned. The row keeps the total of retries and
# counts attempts up, so the remaining count is turned back into a total with the
# failed runs so far. NULL args or kwargs keep the row's (a write-back whose own
# could not be stored). A batch must not name a uid twice.
REPLACE_TASKS: TextClause = waking(
    f"""
    UPDATE eventix_task AS t
    SET task = v.task, namespace = v.namespace, status = v.status, priority = v.priority,
        eta = v.eta, args = COALESCE(v.args, t.args), kwargs = COALESCE(v.kwargs, t.kwargs),
        unique_key = v.unique_key, worker_id = v.worker_id,
        worker_expires = v.worker_expires, retry = v.retry,
        max_retries = v.remaining_retries + {failures_so_far_sql("v.status", "t.attempts")},
        error_eta_max = v.error_eta_max, store_result = v.store_result,
        result = v.result, error = v.error, result_expires = v.result_expires,
        error_expires = v.error_expires, expires = v.expires, operator = v.operator,
        finished_at = CASE WHEN v.status IN ('done', 'error') THEN now() END,
        updated_at = now(),
        revision = t.revision + 1
    FROM {unnest(REPLACE_COLUMNS, remaining_retries="integer")}
    WHERE t.uid = v.uid AND t.revision = v.revision
    RETURNING {columns(TASK_COLUMNS, "t.")}
    """
)

# -- name: insert_task_row --
# Eventix creates the document a PUT names when it does not exist (a restore, or a
# write-back of a task deleted meanwhile): insert it as given, status and all.
INSERT_TASK_ROW: TextClause = text(
    f"""
    INSERT INTO eventix_task (
        uid, task, namespace, status, priority, eta, scheduled, args, kwargs, unique_key,
        worker_id, worker_expires, retry, max_retries, error_eta_inc, error_eta_max,
        store_result, result, error, result_expires, error_expires, expires, operator,
        source, finished_at
    ) VALUES (
        :uid, :task, :namespace, :status, :priority, :eta, COALESCE(:scheduled, now()),
        COALESCE(CAST(:args AS jsonb), '[]'), COALESCE(CAST(:kwargs AS jsonb), '{{}}'),
        :unique_key, :worker_id, :worker_expires, :retry, :remaining_retries,
        :error_eta_inc, :error_eta_max, :store_result, CAST(:result AS jsonb),
        CAST(:error AS jsonb), :result_expires, :error_expires, :expires, :operator, 'api',
        CASE WHEN :status IN ('done', 'error') THEN now() END
    )
    RETURNING {columns(TASK_COLUMNS)}
    """
)

# -- name: task_revision --
# The revision a write-back lost against (None: the task is gone).
TASK_REVISION: TextClause = text("SELECT revision FROM eventix_task WHERE uid = :uid")

# -- Administration -----------------------------------------------------------------

# -- name: get_task --
GET_TASK: TextClause = text(f"SELECT {columns(TASK_COLUMNS)} FROM eventix_task WHERE uid = :uid")

# -- name: requeue_task --
# Run a task again, at :eta or now: one that finished (done, error, cancelled)
# or waits for a retry. Its attempts start afresh, as if it were new; what its
# last run left (result, error, lease, expiry) is cleared.
REQUEUE_TASK: TextClause = waking(
    f"""
    UPDATE eventix_task
    SET status = 'scheduled', eta = COALESCE(CAST(:eta AS timestamptz), now()), attempts = 0,
        result = NULL, error = NULL, worker_id = NULL, worker_expires = NULL, expires = NULL,
        finished_at = NULL, cancel_requested_at = NULL, cancelled_by = NULL,
        updated_at = now(), revision = revision + 1
    WHERE uid = :uid AND status IN ('done', 'error', 'cancelled', 'retry')
    RETURNING {columns(TASK_COLUMNS)}
    """
)


def _cancelling(where: str, returning: str) -> TextClause:
    """Cancel the rows ``where`` selects, by :by: a pending one ends `cancelled` at
    once; a running one is marked (``cancel_requested_at``, ``cancelled_by``: its
    worker stops it and records the end) and its uid is notified on
    :data:`CANCEL_CHANNEL`. One UPDATE decides on the row as it is when locked, so a
    claim in between turns a pending cancel into a running one, not into nothing.
    A running row keeps its revision: an Eventix HTTP worker cannot be stopped, and
    its write-back still lands."""
    running = "t.status = 'processing'"
    return text(
        f"""
        WITH changed AS (
            UPDATE eventix_task AS t
            SET status = CASE WHEN {running} THEN t.status ELSE 'cancelled' END,
                finished_at = CASE WHEN {running} THEN t.finished_at ELSE now() END,
                expires = CASE WHEN {running} THEN t.expires ELSE {_FAILED_EXPIRES} END,
                error = CASE WHEN {running} THEN t.error
                             ELSE jsonb_build_object('type', 'Cancelled',
                                                     'message', 'cancelled by ' || :by) END,
                cancel_requested_at = COALESCE(t.cancel_requested_at, now()),
                cancelled_by = COALESCE(t.cancelled_by, :by),
                updated_at = now(),
                revision = CASE WHEN {running} THEN t.revision ELSE t.revision + 1 END
            WHERE {where} AND t.status IN ('scheduled', 'retry', 'processing')
            RETURNING {returning}
        ), told AS (
            SELECT count(pg_notify('{CANCEL_CHANNEL}', changed.uid::text)) AS n
            FROM changed WHERE changed.status = 'processing'
        )
        SELECT changed.* FROM changed, told
        """
    )


# -- name: cancel_running_task --
# Cancel one task by :by, pending or running (see _cancelling); the whole row.
CANCEL_RUNNING_TASK: TextClause = _cancelling("t.uid = :uid", columns(TASK_COLUMNS, "t."))

# -- name: delete_task --
DELETE_TASK: TextClause = text("DELETE FROM eventix_task WHERE uid = :uid RETURNING uid")

# -- name: tasks_by_unique_key --
# Tasks with a unique key (in one queue, or in all when :namespace is NULL) whose
# status is one of :stati, newest first.
TASKS_BY_UNIQUE_KEY: TextClause = text(
    f"""
    SELECT {columns(TASK_COLUMNS)} FROM eventix_task
    WHERE unique_key = :unique_key
      AND (CAST(:namespace AS text) IS NULL OR namespace = :namespace)
      AND status = ANY(CAST(:stati AS text[]))
    ORDER BY created_at DESC, uid
    LIMIT :limit
    """
)

#: Columns a listing may sort or filter on, by their Eventix names (the CLI uses
#: the same names).
LISTING_COLUMNS: Mapping[str, str] = {
    "uid": "uid",
    "_id": "uid",
    "task": "task",
    "namespace": "namespace",
    "status": "status",
    "priority": "priority",
    "eta": "eta",
    "scheduled": "scheduled",
    "unique_key": "unique_key",
    "worker_id": "worker_id",
    "worker_expires": "worker_expires",
    "expires": "expires",
    "operator": "operator",
    "created_time": "created_at",
    "updated_time": "updated_at",
}

#: Eventix's ``status_id`` sort key: pending and running work before finished work.
STATUS_ORDER = ("scheduled", "processing", "retry", "error", "done", "cancelled")


def _listing_filter(
    equals: Mapping[str, Any], within: Mapping[str, Sequence[Any]]
) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    for name, value in equals.items():
        column = task_table.c[LISTING_COLUMNS[name]]
        clauses.append(column.is_(None) if value is None else column == value)
    for name, values in within.items():
        clauses.append(task_table.c[LISTING_COLUMNS[name]].in_(list(values)))
    return clauses


# -- name: tasks_page --
# One page of tasks matching equality and membership filters on whitelisted
# columns, in the requested order (``status_id`` is Eventix's status rank), uid
# last. Built from SQLAlchemy Core expressions over the whitelist, never from
# the caller's strings.
def tasks_page(
    *,
    equals: Mapping[str, Any],
    within: Mapping[str, Sequence[Any]],
    order: Sequence[tuple[str, bool]],
    skip: int,
    limit: int,
) -> Select[Any]:
    """``order`` holds (Eventix column name or ``status_id``, descending) pairs."""
    keys: list[ColumnElement[Any]] = []
    for name, descending in order:
        if name == "status_id":
            column: ColumnElement[Any] = case(
                {s: i for i, s in enumerate(STATUS_ORDER)}, value=task_table.c.status
            )
        else:
            column = task_table.c[LISTING_COLUMNS[name]]
        keys.append(column.desc() if descending else column.asc())
    keys.append(task_table.c.uid.asc())
    return (
        select(*task_table.c)
        .where(*_listing_filter(equals, within))
        .order_by(*keys)
        .offset(skip)
        .limit(limit)
    )


# -- name: tasks_count --
# How many tasks the same filters match (Eventix's ``max_results``).
def tasks_count(*, equals: Mapping[str, Any], within: Mapping[str, Sequence[Any]]) -> Select[Any]:
    return select(func.count()).select_from(task_table).where(*_listing_filter(equals, within))


# -- name: queue_stats --
# Counts per queue and status, and the age of the oldest due task per queue.
QUEUE_STATS: TextClause = text(
    f"""
    SELECT namespace, status, count(*) AS count,
           max(CASE WHEN {PENDING_PREDICATE} AND eta <= now()
                    THEN extract(epoch FROM now() - eta) END) AS oldest_due_seconds,
           count(*) FILTER (WHERE {PENDING_PREDICATE} AND eta <= now()) AS due
    FROM eventix_task
    GROUP BY namespace, status
    ORDER BY namespace, status
    """
)


# -- name: namespaces --
# Every queue name, by loose index scans (one index probe per queue, however many
# rows) of the two partial indexes that lead with the queue, the listing index of
# finished rows and the ready index of pending ones, and the few running rows.
def _loose_scan(name: str, predicate: str) -> str:
    return f"""{name}(name) AS (
        (SELECT namespace FROM eventix_task WHERE {predicate} ORDER BY namespace LIMIT 1)
        UNION ALL
        SELECT (SELECT t.namespace FROM eventix_task AS t
                WHERE t.{predicate} AND t.namespace > {name}.name
                ORDER BY t.namespace LIMIT 1)
        FROM {name} WHERE {name}.name IS NOT NULL
    )"""


NAMESPACES: TextClause = text(
    f"""
    WITH RECURSIVE {_loose_scan("finished", FINISHED_PREDICATE)},
    {_loose_scan("pending", PENDING_PREDICATE)}
    SELECT name FROM finished WHERE name IS NOT NULL
    UNION SELECT name FROM pending WHERE name IS NOT NULL
    UNION SELECT namespace FROM eventix_task WHERE status = 'processing'
    ORDER BY name
    """
)

# -- name: task_types --
# Task names seen in one queue.
TASK_TYPES: TextClause = text(
    "SELECT DISTINCT task FROM eventix_task WHERE namespace = :namespace ORDER BY task"
)

# -- name: status_counts --
# Tasks per status, over all queues (Eventix's /metrics).
STATUS_COUNTS: TextClause = text(
    "SELECT status, count(*) AS count FROM eventix_task GROUP BY status"
)

# -- name: active_workers --
# Workers holding a live lease right now.
ACTIVE_WORKERS: TextClause = text(
    """
    SELECT count(DISTINCT worker_id) FROM eventix_task
    WHERE status = 'processing' AND worker_expires > now()
    """
)

# -- Resource-backed tasks (the operator) ------------------------------------------

# -- name: update_pending_resource_task --
# The mutable fields of an EventixTask (priority, eta) reach its row while it has
# not started; a delay counts from the row's creation, as it did at enqueue.
UPDATE_PENDING_RESOURCE_TASK: TextClause = text(
    f"""
    UPDATE eventix_task
    SET priority = :priority,
        eta = COALESCE(:eta, created_at + make_interval(secs => :delay), eta),
        updated_at = now(), revision = revision + 1
    WHERE k8s_uid = :k8s_uid AND source = 'k8s' AND status = 'scheduled' AND attempts = 0
    RETURNING {columns(TASK_COLUMNS)}
    """
)

# -- name: get_resource_task --
GET_RESOURCE_TASK: TextClause = text(
    f"SELECT {columns(TASK_COLUMNS)} FROM eventix_task WHERE k8s_uid = :k8s_uid AND source = 'k8s'"
)

# -- name: delete_resource_task --
DELETE_RESOURCE_TASK: TextClause = text(
    "DELETE FROM eventix_task WHERE k8s_uid = :k8s_uid AND source = 'k8s' RETURNING uid, status"
)

# -- name: delete_resource_task_stopping --
# Remove a deleted resource's row, and tell the worker that runs it (if one does)
# on :data:`CANCEL_CHANNEL` to stop: its result would go nowhere.
DELETE_RESOURCE_TASK_STOPPING: TextClause = text(
    f"""
    WITH gone AS (
        DELETE FROM eventix_task WHERE k8s_uid = :k8s_uid AND source = 'k8s'
        RETURNING uid, status
    ), told AS (
        SELECT count(pg_notify('{CANCEL_CHANNEL}', gone.uid::text)) AS n
        FROM gone WHERE gone.status = 'processing'
    )
    SELECT gone.uid, gone.status FROM gone, told
    """
)

# -- name: changed_resource_tasks --
# Resource-backed tasks changed since a moment, for status sync.
CHANGED_RESOURCE_TASKS: TextClause = text(
    f"""
    SELECT {columns(TASK_COLUMNS)} FROM eventix_task
    WHERE k8s_uid IS NOT NULL AND updated_at >= :since
    ORDER BY updated_at
    LIMIT :limit
    """
)

# -- name: database_now --
# The database's clock: cursors over updated_at must not mix in the client's.
DATABASE_NOW: TextClause = text("SELECT now()")

# -- Schedules ------------------------------------------------------------------------

# -- name: upsert_schedule --
# Create or update a schedule from its resource; the firing state (last_tick) is kept.
_SCHEDULE_SET = [c for c in SCHEDULE_COLUMNS if c not in ("updated_at", "last_tick")]
_SCHEDULE_VALUES = [
    ":" + c if c != "template" else "CAST(:template AS jsonb)" for c in _SCHEDULE_SET
]
_SCHEDULE_IDENTITY = ("uid", "k8s_namespace", "k8s_name", "created_at")
_SCHEDULE_UPDATES = [f"{c} = EXCLUDED.{c}" for c in _SCHEDULE_SET if c not in _SCHEDULE_IDENTITY]
UPSERT_SCHEDULE: TextClause = text(
    f"""
    INSERT INTO eventix_schedule ({columns(_SCHEDULE_SET)})
    VALUES ({columns(_SCHEDULE_VALUES)})
    ON CONFLICT (uid) DO UPDATE SET {columns(_SCHEDULE_UPDATES)}, updated_at = now()
    RETURNING {columns(SCHEDULE_COLUMNS)}
    """
)

# -- name: get_schedule --
GET_SCHEDULE: TextClause = text(
    f"SELECT {columns(SCHEDULE_COLUMNS)} FROM eventix_schedule WHERE uid = :uid"
)

# -- name: get_schedule_by_name --
GET_SCHEDULE_BY_NAME: TextClause = text(
    f"""
    SELECT {columns(SCHEDULE_COLUMNS)} FROM eventix_schedule
    WHERE k8s_name = :name AND (CAST(:namespace AS text) IS NULL OR k8s_namespace = :namespace)
    """
)

# -- name: lock_due_schedules --
# Schedules with a tick due, locked so that one scheduler fires each (others skip it).
LOCK_DUE_SCHEDULES: TextClause = text(
    f"""
    SELECT {columns(SCHEDULE_COLUMNS)} FROM eventix_schedule
    WHERE NOT suspend AND error IS NULL AND next_tick <= :now
    ORDER BY next_tick
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

# -- name: next_schedule_wake --
NEXT_SCHEDULE_WAKE: TextClause = text(
    "SELECT min(next_tick) FROM eventix_schedule WHERE NOT suspend AND error IS NULL"
)

# -- name: advance_schedule --
ADVANCE_SCHEDULE: TextClause = text(
    """
    UPDATE eventix_schedule
    SET last_tick = GREATEST(last_tick, :last_tick), next_tick = :next_tick, updated_at = now()
    WHERE uid = :uid
    """
)

# -- name: stop_schedule --
# A schedule whose tick cannot be enqueued stops, with the reason; it is not due again.
STOP_SCHEDULE: TextClause = text(
    """
    UPDATE eventix_schedule
    SET error = :error, error_reason = NULL, next_tick = NULL, updated_at = now()
    WHERE uid = :uid
    """
)

# -- name: active_runs --
# Runs of a schedule that have not finished, oldest tick first.
ACTIVE_RUNS: TextClause = text(
    """
    SELECT uid, status FROM eventix_task
    WHERE schedule_uid = :schedule_uid AND status IN ('scheduled', 'retry', 'processing')
    ORDER BY schedule_time
    """
)

# -- name: cancel_pending_runs --
# Replace policy: runs that have not started give way to the new tick.
CANCEL_PENDING_RUNS: TextClause = text(
    f"""
    UPDATE eventix_task
    SET status = 'cancelled', finished_at = now(), updated_at = now(), revision = revision + 1,
        error = jsonb_build_object('type', 'Replaced',
                                   'message', 'replaced by the run of ' || :tick)
    WHERE schedule_uid = :schedule_uid AND {PENDING_PREDICATE}
    RETURNING uid
    """
)

# -- name: trim_run_history --
# Keep the newest N successful and M failed or cancelled runs of a schedule.
TRIM_RUN_HISTORY: TextClause = text(
    """
    DELETE FROM eventix_task WHERE uid IN (
        SELECT uid FROM (
            SELECT uid, status = 'done' AS ok,
                   row_number() OVER (PARTITION BY status = 'done'
                                      ORDER BY schedule_time DESC) AS n
            FROM eventix_task
            WHERE schedule_uid = :schedule_uid AND status IN ('done', 'error', 'cancelled')
        ) AS runs
        WHERE (ok AND n > :keep_ok) OR (NOT ok AND n > :keep_failed)
    )
    """
)

# -- name: delete_schedule --
# The schedule and every run it created, whatever their state: no orphans.
DELETE_SCHEDULE_RUNS: TextClause = text("DELETE FROM eventix_task WHERE schedule_uid = :uid")
DELETE_SCHEDULE: TextClause = text("DELETE FROM eventix_schedule WHERE uid = :uid")

# -- name: notify_schedules --
NOTIFY_SCHEDULES: TextClause = text(f"SELECT pg_notify('{SCHEDULE_CHANNEL}', :uid)")

# -- name: schedule_runs --
# Recent runs of schedules, newest first, for their resources' status.
SCHEDULE_RUNS: TextClause = text(
    """
    SELECT schedule_uid, uid, status, attempts, schedule_time, finished_at
    FROM (
        SELECT *, row_number() OVER (PARTITION BY schedule_uid
                                     ORDER BY schedule_time DESC) AS n
        FROM eventix_task WHERE schedule_uid = ANY(CAST(:uids AS text[]))
    ) AS runs
    WHERE n <= :limit
    ORDER BY schedule_uid, schedule_time DESC
    """
)

# -- name: schedule_outcomes --
# Last success and failure time of each schedule.
SCHEDULE_OUTCOMES: TextClause = text(
    """
    SELECT schedule_uid,
           max(finished_at) FILTER (WHERE status = 'done') AS last_success,
           max(finished_at) FILTER (WHERE status = 'error') AS last_failure
    FROM eventix_task WHERE schedule_uid = ANY(CAST(:uids AS text[]))
    GROUP BY schedule_uid
    """
)

# -- name: changed_schedules --
# Schedules whose own row or whose runs changed since a moment.
CHANGED_SCHEDULES: TextClause = text(
    f"""
    SELECT {columns(SCHEDULE_COLUMNS, "s.")} FROM eventix_schedule s
    WHERE s.updated_at >= :since
       OR EXISTS (SELECT 1 FROM eventix_task t
                  WHERE t.schedule_uid = s.uid AND t.updated_at >= :since)
    """
)

# -- Triggers ------------------------------------------------------------------------

# -- name: upsert_trigger --
# Create or update a trigger from its resource; its counters are kept, and its last
# error is forgotten when a new generation of the spec arrives.
UPSERT_TRIGGER: TextClause = text(
    f"""
    INSERT INTO eventix_trigger AS tr (
        uid, name, k8s_namespace, k8s_name, generation, event_name, filter, template,
        queue_scope
    ) VALUES (
        :uid, :name, :k8s_namespace, :k8s_name, :generation, :event_name,
        CAST(:filter AS jsonb), CAST(:template AS jsonb), CAST(:queue_scope AS text[])
    )
    ON CONFLICT (uid) DO UPDATE SET
        name = EXCLUDED.name,
        k8s_namespace = EXCLUDED.k8s_namespace,
        k8s_name = EXCLUDED.k8s_name,
        generation = EXCLUDED.generation,
        event_name = EXCLUDED.event_name,
        filter = EXCLUDED.filter,
        template = EXCLUDED.template,
        queue_scope = EXCLUDED.queue_scope,
        last_error = CASE WHEN tr.generation = EXCLUDED.generation THEN tr.last_error END,
        last_error_at = CASE WHEN tr.generation = EXCLUDED.generation
                             THEN tr.last_error_at END,
        updated_at = now()
    RETURNING {columns(TRIGGER_COLUMNS)}
    """
)

# -- name: get_trigger --
GET_TRIGGER: TextClause = text(
    f"SELECT {columns(TRIGGER_COLUMNS)} FROM eventix_trigger WHERE uid = :uid"
)

# -- name: delete_trigger --
DELETE_TRIGGER: TextClause = text("DELETE FROM eventix_trigger WHERE uid = :uid RETURNING uid")

# -- name: triggers_for_events --
# Every trigger of each event's name that may see the event's queue (Eventix's
# namespace: its scope holds a LIKE pattern that matches it, or it has no scope;
# concurrent POST /event share the statement), with the event's slot and whether its
# payload passes the trigger's filter (JSONB containment: each key of the filter must
# hold the same value). A trigger outside the scope is not asked, nor counted.
TRIGGERS_FOR_EVENTS: TextClause = text(
    f"""
    SELECT e.slot AS event_slot, {columns(TRIGGER_COLUMNS, "tr.")},
           (tr.filter IS NULL OR e.payload @> tr.filter) AS matches
    FROM unnest(CAST(:event_name AS text[]), CAST(:payload AS jsonb[]),
                CAST(:queue AS text[]))
        WITH ORDINALITY AS e(event_name, payload, queue, slot)
    JOIN eventix_trigger AS tr
      ON tr.event_name = e.event_name
     AND (tr.queue_scope IS NULL OR e.queue LIKE ANY (tr.queue_scope))
    ORDER BY e.slot, tr.name, tr.uid
    """
)

# -- name: record_trigger_outcomes --
# Add up what triggers did (fired, ignored, failed) and keep the newest error;
# one statement for a batch of triggers. updated_at moves, so the operator's
# status sync (changed_resource_triggers) sees the new counts.
RECORD_TRIGGER_OUTCOMES: TextClause = text(
    """
    UPDATE eventix_trigger AS tr
    SET fired_count = tr.fired_count + v.fired,
        ignored_count = tr.ignored_count + v.ignored,
        failed_count = tr.failed_count + v.failed,
        last_fired_at = CASE WHEN v.fired > 0 THEN now() ELSE tr.last_fired_at END,
        last_error = COALESCE(v.error, tr.last_error),
        last_error_at = CASE WHEN v.error IS NOT NULL THEN now() ELSE tr.last_error_at END,
        updated_at = now()
    FROM unnest(
        CAST(:uid AS text[]), CAST(:fired AS int[]), CAST(:ignored AS int[]),
        CAST(:failed AS int[]), CAST(:error AS text[])
    ) AS v(uid, fired, ignored, failed, error)
    WHERE tr.uid = v.uid
    """
)

# -- name: changed_resource_triggers --
# Triggers made from resources whose row changed (spec or counters) since a moment:
# what the operator's status sync writes back into their status.
CHANGED_RESOURCE_TRIGGERS: TextClause = text(
    f"""
    SELECT {columns(TRIGGER_COLUMNS)} FROM eventix_trigger
    WHERE k8s_name IS NOT NULL AND updated_at >= :since
    ORDER BY updated_at
    """
)

# -- Pools and metrics ----------------------------------------------------------------

# -- name: queue_load --
# What worker pools scale on, per queue: due tasks (counted up to :cap, more than
# any pool can use, so a deep backlog costs no more than a full pool), running
# tasks, the distinct workers holding their leases, and, when nothing is due, the
# seconds until the next pending task falls due. Each part reads a partial index.
# A paused queue is no demand (nothing due, nothing to wake for); a queue with a
# concurrency limit asks for no more than the limit leaves to start.
QUEUE_LOAD: TextClause = text(
    f"""
    SELECT q.name AS queue,
           CASE WHEN s.concurrency_limit IS NULL THEN d.due
                ELSE LEAST(d.due, GREATEST(s.concurrency_limit - r.running, 0)) END AS due,
           r.running,
           r.holders,
           CASE WHEN d.due = 0 AND NOT COALESCE(s.paused, false) THEN (
               SELECT extract(epoch FROM min(t.eta) - now())
               FROM eventix_task t
               WHERE t.namespace = q.name AND {PENDING_PREDICATE} AND t.eta > now()
           ) END AS next_due_in
    FROM unnest(CAST(:queues AS text[])) AS q(name)
    LEFT JOIN eventix_queue AS s ON s.name = q.name
    CROSS JOIN LATERAL (
        SELECT count(*) AS due FROM (
            SELECT 1 FROM eventix_task t
            WHERE t.namespace = q.name AND {PENDING_PREDICATE} AND t.eta <= now()
              AND NOT COALESCE(s.paused, false)
            LIMIT :cap
        ) AS capped
    ) AS d
    CROSS JOIN LATERAL (
        SELECT count(*) AS running,
               array_remove(array_agg(DISTINCT t.worker_id), NULL) AS holders
        FROM eventix_task t
        WHERE t.namespace = q.name AND t.status = 'processing'
    ) AS r
    """
)

# -- name: queue_metrics --
# Pending, due and running tasks per queue and the age of the oldest due task,
# for the operator's /metrics (pending and processing rows only).
QUEUE_METRICS: TextClause = text(
    f"""
    SELECT namespace AS queue,
           count(*) FILTER (WHERE {PENDING_PREDICATE} AND eta <= now()) AS due,
           count(*) FILTER (WHERE {PENDING_PREDICATE}) AS pending,
           count(*) FILTER (WHERE status = 'processing') AS running,
           extract(epoch FROM now() - min(eta) FILTER (
               WHERE {PENDING_PREDICATE} AND eta <= now())) AS oldest_due_seconds
    FROM eventix_task
    WHERE status IN ('scheduled', 'retry', 'processing')
    GROUP BY namespace
    """
)

# -- name: finished_counts --
# Finished rows still kept per queue and status (done, error), for /metrics: they
# fall as results expire, so they are gauges, not counters.
FINISHED_COUNTS: TextClause = text(
    """
    SELECT namespace AS queue, status, count(*) AS count
    FROM eventix_task
    WHERE status IN ('done', 'error')
    GROUP BY namespace, status
    """
)

# -- Dashboard ---------------------------------------------------------------------------
# What the web dashboard reads and does. Every read is bounded by an index range,
# a cap or a small table: no statement here counts or sorts the whole task table.

#: A task as the dashboard's list shows it: no payloads, results or tracebacks
#: (a page of fifty must not read fifty megabytes of results), in
#: :class:`~eventix_operator.db.dashboard.TaskSummary` order.
SUMMARY_COLUMNS = (
    "uid", "task", "namespace", "status", "priority", "eta", "created_at", "updated_at",
    "attempts", "max_retries", "source", "unique_key", "worker_id", "worker_expires",
    "started_at", "finished_at", "k8s_namespace", "k8s_name", "schedule_uid",
)  # fmt: skip
_SUMMARY = (
    columns(SUMMARY_COLUMNS, "t.").replace("t.uid", "t.uid::text", 1)
    + ", t.error->>'type' AS error_type, left(t.error->>'message', 300) AS error_message"
)


def _quoted(states: Sequence[str]) -> str:
    return ", ".join(f"'{state}'" for state in states)


#: Each state's rows and the predicate of the partial index that holds them: the
#: listing indexes (finished), the ready index (pending), the lease index (running).
_STATE_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (FINISHED_PREDICATE, FINISHED_STATUSES),
    (PENDING_PREDICATE, PENDING_STATUSES),
    ("status = 'processing'", ("processing",)),
)
_UNFINISHED = _STATE_INDEXES[1:]


def task_listing(
    *,
    by_task: bool,
    by_queue: bool,
    by_unique_key: bool,
    since: bool,
    until: bool,
    after: bool,
    keys_only: bool = False,
) -> TextClause:
    """Newest tasks first (keyset on created_at, uid) matching the filters that are
    set, the others left out of the statement; values are always parameters:
    ``:statuses`` and ``:sources`` (arrays, every value when not filtered),
    ``:queues`` (array) or ``:queue``, ``:task``, ``:unique_key``, ``:since`` /
    ``:until`` (created_at range), ``:after_created`` / ``:after_uid`` (the last
    row of the page before), ``:limit``.

    Finished tasks: one backward range scan of ``ix_eventix_task_listing`` per
    (queue, status, source), or of ``ix_eventix_task_task_listing`` per (status,
    source) for a task name, each stopping after ``:limit`` rows; the newest of
    those (and of the pending and running rows, read from their partial indexes)
    make the page. So a page costs the same whether a filter matches ten finished
    rows or a million, and rare combinations (the failures of one task) are found
    without reading the common ones. A unique key has its own index and few rows.
    """
    where = []
    if by_queue and (by_task or by_unique_key):
        where.append("t.namespace = :queue")
    if by_task and by_unique_key:
        where.append("t.task = :task")
    if since:
        where.append("t.created_at >= :since")
    if until:
        where.append("t.created_at < :until")
    if after:
        where.append("(t.created_at, t.uid) < (:after_created, CAST(:after_uid AS uuid))")
    extra = "".join(f" AND {w}" for w in where)
    picked = "t.uid::text, t.created_at" if keys_only else _SUMMARY
    if by_unique_key:
        return text(
            f"""
            SELECT {picked} FROM eventix_task AS t
            WHERE t.unique_key = :unique_key AND t.status = ANY(CAST(:statuses AS text[]))
              AND t.source = ANY(CAST(:sources AS text[])){extra}
            ORDER BY t.created_at DESC, t.uid DESC
            LIMIT :limit
            """
        )
    if by_task:
        prefix = "t.task = :task"
        ranges = queue_lateral = ""
    else:
        prefix = "t.namespace = q.name"
        ranges = "unnest(CAST(:queues AS text[])) AS q(name) CROSS JOIN "
        queue_lateral = ranges + "LATERAL "
    # Pending and running rows, which the listing indexes do not hold: few beside the
    # finished ones, read from their own partial index and sorted; each branch runs
    # only when :statuses asks for one of its states (a one-time filter).
    unfinished = "".join(
        f"""
            UNION ALL
            SELECT k.created_at, k.uid FROM {queue_lateral}(
                SELECT t.created_at, t.uid FROM eventix_task AS t
                WHERE CAST(:statuses AS text[]) && ARRAY[{_quoted(states)}]
                  AND {prefix} AND t.{predicate} AND t.status = ANY(CAST(:statuses AS text[]))
                  AND t.source = ANY(CAST(:sources AS text[])){extra}
                ORDER BY t.created_at DESC, t.uid DESC
                LIMIT :limit
            ) AS k"""
        for predicate, states in _UNFINISHED
    )
    return text(
        f"""
        WITH page AS (
            SELECT k.created_at, k.uid
            FROM {ranges}unnest(CAST(:statuses AS text[])) AS s(status)
            CROSS JOIN unnest(CAST(:sources AS text[])) AS o(source)
            CROSS JOIN LATERAL (
                SELECT t.created_at, t.uid FROM eventix_task AS t
                WHERE {prefix} AND t.status = s.status AND t.source = o.source
                  AND t.{FINISHED_PREDICATE}{extra}
                ORDER BY t.created_at DESC, t.uid DESC
                LIMIT :limit
            ) AS k{unfinished}
            ORDER BY created_at DESC, uid DESC
            LIMIT :limit
        )
        SELECT {picked} FROM page JOIN eventix_task AS t ON t.uid = page.uid
        ORDER BY t.created_at DESC, t.uid DESC
        """
    )


# -- name: tasks_by_uid_range --
# Tasks whose uid lies in [:low, :high): what a uid prefix (the short uid the list
# shows) names, by the primary key.
TASKS_BY_UID_RANGE: TextClause = text(
    f"""
    SELECT {_SUMMARY} FROM eventix_task AS t
    WHERE t.uid >= CAST(:low AS uuid) AND t.uid < CAST(:high AS uuid)
    ORDER BY t.uid
    LIMIT :limit
    """
)


# -- name: queue_counts --
# Tasks of each queue in each state, each counted up to :cap rows of the index that
# holds that state's rows (the listing index for finished ones, an index-only range
# when the table is vacuumed; the ready and lease indexes for the others): a million
# done tasks cost no more than :cap of them. Of the branches, only the one whose
# states hold s.status runs (a one-time filter).
_CAPPED_COUNTS = " UNION ALL ".join(
    f"""(
            SELECT 1 FROM eventix_task AS t
            WHERE s.status IN ({_quoted(states)})
              AND t.namespace = q.name AND t.status = s.status AND t.{predicate}
            LIMIT :cap)"""
    for predicate, states in _STATE_INDEXES
)
QUEUE_COUNTS: TextClause = text(
    f"""
    SELECT q.name AS queue, s.status, c.n
    FROM unnest(CAST(:queues AS text[])) AS q(name)
    CROSS JOIN unnest(CAST(:statuses AS text[])) AS s(status)
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM ({_CAPPED_COUNTS}) AS capped
    ) AS c
    """
)

# -- name: queue_status_estimates --
# The planner's idea of how many rows each (queue, status) has: the most common
# pairs of the extended statistics eventix_task_queue_status times the table's
# row estimate, as of the last ANALYZE. What the overview shows past its cap.
# (pg_stats_ext, not the catalog: it needs only the right to read the table.)
QUEUE_STATUS_ESTIMATES: TextClause = text(
    """
    SELECT e.most_common_vals[i][1] AS queue, e.most_common_vals[i][2] AS status,
           round(e.most_common_freqs[i] * greatest(c.reltuples, 0))::bigint AS estimate
    FROM pg_stats_ext AS e
    JOIN pg_namespace AS n ON n.nspname = e.schemaname
    JOIN pg_class AS c ON c.relnamespace = n.oid AND c.relname = e.tablename
    CROSS JOIN LATERAL generate_subscripts(e.most_common_vals, 1) AS i
    WHERE e.statistics_name = 'eventix_task_queue_status'
      AND e.schemaname = current_schema()
    """
)

# -- name: queue_due --
# Due tasks of each queue (counted up to :cap) and the age of the oldest, from the
# partial ready index (namespace, priority, eta). The oldest is the least of each
# priority's first eta, found by a loose scan over the priorities (one probe per
# priority in use), not by reading every due task.
QUEUE_DUE: TextClause = text(
    f"""
    SELECT q.name AS queue, d.due,
           CASE WHEN o.oldest <= now() THEN extract(epoch FROM now() - o.oldest) END
               AS oldest_due_seconds
    FROM unnest(CAST(:queues AS text[])) AS q(name)
    CROSS JOIN LATERAL (
        SELECT count(*) AS due FROM (
            SELECT 1 FROM eventix_task AS t
            WHERE t.namespace = q.name AND {PENDING_PREDICATE} AND t.eta <= now()
            LIMIT :cap
        ) AS capped
    ) AS d
    CROSS JOIN LATERAL (
        WITH RECURSIVE level(priority) AS (
            (SELECT t.priority FROM eventix_task AS t
             WHERE t.namespace = q.name AND {PENDING_PREDICATE}
             ORDER BY t.priority LIMIT 1)
            UNION ALL
            SELECT (SELECT t.priority FROM eventix_task AS t
                    WHERE t.namespace = q.name AND {PENDING_PREDICATE}
                      AND t.priority > level.priority
                    ORDER BY t.priority LIMIT 1)
            FROM level WHERE level.priority IS NOT NULL
        )
        SELECT min((SELECT t.eta FROM eventix_task AS t
                    WHERE t.namespace = q.name AND {PENDING_PREDICATE}
                      AND t.priority = level.priority
                    ORDER BY t.eta LIMIT 1)) AS oldest
        FROM level WHERE level.priority IS NOT NULL
    ) AS o
    """
)

# -- name: live_leases --
# Running tasks whose lease is alive, by worker: who is working on what right now.
# At most :limit running tasks are read (from the lease index); each worker comes
# with its count of them, its latest lease, and its first :per_worker tasks only.
LIVE_LEASES: TextClause = text(
    """
    SELECT w.worker_id, w.uid::text AS uid, w.task, w.namespace, w.attempts, w.started_at,
           w.worker_expires, w.tasks_running, w.lease_until, w.tasks_read
    FROM (
        SELECT r.*,
               row_number() OVER (PARTITION BY r.worker_id ORDER BY r.started_at, r.uid) AS nth,
               count(*) OVER (PARTITION BY r.worker_id) AS tasks_running,
               max(r.worker_expires) OVER (PARTITION BY r.worker_id) AS lease_until,
               count(*) OVER () AS tasks_read
        FROM (
            SELECT worker_id, uid, task, namespace, attempts, started_at, worker_expires
            FROM eventix_task
            WHERE status = 'processing' AND worker_expires > now() AND worker_id IS NOT NULL
            LIMIT :limit
        ) AS r
    ) AS w
    WHERE w.nth <= :per_worker
    ORDER BY w.worker_id, w.nth
    """
)

# -- name: roll_up_throughput --
# Count the tasks finished (done, or failed for good) in each closed minute after
# the last one rolled up (at most :span minutes, none older than :back), per queue
# and in total. One process does it at a time (a transaction-level advisory lock,
# so it holds through a pooler); a minute counts as closed :settle seconds after
# its end, once transactions that finished in it have committed. Returns the
# minutes it rolled up.
ROLL_UP_THROUGHPUT: TextClause = text(
    """
    WITH lock AS (SELECT pg_try_advisory_xact_lock(:lock_key) AS held),
    bounds AS (
        SELECT lo, LEAST(hi, lo + make_interval(mins => :span)) AS hi
        FROM (
            SELECT GREATEST(
                       (SELECT max(minute) + interval '1 minute' FROM eventix_throughput
                        WHERE namespace = ''),
                       date_trunc('minute', now()) - make_interval(mins => :back)
                   ) AS lo,
                   date_trunc('minute', now() - make_interval(secs => :settle)) AS hi
        ) AS b
        WHERE (SELECT held FROM lock)
    ),
    counted AS (
        SELECT date_trunc('minute', t.finished_at) AS minute, t.namespace,
               count(*) FILTER (WHERE t.status = 'done') AS done,
               count(*) FILTER (WHERE t.status = 'error') AS failed
        FROM eventix_task AS t, bounds
        WHERE t.finished_at >= bounds.lo AND t.finished_at < bounds.hi
          AND t.status IN ('done', 'error')
        GROUP BY 1, 2
    ),
    minutes AS (
        SELECT generate_series(lo, hi - interval '1 minute', interval '1 minute') AS minute
        FROM bounds WHERE hi > lo
    ),
    rows AS (
        SELECT minute, namespace, done, failed FROM counted
        UNION ALL
        SELECT m.minute, '', COALESCE(sum(c.done), 0), COALESCE(sum(c.failed), 0)
        FROM minutes AS m LEFT JOIN counted AS c ON c.minute = m.minute
        GROUP BY m.minute
    )
    INSERT INTO eventix_throughput (minute, namespace, done, failed)
    SELECT minute, namespace, done, failed FROM rows
    ON CONFLICT DO NOTHING
    RETURNING minute
    """
)

# -- name: purge_throughput --
PURGE_THROUGHPUT: TextClause = text(
    "DELETE FROM eventix_throughput WHERE minute < now() - make_interval(mins => :keep)"
)

# -- name: throughput --
# The rolled-up minutes since :since, per queue ('' is the total).
THROUGHPUT: TextClause = text(
    """
    SELECT minute, namespace, done, failed FROM eventix_throughput
    WHERE minute >= :since
    ORDER BY minute, namespace
    """
)

# -- name: throughput_after --
# Tasks finished after the last rolled-up minute, counted live (up to :cap rows,
# oldest first: past the cap the newest minutes are incomplete).
THROUGHPUT_AFTER: TextClause = text(
    """
    SELECT date_trunc('minute', f.finished_at) AS minute, f.namespace,
           count(*) FILTER (WHERE f.status = 'done') AS done,
           count(*) FILTER (WHERE f.status = 'error') AS failed,
           (SELECT count(*) FROM (
                SELECT 1 FROM eventix_task AS t
                WHERE t.finished_at >= :since AND t.finished_at IS NOT NULL
                LIMIT :cap) AS c) >= :cap AS capped
    FROM (
        SELECT t.finished_at, t.namespace, t.status FROM eventix_task AS t
        WHERE t.finished_at >= :since AND t.finished_at IS NOT NULL
        ORDER BY t.finished_at
        LIMIT :cap
    ) AS f
    WHERE f.status IN ('done', 'error')
    GROUP BY 1, 2
    """
)

# -- name: requeue_tasks / cancel_tasks / delete_tasks --
# The dashboard's bulk actions on a batch of uids, with the single-task rules of
# REQUEUE_TASK and CANCEL_RUNNING_TASK. Delete leaves rows that a resource owns (an
# EventixTask's row, a schedule's run): Git would bring them back, or their
# schedule's history would lose them behind the operator's back.
# Retry leaves a task whose unique key another pending task holds (same queue and
# Kubernetes namespace, as uq_eventix_task_pending_unique_key has it: a finished
# task's key is free, and old runs of one key pile up), and of several chosen tasks
# sharing a free key retries the newest only: one violation of that index would undo
# the whole batch. (A task enqueued with the key meanwhile can still take it first:
# the caller retries the batch.)
REQUEUE_TASKS: TextClause = waking(
    """
    UPDATE eventix_task
    SET status = 'scheduled', eta = now(), attempts = 0,
        result = NULL, error = NULL, worker_id = NULL, worker_expires = NULL, expires = NULL,
        finished_at = NULL, cancel_requested_at = NULL, cancelled_by = NULL,
        updated_at = now(), revision = revision + 1
    WHERE uid IN (
        SELECT DISTINCT ON (c.namespace, COALESCE(c.unique_key, c.uid::text),
                            COALESCE(c.k8s_namespace, '')) c.uid
        FROM eventix_task AS c
        WHERE c.uid = ANY(CAST(:uids AS uuid[]))
          AND c.status IN ('done', 'error', 'cancelled', 'retry')
          AND (c.unique_key IS NULL OR c.status = 'retry' OR NOT EXISTS (
              SELECT 1 FROM eventix_task AS p
              WHERE p.namespace = c.namespace AND p.unique_key = c.unique_key
                AND COALESCE(p.k8s_namespace, '') = COALESCE(c.k8s_namespace, '')
                AND p.status IN ('scheduled', 'retry')))
        ORDER BY c.namespace, COALESCE(c.unique_key, c.uid::text),
                 COALESCE(c.k8s_namespace, ''), c.status = 'retry' DESC, c.created_at DESC
    ) AND status IN ('done', 'error', 'cancelled', 'retry')
    RETURNING uid, namespace, status
    """
)
# -- name: cancel_running_tasks --
# The dashboard's bulk cancel that reaches running tasks too (see _cancelling).
CANCEL_RUNNING_TASKS: TextClause = _cancelling(
    "t.uid = ANY(CAST(:uids AS uuid[]))", "t.uid, t.status"
)
DELETE_TASKS: TextClause = text(
    """
    DELETE FROM eventix_task
    WHERE uid = ANY(CAST(:uids AS uuid[])) AND source NOT IN ('k8s', 'schedule')
    RETURNING uid
    """
)

# -- name: list_schedules --
LIST_SCHEDULES: TextClause = text(
    f"""
    SELECT {columns(SCHEDULE_COLUMNS)} FROM eventix_schedule
    ORDER BY k8s_namespace, k8s_name
    LIMIT :limit
    """
)

# -- name: recent_schedule_runs --
# The newest :limit runs of each schedule, from the tick index (newest tick first),
# with what the dashboard shows of each: outcome, lateness, manual or not.
RECENT_SCHEDULE_RUNS: TextClause = text(
    """
    SELECT s.uid AS schedule_uid, r.*
    FROM unnest(CAST(:uids AS text[])) AS s(uid)
    CROSS JOIN LATERAL (
        SELECT t.uid::text AS uid, t.status, t.attempts, t.schedule_time, t.started_at,
               t.finished_at, t.operator, t.error->>'message' AS error_message
        FROM eventix_task AS t
        WHERE t.schedule_uid = s.uid
        ORDER BY t.schedule_time DESC
        LIMIT :limit
    ) AS r
    ORDER BY s.uid, r.schedule_time DESC
    """
)

# -- name: list_triggers --
LIST_TRIGGERS: TextClause = text(
    f"""
    SELECT {columns(TRIGGER_COLUMNS)} FROM eventix_trigger
    ORDER BY k8s_namespace NULLS FIRST, name
    LIMIT :limit
    """
)

# -- name: record_pools --
# What the scaler saw and decided for a batch of pools, and the minute's sample
# of each (replicas as last seen, the deepest queue of the minute); samples older
# than :keep_minutes go.
POOL_COLUMNS = (
    "uid", "k8s_namespace", "k8s_name", "target_kind", "target_name", "queues",
    "min_replicas", "max_replicas", "tasks_per_replica", "activation_tasks",
    "cooldown_seconds", "desired_replicas", "current_replicas", "queue_depth", "running",
    "busy_workers", "ready", "reason", "message", "last_scale_time",
)  # fmt: skip
_POOL_TYPES = {
    "uid": "text", "k8s_namespace": "text", "k8s_name": "text", "target_kind": "text",
    "target_name": "text", "queues": "text", "min_replicas": "integer",
    "max_replicas": "integer", "tasks_per_replica": "integer",
    "activation_tasks": "integer", "cooldown_seconds": "float8",
    "desired_replicas": "integer", "current_replicas": "integer", "queue_depth": "integer",
    "running": "integer", "busy_workers": "integer", "ready": "boolean", "reason": "text",
    "message": "text", "last_scale_time": "timestamptz",
}  # fmt: skip
_POOL_ARRAYS = ", ".join(f"CAST(:{c} AS {_POOL_TYPES[c]}[])" for c in POOL_COLUMNS)
RECORD_POOLS: TextClause = text(
    f"""
    WITH v AS (
        SELECT {columns([c for c in POOL_COLUMNS if c != "queues"])},
               string_to_array(queues, ',') AS queues
        FROM unnest({_POOL_ARRAYS}) AS v({columns(POOL_COLUMNS)})
    ), pools AS (
        INSERT INTO eventix_pool AS p ({columns(POOL_COLUMNS)}, updated_at)
        SELECT {columns(POOL_COLUMNS)}, now() FROM v
        ON CONFLICT (uid) DO UPDATE SET
            {", ".join(f"{c} = EXCLUDED.{c}" for c in POOL_COLUMNS if c != "uid")},
            updated_at = now()
    ), samples AS (
        INSERT INTO eventix_pool_sample AS s (
            pool_uid, minute, desired_replicas, current_replicas, queue_depth, running
        )
        SELECT uid, date_trunc('minute', now()), desired_replicas, current_replicas,
               queue_depth, running
        FROM v
        ON CONFLICT (pool_uid, minute) DO UPDATE SET
            desired_replicas = EXCLUDED.desired_replicas,
            current_replicas = EXCLUDED.current_replicas,
            queue_depth = GREATEST(s.queue_depth, EXCLUDED.queue_depth),
            running = GREATEST(s.running, EXCLUDED.running)
    )
    DELETE FROM eventix_pool_sample
    WHERE pool_uid IN (SELECT uid FROM v)
      AND minute < now() - make_interval(mins => :keep_minutes)
    """
)

# -- name: delete_pool --
DELETE_POOL: TextClause = text(
    """
    WITH gone AS (DELETE FROM eventix_pool_sample WHERE pool_uid = :uid)
    DELETE FROM eventix_pool WHERE uid = :uid RETURNING uid
    """
)

# -- name: list_pools --
LIST_POOLS: TextClause = text(
    f"""
    SELECT {columns((*POOL_COLUMNS, "updated_at"))} FROM eventix_pool
    ORDER BY k8s_namespace, k8s_name
    LIMIT :limit
    """
)

# -- name: pool_samples --
POOL_SAMPLES: TextClause = text(
    """
    SELECT pool_uid, minute, desired_replicas, current_replicas, queue_depth, running
    FROM eventix_pool_sample
    WHERE pool_uid = ANY(CAST(:uids AS text[])) AND minute >= :since
    ORDER BY pool_uid, minute
    """
)


# -- Leadership ---------------------------------------------------------------------------

# -- name: acquire_leases --
# Take or renew the named leases for :holder until now() + :seconds: each one that
# is free, expired, or this holder's already. Returns the names :holder holds now.
# Concurrent callers serialise on the rows (names come sorted: no deadlock); a row
# lock, not a session, decides, so it holds through any connection pooler.
ACQUIRE_LEASES: TextClause = text(
    """
    INSERT INTO eventix_lease AS l (name, holder, expires_at, acquired_at, renewed_at)
    SELECT n.name, :holder, now() + make_interval(secs => :seconds), now(), now()
    FROM unnest(CAST(:names AS text[])) AS n(name)
    ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder,
        expires_at = EXCLUDED.expires_at,
        renewed_at = now(),
        acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at >= now()
                           THEN l.acquired_at ELSE now() END
    WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
    RETURNING l.name
    """
)

# -- name: release_leases --
# Give up leases :holder holds (a clean shutdown, a pool it no longer scales), so
# that another replica takes them at its next try instead of after they expire.
RELEASE_LEASES: TextClause = text(
    "DELETE FROM eventix_lease WHERE holder = :holder AND name = ANY(CAST(:names AS text[]))"
)

# -- name: list_leases --
# Every lease with its holder and whether it is live now (for people and tests).
LIST_LEASES: TextClause = text(
    """
    SELECT name, holder, acquired_at, renewed_at, expires_at, expires_at >= now() AS live
    FROM eventix_lease ORDER BY name
    """
)

# -- Queue settings (issue #15) -----------------------------------------------------

#: The settings a front end writes, in parameter order; each comes with a
#: ``set_<name>`` flag, so that ``eventix queue set Q --concurrency 3`` changes that
#: one setting and leaves the others as they are, in one statement (no read,
#: merge and write that a racing change could slip between).
QUEUE_SETTINGS = (
    "paused", "concurrency_limit", "rate_count", "rate_per_seconds",
    "retain_succeeded_seconds", "retain_failed_seconds",
)  # fmt: skip
_QUEUE_FIGURES = f"""
    d.due, r.running,
    extract(epoch FROM now() - d.oldest_due) AS oldest_due_seconds
    FROM eventix_queue AS s
    CROSS JOIN LATERAL (
        SELECT count(*) AS due, min(eta) AS oldest_due FROM eventix_task
        WHERE namespace = s.name AND {PENDING_PREDICATE} AND eta <= now()
    ) AS d
    CROSS JOIN LATERAL (
        SELECT count(*) AS running FROM eventix_task
        WHERE namespace = s.name AND status = 'processing'
    ) AS r
"""
_QUEUE_ROW = (
    "s.name, s.paused, s.concurrency_limit, s.rate_count, s.rate_per_seconds, "
    "s.retain_succeeded_seconds, s.retain_failed_seconds, s.k8s_namespace, s.k8s_name, "
    "s.k8s_uid, s.updated_at"
)

# -- name: set_queue --
# Upsert the settings flagged ``set_*`` of one queue (the others keep their value,
# or the default for a new row), and who configures it. Replaying it changes
# nothing but updated_at. Wakes the queue's workers when it leaves the queue
# unpaused (a resume, or a limit raised): a notification of a queue without due
# tasks costs a worker one empty claim. With :k8s_uid, a row another resource
# configures is left alone and nothing is returned (one EventixQueue per queue);
# without, it is changed whoever configures it (the CLI and the REST API), and the
# row keeps the generation of the resource's spec it holds (:k8s_generation, which
# the resource's own writes give: its status's observedGeneration).
SET_QUEUE: TextClause = text(
    f"""
    WITH saved AS (
        INSERT INTO eventix_queue AS s (name, {columns(QUEUE_SETTINGS)},
                                       k8s_namespace, k8s_name, k8s_uid, k8s_generation)
        VALUES (:name, COALESCE(CAST(:paused AS boolean), false),
                {", ".join(f":{c}" for c in QUEUE_SETTINGS[1:])},
                :k8s_namespace, :k8s_name, :k8s_uid, :k8s_generation)
        ON CONFLICT (name) DO UPDATE SET
            {
        ", ".join(
            f"{c} = CASE WHEN :set_{c} THEN EXCLUDED.{c} ELSE s.{c} END" for c in QUEUE_SETTINGS
        )
    },
            k8s_namespace = COALESCE(EXCLUDED.k8s_namespace, s.k8s_namespace),
            k8s_name = COALESCE(EXCLUDED.k8s_name, s.k8s_name),
            k8s_uid = COALESCE(EXCLUDED.k8s_uid, s.k8s_uid),
            k8s_generation = COALESCE(EXCLUDED.k8s_generation, s.k8s_generation),
            updated_at = now()
        WHERE EXCLUDED.k8s_uid IS NULL OR s.k8s_uid IS NULL OR s.k8s_uid = EXCLUDED.k8s_uid
        RETURNING s.name, s.paused
    )
    SELECT saved.name, saved.paused,
           CASE WHEN NOT saved.paused THEN pg_notify('{READY_CHANNEL}', saved.name) END
    FROM saved
    """
)

# -- name: delete_queue --
# Remove a queue's settings (it runs unpaused and unlimited again, and its workers
# are woken); with :k8s_uid, only if that resource still configures it (without
# :name, whichever queue that resource configures).
DELETE_QUEUE: TextClause = text(
    f"""
    WITH gone AS (
        DELETE FROM eventix_queue
        WHERE (CAST(:name AS text) IS NULL OR name = :name)
          AND (CAST(:k8s_uid AS text) IS NULL OR k8s_uid = :k8s_uid)
          AND (CAST(:name AS text) IS NOT NULL OR CAST(:k8s_uid AS text) IS NOT NULL)
        RETURNING name
    )
    SELECT gone.name, pg_notify('{READY_CHANNEL}', gone.name) FROM gone
    """
)

# -- name: get_queue --
# One queue's settings with its figures: due tasks, running, age of the oldest due;
# and the generation of its resource's spec (the status sync's observedGeneration).
GET_QUEUE: TextClause = text(
    f"SELECT {_QUEUE_ROW}, s.k8s_generation, {_QUEUE_FIGURES} WHERE s.name = :name"
)

# -- name: list_queues --
# Every queue that has settings, with its figures, by name.
LIST_QUEUES: TextClause = text(
    f"SELECT {_QUEUE_ROW}, s.k8s_generation, {_QUEUE_FIGURES} ORDER BY s.name"
)

# -- name: queue_settings --
# Every queue's settings without its figures, by name: the dashboard counts those
# with queue_counts and queue_due, up to its cap (list_queues counts them whole).
QUEUE_SETTINGS_ROWS: TextClause = text(
    f"SELECT {_QUEUE_ROW} FROM eventix_queue AS s ORDER BY s.name"
)

# -- name: lock_queue_owner --
# Lock a queue's settings row, if it has one, and say which EventixQueue configures
# it: the dashboard pauses or resumes only a queue no resource configures, and an
# operator applying a resource to the same row waits until that change commits.
LOCK_QUEUE_OWNER: TextClause = text(
    "SELECT k8s_namespace, k8s_name FROM eventix_queue WHERE name = :name FOR UPDATE"
)
