"""Tables of eventix-operator, as SQLAlchemy Core metadata.

These declarations are what Alembic migrations must produce; the migration
test compares the two. The task table keeps Eventix's column names so that the
Eventix-compatible REST API and the native queue share rows.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TASK_STATUSES = ("scheduled", "processing", "done", "error", "retry", "cancelled")
TASK_SOURCES = ("api", "client", "cli", "k8s", "schedule", "trigger")

#: The predicate that makes a row "pending": claimable once due, mergeable by unique key.
PENDING_STATUSES = ("scheduled", "retry")
PENDING_PREDICATE = "status IN ('scheduled', 'retry')"
#: Rows that will not change again but by a retry or the purge: what the listing
#: indexes hold (a pending or running row would cost each of them an entry on the
#: enqueue, the claim and the write-back, the queue's hot path).
FINISHED_STATUSES = ("done", "error", "cancelled")
FINISHED_PREDICATE = "status IN ('done', 'error', 'cancelled')"

task_table = Table(
    "eventix_task",
    metadata,
    Column("uid", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("task", Text, nullable=False),
    # The Eventix queue name. Eventix calls it `namespace`; it is not a Kubernetes namespace.
    Column("namespace", Text, nullable=False, server_default="default"),
    Column("status", Text, nullable=False, server_default="scheduled"),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("eta", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("scheduled", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("args", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("kwargs", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("unique_key", Text),
    Column("revision", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # lease
    Column("worker_id", Text),
    Column("worker_expires", DateTime(timezone=True)),
    # retries
    Column("retry", Boolean, nullable=False, server_default=text("true")),
    Column("max_retries", Integer),  # NULL: retry forever, as Eventix
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error_eta_inc", Integer, nullable=False, server_default="15"),
    Column("error_eta_max", Integer, nullable=False, server_default="300"),
    Column("timeout_seconds", Float),
    # results
    Column("store_result", Boolean, nullable=False, server_default=text("true")),
    Column("result", JSONB),
    Column("error", JSONB),
    Column("result_expires", Integer, server_default="604800"),  # seconds; NULL keeps
    Column("error_expires", Integer),  # seconds; NULL keeps
    Column("expires", DateTime(timezone=True)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    # origin
    Column("operator", Text),
    Column("source", Text, nullable=False, server_default="api"),
    Column("k8s_namespace", Text),
    Column("k8s_name", Text),
    Column("k8s_uid", Text),
    Column("schedule_uid", Text),
    Column("schedule_time", DateTime(timezone=True)),
    # The enqueuer's OpenTelemetry context: propagation headers as a JSON object
    # (eventix_operator.tracing); NULL when it was not traced.
    Column("trace_context", JSONB),
    # A cancel asked for while the task ran (migration 0010): its worker stops it and
    # records it `cancelled`; who asked (cli, api, dashboard, resource deletion).
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("cancelled_by", Text),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in TASK_STATUSES) + ")", name="status"
    ),
    CheckConstraint("source IN (" + ", ".join(f"'{s}'" for s in TASK_SOURCES) + ")", name="source"),
    CheckConstraint("attempts >= 0", name="attempts"),
    CheckConstraint("max_retries IS NULL OR max_retries >= 0", name="max_retries"),
    CheckConstraint("error_eta_inc >= 0 AND error_eta_max >= 0", name="backoff"),
    # Claim order among ready rows; partial, so done rows cost the index nothing.
    Index(
        "ix_eventix_task_ready",
        "namespace",
        "priority",
        "eta",
        postgresql_where=text(PENDING_PREDICATE),
    ),
    Index(
        "ix_eventix_task_unique_key", "unique_key", postgresql_where=text("unique_key IS NOT NULL")
    ),
    # Leases to recover and heartbeats to renew.
    Index(
        "ix_eventix_task_lease",
        "worker_expires",
        postgresql_where=text("status = 'processing'"),
    ),
    Index("ix_eventix_task_worker_id", "worker_id", postgresql_where=text("status = 'processing'")),
    Index("ix_eventix_task_expires", "expires", postgresql_where=text("expires IS NOT NULL")),
    # The dashboard's task list of finished tasks, newest first by keyset on
    # (created_at, uid): one backward range scan per (queue, status, source), which
    # also counts a queue's finished tasks of a state up to a cap. Partial: an index
    # that every row entered at each change of state (enqueue, claim, write-back)
    # cost the queue 40 % of its claim-and-complete rate (migration 0009). Pending
    # and running rows are listed from the ready and lease indexes.
    Index(
        "ix_eventix_task_listing",
        "namespace",
        "status",
        "source",
        "created_at",
        "uid",
        postgresql_where=text(FINISHED_PREDICATE),
    ),
    # The same list filtered by task name, one scan per (status, source).
    Index(
        "ix_eventix_task_task_listing",
        "task",
        "status",
        "source",
        "created_at",
        "uid",
        postgresql_where=text(FINISHED_PREDICATE),
    ),
    # Finished rows by time: what the dashboard's per-minute throughput is counted from.
    Index(
        "ix_eventix_task_finished",
        "finished_at",
        postgresql_where=text("finished_at IS NOT NULL"),
    ),
    # A schedule fires a tick at most once, whatever replicas or restarts do.
    Index(
        "uq_eventix_task_schedule_tick",
        "schedule_uid",
        "schedule_time",
        unique=True,
        postgresql_where=text("schedule_uid IS NOT NULL"),
    ),
    # What status sync reads: resource-backed rows changed since its last pass.
    Index(
        "ix_eventix_task_k8s_updated",
        "updated_at",
        postgresql_where=text("k8s_uid IS NOT NULL"),
    ),
    Index(
        "ix_eventix_task_schedule_runs",
        "schedule_uid",
        "status",
        postgresql_where=text("schedule_uid IS NOT NULL"),
    ),
    # One row per EventixTask resource: replayed create events change nothing.
    Index(
        "uq_eventix_task_k8s_uid",
        "k8s_uid",
        unique=True,
        postgresql_where=text("k8s_uid IS NOT NULL AND source = 'k8s'"),
    ),
)

#: Who may merge by unique key: tasks of the same Kubernetes namespace (its
#: resources, schedule ticks and triggers), or of none (the REST API, the client and
#: the CLI, which trust their caller). A tenancy boundary (docs/tenancy.md).
UNIQUE_KEY_SCOPE = "COALESCE(k8s_namespace, '')"

# One pending task per (queue, unique key, Kubernetes namespace): the target of
# INSERT ... ON CONFLICT, so a merge never crosses from one namespace's tasks to another's.
Index(
    "uq_eventix_task_pending_unique_key",
    task_table.c.namespace,
    task_table.c.unique_key,
    text(UNIQUE_KEY_SCOPE),
    unique=True,
    postgresql_where=text(f"unique_key IS NOT NULL AND {PENDING_PREDICATE}"),
)

SCHEDULE_POLICIES = ("Allow", "Forbid", "Replace")
CATCH_UP_POLICIES = ("Skip", "Latest", "All")

#: One row per EventixSchedule resource; its ticks are rows of ``eventix_task``
#: with ``schedule_uid`` and ``schedule_time`` set.
schedule_table = Table(
    "eventix_schedule",
    metadata,
    Column("uid", Text, primary_key=True),  # the resource's metadata.uid
    Column("k8s_namespace", Text, nullable=False),
    Column("k8s_name", Text, nullable=False),
    Column("generation", Integer, nullable=False, server_default="0"),
    Column("expression", Text, nullable=False),
    Column("time_zone", Text, nullable=False, server_default="UTC"),
    Column("suspend", Boolean, nullable=False, server_default=text("false")),
    Column("concurrency_policy", Text, nullable=False, server_default="Allow"),
    Column("starting_deadline_seconds", Integer),
    Column("catch_up", Text, nullable=False, server_default="Latest"),
    Column("max_catch_up_runs", Integer, nullable=False, server_default="100"),
    Column("successful_runs_history_limit", Integer, nullable=False, server_default="3"),
    Column("failed_runs_history_limit", Integer, nullable=False, server_default="1"),
    Column("template", JSONB, nullable=False),
    Column("error", Text),  # why the schedule cannot fire (bad expression or zone)
    Column("created_at", DateTime(timezone=True), nullable=False),  # the resource's creation
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_tick", DateTime(timezone=True)),
    Column("next_tick", DateTime(timezone=True)),
    # The Ready reason of ``error``: NULL is InvalidSchedule; QueueNotAllowed (tenancy).
    Column("error_reason", Text),
    CheckConstraint(
        "concurrency_policy IN (" + ", ".join(f"'{p}'" for p in SCHEDULE_POLICIES) + ")",
        name="concurrency_policy",
    ),
    CheckConstraint(
        "catch_up IN (" + ", ".join(f"'{p}'" for p in CATCH_UP_POLICIES) + ")", name="catch_up"
    ),
    CheckConstraint("max_catch_up_runs >= 1", name="max_catch_up_runs"),
    Index(
        "ix_eventix_schedule_due",
        "next_tick",
        postgresql_where=text("NOT suspend AND error IS NULL"),
    ),
)


#: Leadership among operator replicas: one row per job that one replica at a time
#: does (status sync and queue metrics, each worker pool's scaler), held by
#: ``holder`` until ``expires_at`` unless renewed (see :mod:`eventix_operator.db.leadership`).
lease_table = Table(
    "eventix_lease",
    metadata,
    Column("name", Text, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("acquired_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("renewed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: Finished tasks per minute and queue, counted once a minute has closed (by the
#: dashboard's process, see :func:`eventix_operator.db.dashboard.roll_up_throughput`):
#: a chart of the last hour reads 60 rows instead of counting every task finished in
#: it. The row with ``namespace = ''`` is every queue's total, written for each rolled
#: minute even when nothing finished: the newest one says how far counting has come.
throughput_table = Table(
    "eventix_throughput",
    metadata,
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("namespace", Text, primary_key=True),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
)

#: What the operator's scaler last saw and decided for each EventixWorkerPool: the
#: dashboard's view of pools (the API process has no Kubernetes access).
pool_table = Table(
    "eventix_pool",
    metadata,
    Column("uid", Text, primary_key=True),  # the resource's metadata.uid
    Column("k8s_namespace", Text, nullable=False),
    Column("k8s_name", Text, nullable=False),
    Column("target_kind", Text, nullable=False),
    Column("target_name", Text, nullable=False),
    Column("queues", ARRAY(Text), nullable=False),
    Column("min_replicas", Integer, nullable=False),
    Column("max_replicas", Integer, nullable=False),
    Column("tasks_per_replica", Integer, nullable=False),
    Column("activation_tasks", Integer, nullable=False),
    Column("cooldown_seconds", Float, nullable=False),
    Column("desired_replicas", Integer),
    Column("current_replicas", Integer),
    Column("queue_depth", Integer, nullable=False),
    Column("running", Integer, nullable=False),
    Column("busy_workers", Integer, nullable=False),
    Column("ready", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("last_scale_time", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: A pool's recent history, one row per minute: the replicas at the minute's last
#: look, and the deepest queue seen in it. Kept for a day.
pool_sample_table = Table(
    "eventix_pool_sample",
    metadata,
    Column("pool_uid", Text, primary_key=True),
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("desired_replicas", Integer),
    Column("current_replicas", Integer),
    Column("queue_depth", Integer, nullable=False),
    Column("running", Integer, nullable=False),
)

#: A queue's settings (issue #15), one row per queue that has any; a queue without
#: a row is unpaused, unlimited and keeps its tasks' own retention. The claim
#: consults it (see ``_claim`` in :mod:`.statements` and migration 0011, whose
#: ``eventix_queue_allowance`` function takes the row lock of a limited queue).
#: ``k8s_*`` name the EventixQueue resource that configures it, if one does, and the
#: generation of its spec that the row holds (migration 0013): the status sync's
#: ``observedGeneration``.
queue_table = Table(
    "eventix_queue",
    metadata,
    Column("name", Text, primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("concurrency_limit", Integer),  # tasks running at once, across all workers
    Column("rate_count", Integer),  # at most rate_count starts ...
    Column("rate_per_seconds", Float),  # ... per rate_per_seconds, across all workers
    Column("retain_succeeded_seconds", Integer),  # overrides a done task's result_expires
    Column("retain_failed_seconds", Integer),  # overrides a failed task's error_expires
    # The rate limit's state: the claim times of the newest rate_count starts.
    Column(
        "recent_starts", ARRAY(DateTime(timezone=True)), nullable=False, server_default=text("'{}'")
    ),
    Column("k8s_namespace", Text),
    Column("k8s_name", Text),
    Column("k8s_uid", Text),
    Column("k8s_generation", Integer),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "concurrency_limit IS NULL OR concurrency_limit >= 1", name="concurrency_limit"
    ),
    CheckConstraint(
        "(rate_count IS NULL) = (rate_per_seconds IS NULL)"
        " AND (rate_count IS NULL OR (rate_count >= 1 AND rate_per_seconds > 0))",
        name="rate",
    ),
    CheckConstraint(
        "(retain_succeeded_seconds IS NULL OR retain_succeeded_seconds >= 0)"
        " AND (retain_failed_seconds IS NULL OR retain_failed_seconds >= 0)",
        name="retention",
    ),
)
