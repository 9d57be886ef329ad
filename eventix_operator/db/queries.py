"""Every SQL statement of the task queue, named, in one place.

Nothing outside :mod:`eventix_operator.db` builds SQL; callers run these through
:mod:`eventix_operator.db.tasks`, which maps rows to values. Batch statements take
parallel arrays and ``unnest`` them, so a batch of any size is one round trip.
"""

from __future__ import annotations

from sqlalchemy import TextClause, text

#: Channel that carries the queue name of newly ready tasks (see the migration's trigger).
READY_CHANNEL = "eventix_task_ready"

_TASK_COLUMNS = """
    uid, task, namespace, status, priority, eta, scheduled, args, kwargs, unique_key,
    revision, created_at, updated_at, worker_id, worker_expires, retry, max_retries,
    attempts, error_eta_inc, error_eta_max, timeout_seconds, store_result, result,
    error, result_expires, error_expires, expires, started_at, finished_at, operator,
    source, k8s_namespace, k8s_name, k8s_uid, schedule_uid, schedule_time
"""


def returning_columns(prefix: str = "") -> str:
    return ", ".join(prefix + c.strip() for c in _TASK_COLUMNS.split(","))


_INSERT = """
    INSERT INTO eventix_task AS t (
        uid, task, namespace, priority, eta, args, kwargs, unique_key, retry,
        max_retries, error_eta_inc, error_eta_max, timeout_seconds, store_result,
        result_expires, error_expires, operator, source,
        k8s_namespace, k8s_name, k8s_uid, schedule_uid, schedule_time
    )
    SELECT u.uid, u.task, u.namespace, u.priority,
           COALESCE(u.eta, now() + make_interval(secs => COALESCE(u.delay, 0))),
           u.args, u.kwargs, u.unique_key, u.retry, u.max_retries, u.error_eta_inc,
           u.error_eta_max, u.timeout_seconds, u.store_result, u.result_expires,
           u.error_expires, u.operator, u.source,
           u.k8s_namespace, u.k8s_name, u.k8s_uid, u.schedule_uid, u.schedule_time
    FROM unnest(
        CAST(:uid AS uuid[]), CAST(:task AS text[]), CAST(:namespace AS text[]),
        CAST(:priority AS int[]), CAST(:eta AS timestamptz[]), CAST(:delay AS float8[]),
        CAST(:args AS jsonb[]), CAST(:kwargs AS jsonb[]), CAST(:unique_key AS text[]),
        CAST(:retry AS boolean[]), CAST(:max_retries AS int[]), CAST(:error_eta_inc AS int[]),
        CAST(:error_eta_max AS int[]), CAST(:timeout_seconds AS float8[]),
        CAST(:store_result AS boolean[]), CAST(:result_expires AS int[]),
        CAST(:error_expires AS int[]), CAST(:operator AS text[]), CAST(:source AS text[]),
        CAST(:k8s_namespace AS text[]), CAST(:k8s_name AS text[]), CAST(:k8s_uid AS text[]),
        CAST(:schedule_uid AS text[]), CAST(:schedule_time AS timestamptz[])
    ) AS u(uid, task, namespace, priority, eta, delay, args, kwargs, unique_key, retry,
           max_retries, error_eta_inc, error_eta_max, timeout_seconds, store_result,
           result_expires, error_expires, operator, source,
           k8s_namespace, k8s_name, k8s_uid, schedule_uid, schedule_time)
"""

# -- name: insert_tasks --
# Insert a batch; a pending task with the same (queue, unique key) is merged the
# Eventix way instead: earliest eta, lowest priority number, newest args.
INSERT_TASKS: TextClause = text(
    _INSERT
    + """
    ON CONFLICT (namespace, unique_key)
        WHERE unique_key IS NOT NULL AND status IN ('scheduled', 'retry')
    DO UPDATE SET
        eta = LEAST(t.eta, EXCLUDED.eta),
        priority = LEAST(t.priority, EXCLUDED.priority),
        args = EXCLUDED.args,
        kwargs = EXCLUDED.kwargs,
        status = 'scheduled',
        updated_at = now(),
        revision = t.revision + 1
    RETURNING t.uid, t.namespace, t.unique_key
    """
)

# -- name: insert_tasks_once --
# Insert tasks that carry their own identity (a resource uid, a schedule tick):
# a row that exists already is left alone, so replays and racing replicas
# insert each at most once. Returns only the rows inserted.
INSERT_TASKS_ONCE: TextClause = text(
    _INSERT
    + """
    ON CONFLICT DO NOTHING
    RETURNING t.uid
    """
)

#: What a worker needs of a claimed task, in :class:`~eventix_operator.db.tasks.ClaimedTask` order.
CLAIMED_COLUMNS = (
    "t.uid::text, t.task, t.namespace, t.status, t.args, t.kwargs, t.attempts, t.retry, "
    "t.max_retries, t.error_eta_inc, t.error_eta_max, t.timeout_seconds, t.store_result"
)

# -- name: copy_tasks --
# Bulk load of plain tasks (no unique key, no delay, no resource or tick
# identity: nothing can conflict). COPY skips parsing one array per column, the
# largest cost of a 100k-task enqueue; without an eta column the row's default,
# now() of the transaction, is what INSERT_TASKS would give.
COPY_COLUMNS = (
    "uid", "task", "namespace", "priority", "args", "kwargs", "retry", "max_retries",
    "error_eta_inc", "error_eta_max", "timeout_seconds", "store_result", "result_expires",
    "error_expires", "operator", "source",
)  # fmt: skip
COPY_TASKS = f"COPY eventix_task ({', '.join(COPY_COLUMNS)}) FROM STDIN"
COPY_TASKS_WITH_ETA = f"COPY eventix_task ({', '.join(COPY_COLUMNS)}, eta) FROM STDIN"

# -- name: claim_tasks --
# Lease up to :limit due tasks of the given queues in claim order (priority, eta);
# only the columns a worker needs come back (decoding the rest cost more than
# running a no-op task).
# One lateral index scan per queue keeps the claim on the partial ready index
# however large other queues grow.
CLAIM_TASKS: TextClause = text(
    f"""
    WITH next AS (
        SELECT c.uid
        FROM unnest(CAST(:queues AS text[])) AS q(name),
        LATERAL (
            SELECT uid, priority, eta
            FROM eventix_task
            WHERE namespace = q.name
              AND status IN ('scheduled', 'retry')
              AND eta <= now()
            ORDER BY priority, eta
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        ) AS c
        ORDER BY c.priority, c.eta
        LIMIT :limit
    )
    UPDATE eventix_task AS t
    SET status = 'processing',
        worker_id = :worker_id,
        worker_expires = now() + make_interval(secs => :lease_seconds),
        attempts = t.attempts + 1,
        started_at = now(),
        updated_at = now(),
        revision = t.revision + 1
    FROM next
    WHERE t.uid = next.uid
    RETURNING {CLAIMED_COLUMNS}
    """
)

# -- name: complete_tasks --
# Record successes of tasks this worker still holds; rows whose lease was lost are
# left to whoever holds them now.
COMPLETE_TASKS: TextClause = text(
    """
    UPDATE eventix_task AS t
    SET status = 'done',
        result = CASE WHEN t.store_result THEN v.result END,
        error = NULL,
        finished_at = now(),
        updated_at = now(),
        worker_id = NULL,
        worker_expires = NULL,
        expires = now() + make_interval(secs => t.result_expires),
        revision = t.revision + 1
    FROM unnest(CAST(:uid AS uuid[]), CAST(:result AS jsonb[])) AS v(uid, result)
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid
    """
)

# -- name: fail_tasks --
# Record failures: a row with a retry delay goes back to `retry` at now() + delay,
# one without becomes `error` for good.
FAIL_TASKS: TextClause = text(
    """
    UPDATE eventix_task AS t
    SET status = CASE WHEN v.retry_in IS NULL THEN 'error' ELSE 'retry' END,
        eta = CASE WHEN v.retry_in IS NULL THEN t.eta
                   ELSE now() + make_interval(secs => v.retry_in) END,
        error = v.error,
        finished_at = CASE WHEN v.retry_in IS NULL THEN now() END,
        updated_at = now(),
        worker_id = NULL,
        worker_expires = NULL,
        expires = CASE WHEN v.retry_in IS NULL
                       THEN now() + make_interval(secs => t.error_expires) END,
        revision = t.revision + 1
    FROM unnest(CAST(:uid AS uuid[]), CAST(:error AS jsonb[]), CAST(:retry_in AS float8[]))
        AS v(uid, error, retry_in)
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid, t.namespace, t.status
    """
)

# -- name: release_tasks --
# Give back tasks this worker claimed but will not finish (shutdown). Tasks that
# never started do not count the attempt.
RELEASE_TASKS: TextClause = text(
    """
    UPDATE eventix_task AS t
    SET status = 'scheduled',
        worker_id = NULL,
        worker_expires = NULL,
        attempts = CASE WHEN v.started THEN t.attempts ELSE t.attempts - 1 END,
        updated_at = now(),
        revision = t.revision + 1
    FROM unnest(CAST(:uid AS uuid[]), CAST(:started AS boolean[])) AS v(uid, started)
    WHERE t.uid = v.uid AND t.worker_id = :worker_id AND t.status = 'processing'
    RETURNING t.uid, t.namespace
    """
)

# -- name: heartbeat --
# Renew the leases of every task this worker holds.
HEARTBEAT: TextClause = text(
    """
    UPDATE eventix_task
    SET worker_expires = now() + make_interval(secs => :lease_seconds)
    WHERE worker_id = :worker_id AND status = 'processing'
    """
)

# -- name: lock_expired_leases --
# Tasks of workers that stopped heartbeating, locked for recovery; what happens
# to each is the retry policy's decision (run again, or WorkerLost).
LOCK_EXPIRED_LEASES: TextClause = text(
    """
    SELECT uid::text, worker_id, retry, max_retries, attempts, error_eta_inc, error_eta_max
    FROM eventix_task
    WHERE status = 'processing' AND worker_expires < now()
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

# -- name: recover_leases --
# Put recovered tasks back in the queue, due now, or end them with their error.
RECOVER_LEASES: TextClause = text(
    """
    UPDATE eventix_task AS t
    SET status = v.status,
        error = COALESCE(v.error, t.error),
        finished_at = CASE WHEN v.status = 'error' THEN now() END,
        eta = now(),
        worker_id = NULL,
        worker_expires = NULL,
        updated_at = now(),
        revision = t.revision + 1
    FROM unnest(CAST(:uid AS uuid[]), CAST(:status AS text[]), CAST(:error AS jsonb[]))
        AS v(uid, status, error)
    WHERE t.uid = v.uid
    RETURNING t.uid, t.namespace, t.status
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

# -- name: notify_ready --
# Wake workers of these queues (the insert trigger covers new rows; this covers
# rows that become ready again by an update).
NOTIFY_READY: TextClause = text(
    f"""
    SELECT pg_notify('{READY_CHANNEL}', q)
    FROM (SELECT DISTINCT unnest(CAST(:queues AS text[])) AS q) AS queues
    """
)

# -- name: get_task --
GET_TASK: TextClause = text(f"SELECT {returning_columns()} FROM eventix_task WHERE uid = :uid")

# -- name: list_tasks --
# Newest first; NULL filters match everything.
LIST_TASKS: TextClause = text(
    f"""
    SELECT {returning_columns()} FROM eventix_task
    WHERE (CAST(:status AS text) IS NULL OR status = :status)
      AND (CAST(:queue AS text) IS NULL OR namespace = :queue)
    ORDER BY created_at DESC, uid
    LIMIT :limit
    """
)

# -- name: retry_task --
# Put a finished or failed task back in its queue, due now, with fresh attempts.
RETRY_TASK: TextClause = text(
    f"""
    UPDATE eventix_task
    SET status = 'scheduled', eta = now(), attempts = 0, error = NULL, result = NULL,
        expires = NULL, finished_at = NULL, updated_at = now(), revision = revision + 1
    WHERE uid = :uid AND status IN ('done', 'error', 'cancelled')
    RETURNING {returning_columns()}
    """
)

# -- name: cancel_task --
# Cancel a task that has not started; a running task cannot be taken back.
CANCEL_TASK: TextClause = text(
    f"""
    UPDATE eventix_task
    SET status = 'cancelled', finished_at = now(), updated_at = now(),
        expires = now() + make_interval(secs => error_expires),
        revision = revision + 1
    WHERE uid = :uid AND status IN ('scheduled', 'retry')
    RETURNING {returning_columns()}
    """
)

# -- name: queue_stats --
# Counts per queue and status, and the age of the oldest due task per queue.
QUEUE_STATS: TextClause = text(
    """
    SELECT namespace, status, count(*) AS count,
           max(CASE WHEN status IN ('scheduled', 'retry') AND eta <= now()
                    THEN extract(epoch FROM now() - eta) END) AS oldest_due_seconds,
           count(*) FILTER (WHERE status IN ('scheduled', 'retry') AND eta <= now()) AS due
    FROM eventix_task
    GROUP BY namespace, status
    ORDER BY namespace, status
    """
)

# -- Schedules ------------------------------------------------------------------

#: Channel that wakes the scheduler when a schedule is created, changed or resumed.
SCHEDULE_CHANNEL = "eventix_schedule_changed"

_SCHEDULE_COLUMNS = """
    uid, k8s_namespace, k8s_name, generation, expression, time_zone, suspend,
    concurrency_policy, starting_deadline_seconds, catch_up, max_catch_up_runs,
    successful_runs_history_limit, failed_runs_history_limit, template, error,
    created_at, updated_at, last_tick, next_tick
"""

# -- name: upsert_schedule --
# Create or update a schedule from its resource; the firing state (last_tick) is kept.
UPSERT_SCHEDULE: TextClause = text(
    f"""
    INSERT INTO eventix_schedule (
        uid, k8s_namespace, k8s_name, generation, expression, time_zone, suspend,
        concurrency_policy, starting_deadline_seconds, catch_up, max_catch_up_runs,
        successful_runs_history_limit, failed_runs_history_limit, template, error,
        created_at, next_tick
    ) VALUES (
        :uid, :k8s_namespace, :k8s_name, :generation, :expression, :time_zone, :suspend,
        :concurrency_policy, :starting_deadline_seconds, :catch_up, :max_catch_up_runs,
        :successful_runs_history_limit, :failed_runs_history_limit, CAST(:template AS jsonb),
        :error, :created_at, :next_tick
    )
    ON CONFLICT (uid) DO UPDATE SET
        generation = EXCLUDED.generation,
        expression = EXCLUDED.expression,
        time_zone = EXCLUDED.time_zone,
        suspend = EXCLUDED.suspend,
        concurrency_policy = EXCLUDED.concurrency_policy,
        starting_deadline_seconds = EXCLUDED.starting_deadline_seconds,
        catch_up = EXCLUDED.catch_up,
        max_catch_up_runs = EXCLUDED.max_catch_up_runs,
        successful_runs_history_limit = EXCLUDED.successful_runs_history_limit,
        failed_runs_history_limit = EXCLUDED.failed_runs_history_limit,
        template = EXCLUDED.template,
        error = EXCLUDED.error,
        next_tick = EXCLUDED.next_tick,
        updated_at = now()
    RETURNING {_SCHEDULE_COLUMNS}
    """
)

# -- name: get_schedule --
GET_SCHEDULE: TextClause = text(
    f"SELECT {_SCHEDULE_COLUMNS} FROM eventix_schedule WHERE uid = :uid"
)

# -- name: get_schedule_by_name --
GET_SCHEDULE_BY_NAME: TextClause = text(
    f"""
    SELECT {_SCHEDULE_COLUMNS} FROM eventix_schedule
    WHERE k8s_name = :name AND (CAST(:namespace AS text) IS NULL OR k8s_namespace = :namespace)
    """
)

# -- name: lock_due_schedules --
# Schedules with a tick due, locked so that one scheduler fires each (others skip it).
LOCK_DUE_SCHEDULES: TextClause = text(
    f"""
    SELECT {_SCHEDULE_COLUMNS} FROM eventix_schedule
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
    UPDATE eventix_schedule SET error = :error, next_tick = NULL, updated_at = now()
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
    """
    UPDATE eventix_task
    SET status = 'cancelled', finished_at = now(), updated_at = now(), revision = revision + 1,
        error = jsonb_build_object('type', 'Replaced',
                                   'message', 'replaced by the run of ' || :tick)
    WHERE schedule_uid = :schedule_uid AND status IN ('scheduled', 'retry')
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

# -- Resource-backed tasks ---------------------------------------------------

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
    RETURNING {returning_columns()}
    """
)

# -- name: get_resource_task --
GET_RESOURCE_TASK: TextClause = text(
    f"SELECT {returning_columns()} FROM eventix_task WHERE k8s_uid = :k8s_uid AND source = 'k8s'"
)

# -- name: delete_resource_task --
DELETE_RESOURCE_TASK: TextClause = text(
    "DELETE FROM eventix_task WHERE k8s_uid = :k8s_uid AND source = 'k8s' RETURNING uid, status"
)

# -- name: changed_resource_tasks --
# Resource-backed tasks changed since a moment, for status sync.
CHANGED_RESOURCE_TASKS: TextClause = text(
    f"""
    SELECT {returning_columns()} FROM eventix_task
    WHERE k8s_uid IS NOT NULL AND updated_at >= :since
    ORDER BY updated_at
    LIMIT :limit
    """
)

# -- name: changed_schedules --
# Schedules whose own row or whose runs changed since a moment.
CHANGED_SCHEDULES: TextClause = text(
    f"""
    SELECT {_SCHEDULE_COLUMNS} FROM eventix_schedule s
    WHERE s.updated_at >= :since
       OR EXISTS (SELECT 1 FROM eventix_task t
                  WHERE t.schedule_uid = s.uid AND t.updated_at >= :since)
    """
)

# -- Worker pools and metrics ------------------------------------------------------

# -- name: queue_load --
# What worker pools scale on, per queue: due tasks (counted up to :cap, more than
# any pool can use, so a deep backlog costs no more than a full pool), running
# tasks, the distinct workers holding their leases, and, when nothing is due, the
# seconds until the next pending task falls due. Each part reads a partial index.
QUEUE_LOAD: TextClause = text(
    """
    SELECT q.name AS queue,
           d.due,
           r.running,
           r.holders,
           CASE WHEN d.due = 0 THEN (
               SELECT extract(epoch FROM min(t.eta) - now())
               FROM eventix_task t
               WHERE t.namespace = q.name AND t.status IN ('scheduled', 'retry')
                 AND t.eta > now()
           ) END AS next_due_in
    FROM unnest(CAST(:queues AS text[])) AS q(name)
    CROSS JOIN LATERAL (
        SELECT count(*) AS due FROM (
            SELECT 1 FROM eventix_task t
            WHERE t.namespace = q.name AND t.status IN ('scheduled', 'retry')
              AND t.eta <= now()
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
    """
    SELECT namespace AS queue,
           count(*) FILTER (WHERE status IN ('scheduled', 'retry') AND eta <= now()) AS due,
           count(*) FILTER (WHERE status IN ('scheduled', 'retry')) AS pending,
           count(*) FILTER (WHERE status = 'processing') AS running,
           extract(epoch FROM now() - min(eta) FILTER (
               WHERE status IN ('scheduled', 'retry') AND eta <= now())) AS oldest_due_seconds
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

# -- name: try_advisory_lock / advisory_unlock --
# Session locks that make one operator replica the one that acts (pool scaling).
TRY_ADVISORY_LOCK: TextClause = text("SELECT pg_try_advisory_lock(:key)")
ADVISORY_UNLOCK: TextClause = text("SELECT pg_advisory_unlock(:key)")
PING: TextClause = text("SELECT 1")

# -- name: database_now --
# The database's clock: cursors over updated_at must not mix in the client's.
DATABASE_NOW: TextClause = text("SELECT now()")
