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


def _returning(prefix: str = "") -> str:
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

# -- name: claim_tasks --
# Lease up to :limit due tasks of the given queues in claim order (priority, eta).
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
    RETURNING {_returning("t.")}
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

# -- name: recover_expired_leases --
# Tasks of workers that died: back to the queue, or to `error` when the lost run
# was the last one its retries allowed.
RECOVER_EXPIRED_LEASES: TextClause = text(
    """
    UPDATE eventix_task AS t
    SET status = CASE WHEN t.max_retries IS NOT NULL AND t.attempts > t.max_retries
                      THEN 'error' ELSE 'scheduled' END,
        error = CASE WHEN t.max_retries IS NOT NULL AND t.attempts > t.max_retries
                     THEN jsonb_build_object(
                         'type', 'WorkerLost',
                         'message', 'the worker ' || t.worker_id
                             || ' stopped heartbeating and no retries are left')
                     ELSE t.error END,
        finished_at = CASE WHEN t.max_retries IS NOT NULL AND t.attempts > t.max_retries
                           THEN now() END,
        eta = now(),
        worker_id = NULL,
        worker_expires = NULL,
        updated_at = now(),
        revision = t.revision + 1
    WHERE t.uid IN (
        SELECT uid FROM eventix_task
        WHERE status = 'processing' AND worker_expires < now()
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
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
GET_TASK: TextClause = text(f"SELECT {_returning()} FROM eventix_task WHERE uid = :uid")

# -- name: list_tasks --
# Newest first; NULL filters match everything.
LIST_TASKS: TextClause = text(
    f"""
    SELECT {_returning()} FROM eventix_task
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
    RETURNING {_returning()}
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
    RETURNING {_returning()}
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
