"""SQL of the Eventix-compatible REST API and of triggers, named, in one place.

The API shares the queue's own statements where they fit (the claim of
``GET /tasks/next_scheduled`` is :data:`queries.CLAIM_TASKS` with limit 1, the
enqueue of ``POST /task`` is :data:`queries.INSERT_TASKS`); what is here is what
only Eventix's routes need: write-back by revision, lookups by unique key,
paginated listings, and the trigger table. Listings sort and filter on
columns chosen by the caller, so they are built from SQLAlchemy Core
expressions over a fixed whitelist of columns, never from strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, TextClause, case, func, select, text

from eventix_operator.db import queries
from eventix_operator.db.queries import returning_columns
from eventix_operator.db.schema import task_table
from eventix_operator.retry import failures_so_far_sql

_TASK = returning_columns()
_T_TASK = returning_columns("t.")

# -- Tasks ----------------------------------------------------------------------

# -- name: insert_task_returning --
# The queue's own insert with Eventix's unique-key merge (queries.INSERT_TASKS,
# not a copy of it), returning the whole row: POST /task answers with the task in
# the same round trip.
_INSERT_RETURNS = "RETURNING t.uid, t.namespace, t.unique_key"
assert queries.INSERT_TASKS.text.rstrip().endswith(_INSERT_RETURNS)
INSERT_TASK_RETURNING: TextClause = text(
    queries.INSERT_TASKS.text.rstrip()[: -len(_INSERT_RETURNS)] + f"RETURNING {_T_TASK}"
)

# -- name: claim_tasks_for_workers --
# queries.CLAIM_TASKS for several workers of one queue at once (concurrent
# GET /tasks/next_scheduled): the same due rows in the same order (priority,
# eta), locked the same way (SKIP LOCKED), leased the same way; the n-th row
# goes to the n-th worker slot, so a worker id used twice (Eventix's default
# "default") still gets one task per request. Returns each row with its slot.
CLAIM_TASKS_FOR_WORKERS: TextClause = text(
    f"""
    WITH slots AS (
        SELECT s.worker_id, s.slot
        FROM unnest(CAST(:worker_ids AS text[])) WITH ORDINALITY AS s(worker_id, slot)
    ), next AS (
        SELECT c.uid, row_number() OVER (ORDER BY c.priority, c.eta) AS slot
        FROM (
            SELECT uid, priority, eta
            FROM eventix_task
            WHERE namespace = :namespace
              AND status IN ('scheduled', 'retry')
              AND eta <= now()
            ORDER BY priority, eta
            LIMIT cardinality(CAST(:worker_ids AS text[]))
            FOR UPDATE SKIP LOCKED
        ) AS c
    )
    UPDATE eventix_task AS t
    SET status = 'processing',
        worker_id = slots.worker_id,
        worker_expires = now() + make_interval(secs => :lease_seconds),
        attempts = t.attempts + 1,
        started_at = now(),
        updated_at = now(),
        revision = t.revision + 1
    FROM next JOIN slots ON slots.slot = next.slot
    WHERE t.uid = next.uid
    RETURNING next.slot AS claim_slot, {_T_TASK}
    """
)

# -- name: replace_tasks --
# Eventix's write-back (PUT /task/{uid}), for a batch of tasks: replace each
# document while its revision is still the one its writer read; a row whose
# revision moved on is not returned. Eventix counts retries down in max_retries;
# the row keeps the total and counts attempts up, so the remaining count is
# turned back into a total with the runs this status has used. The retry
# increment stays the row's own. A batch must not name a uid twice.
REPLACE_TASKS: TextClause = text(
    f"""
    UPDATE eventix_task AS t
    SET task = v.task, namespace = v.namespace, status = v.status, priority = v.priority,
        eta = v.eta, args = v.args, kwargs = v.kwargs, unique_key = v.unique_key,
        worker_id = v.worker_id, worker_expires = v.worker_expires, retry = v.retry,
        max_retries = v.remaining_retries + {failures_so_far_sql("v.status", "t.attempts")},
        error_eta_max = v.error_eta_max, store_result = v.store_result,
        result = v.result, error = v.error, result_expires = v.result_expires,
        error_expires = v.error_expires, expires = v.expires, operator = v.operator,
        finished_at = CASE WHEN v.status IN ('done', 'error') THEN now() END,
        updated_at = now(),
        revision = t.revision + 1
    FROM unnest(
        CAST(:uid AS uuid[]), CAST(:revision AS int[]), CAST(:task AS text[]),
        CAST(:namespace AS text[]), CAST(:status AS text[]), CAST(:priority AS int[]),
        CAST(:eta AS timestamptz[]), CAST(:args AS jsonb[]), CAST(:kwargs AS jsonb[]),
        CAST(:unique_key AS text[]), CAST(:worker_id AS text[]),
        CAST(:worker_expires AS timestamptz[]), CAST(:retry AS boolean[]),
        CAST(:remaining_retries AS int[]), CAST(:error_eta_max AS int[]),
        CAST(:store_result AS boolean[]), CAST(:result AS jsonb[]), CAST(:error AS jsonb[]),
        CAST(:result_expires AS int[]), CAST(:error_expires AS int[]),
        CAST(:expires AS timestamptz[]), CAST(:operator AS text[])
    ) AS v(uid, revision, task, namespace, status, priority, eta, args, kwargs, unique_key,
           worker_id, worker_expires, retry, remaining_retries, error_eta_max, store_result,
           result, error, result_expires, error_expires, expires, operator)
    WHERE t.uid = v.uid AND t.revision = v.revision
    RETURNING {_T_TASK}
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
        CAST(:args AS jsonb), CAST(:kwargs AS jsonb), :unique_key, :worker_id,
        :worker_expires, :retry, :remaining_retries, :error_eta_inc, :error_eta_max,
        :store_result, CAST(:result AS jsonb), CAST(:error AS jsonb), :result_expires,
        :error_expires, :expires, :operator, 'api',
        CASE WHEN :status IN ('done', 'error') THEN now() END
    )
    RETURNING {_TASK}
    """
)

# -- name: task_revision --
# The revision a write-back lost against (None: the task is gone).
TASK_REVISION: TextClause = text("SELECT revision FROM eventix_task WHERE uid = :uid")

# -- name: tasks_by_uids --
TASKS_BY_UIDS: TextClause = text(
    f"SELECT {_TASK} FROM eventix_task WHERE uid = ANY(CAST(:uids AS uuid[]))"
)

# -- name: delete_task --
DELETE_TASK: TextClause = text("DELETE FROM eventix_task WHERE uid = :uid RETURNING uid")

# -- name: reschedule_task --
# Eventix's reschedule: a failed or retrying task is due again at :eta (now when NULL).
RESCHEDULE_TASK: TextClause = text(
    f"""
    UPDATE eventix_task
    SET status = 'scheduled', eta = COALESCE(CAST(:eta AS timestamptz), now()),
        worker_id = NULL, worker_expires = NULL, expires = NULL, finished_at = NULL,
        updated_at = now(), revision = revision + 1
    WHERE uid = :uid AND status IN ('error', 'retry', 'cancelled')
    RETURNING {_TASK}
    """
)

# -- name: tasks_by_unique_key --
# Tasks with a unique key (in one queue, or in all when :namespace is NULL) whose
# status is one of :stati, newest first.
TASKS_BY_UNIQUE_KEY: TextClause = text(
    f"""
    SELECT {_TASK} FROM eventix_task
    WHERE unique_key = :unique_key
      AND (CAST(:namespace AS text) IS NULL OR namespace = :namespace)
      AND status = ANY(CAST(:stati AS text[]))
    ORDER BY created_at DESC, uid
    LIMIT :limit
    """
)

# -- name: namespaces --
# Every queue name, by a loose index scan: one index probe per queue, however many rows.
NAMESPACES: TextClause = text(
    """
    WITH RECURSIVE ns(name) AS (
        (SELECT namespace FROM eventix_task ORDER BY namespace LIMIT 1)
        UNION ALL
        SELECT (SELECT t.namespace FROM eventix_task AS t
                WHERE t.namespace > ns.name ORDER BY t.namespace LIMIT 1)
        FROM ns WHERE ns.name IS NOT NULL
    )
    SELECT name FROM ns WHERE name IS NOT NULL
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

#: Columns a listing may sort or filter on, by their Eventix names.
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
# columns, in the requested order (``status_id`` is Eventix's status rank), uid last.
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


# -- Triggers ---------------------------------------------------------------------

_TRIGGER_COLUMNS = """
    uid, name, k8s_namespace, k8s_name, generation, event_name, filter, template,
    fired_count, ignored_count, failed_count, last_fired_at, last_error, last_error_at,
    created_at, updated_at
"""

# -- name: upsert_trigger --
# Create or update a trigger from its resource; its counters are kept, and its last
# error is forgotten when a new generation of the spec arrives.
UPSERT_TRIGGER: TextClause = text(
    f"""
    INSERT INTO eventix_trigger AS tr (
        uid, name, k8s_namespace, k8s_name, generation, event_name, filter, template
    ) VALUES (
        :uid, :name, :k8s_namespace, :k8s_name, :generation, :event_name,
        CAST(:filter AS jsonb), CAST(:template AS jsonb)
    )
    ON CONFLICT (uid) DO UPDATE SET
        name = EXCLUDED.name,
        k8s_namespace = EXCLUDED.k8s_namespace,
        k8s_name = EXCLUDED.k8s_name,
        generation = EXCLUDED.generation,
        event_name = EXCLUDED.event_name,
        filter = EXCLUDED.filter,
        template = EXCLUDED.template,
        last_error = CASE WHEN tr.generation = EXCLUDED.generation THEN tr.last_error END,
        last_error_at = CASE WHEN tr.generation = EXCLUDED.generation
                             THEN tr.last_error_at END,
        updated_at = now()
    RETURNING {_TRIGGER_COLUMNS}
    """
)

# -- name: get_trigger --
GET_TRIGGER: TextClause = text(f"SELECT {_TRIGGER_COLUMNS} FROM eventix_trigger WHERE uid = :uid")

# -- name: delete_trigger --
DELETE_TRIGGER: TextClause = text("DELETE FROM eventix_trigger WHERE uid = :uid RETURNING uid")

# -- name: triggers_for_event --
# Every trigger registered for an event name, and whether the payload passes its
# filter (JSONB containment: each key of the filter must hold the same value).
TRIGGERS_FOR_EVENT: TextClause = text(
    f"""
    SELECT {_TRIGGER_COLUMNS},
           (filter IS NULL OR CAST(:payload AS jsonb) @> filter) AS matches
    FROM eventix_trigger
    WHERE event_name = :event_name
    ORDER BY name, uid
    """
)

# -- name: triggers_for_events --
# TRIGGERS_FOR_EVENT for a batch of events (concurrent POST /event): each
# trigger of each event's name, with the event's slot and whether its payload
# passes the trigger's filter.
TRIGGERS_FOR_EVENTS: TextClause = text(
    f"""
    SELECT e.slot AS event_slot,
           {", ".join("tr." + c.strip() for c in _TRIGGER_COLUMNS.split(","))},
           (tr.filter IS NULL OR e.payload @> tr.filter) AS matches
    FROM unnest(CAST(:event_name AS text[]), CAST(:payload AS jsonb[]))
        WITH ORDINALITY AS e(event_name, payload, slot)
    JOIN eventix_trigger AS tr ON tr.event_name = e.event_name
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
    SELECT {_TRIGGER_COLUMNS} FROM eventix_trigger
    WHERE k8s_name IS NOT NULL AND updated_at >= :since
    ORDER BY updated_at
    """
)
