"""Task table, its indexes, and the notification that wakes workers.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOTIFY_FUNCTION = """
CREATE FUNCTION eventix_task_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventix_task_ready', q.namespace)
    FROM (SELECT DISTINCT namespace FROM new_rows
          WHERE status IN ('scheduled', 'retry')) AS q;
    RETURN NULL;
END
$$
"""

NOTIFY_TRIGGER = """
CREATE TRIGGER eventix_task_notify_ready
AFTER INSERT ON eventix_task
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION eventix_task_notify_ready()
"""


def upgrade() -> None:
    op.create_table(
        "eventix_task",
        sa.Column("uid", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), server_default="default", nullable=False),
        sa.Column("status", sa.Text(), server_default="scheduled", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "eta", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "scheduled", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "kwargs",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("unique_key", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), server_default="1", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("worker_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_eta_inc", sa.Integer(), server_default="15", nullable=False),
        sa.Column("error_eta_max", sa.Integer(), server_default="300", nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=True),
        sa.Column("store_result", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("result_expires", sa.Integer(), server_default="604800", nullable=True),
        sa.Column("error_expires", sa.Integer(), nullable=True),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("operator", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), server_default="api", nullable=False),
        sa.Column("k8s_namespace", sa.Text(), nullable=True),
        sa.Column("k8s_name", sa.Text(), nullable=True),
        sa.Column("k8s_uid", sa.Text(), nullable=True),
        sa.Column("schedule_uid", sa.Text(), nullable=True),
        sa.Column("schedule_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "source IN ('api', 'client', 'cli', 'k8s', 'schedule', 'trigger')",
            name=op.f("ck_eventix_task_source"),
        ),
        sa.CheckConstraint(
            "status IN ('scheduled', 'processing', 'done', 'error', 'retry', 'cancelled')",
            name=op.f("ck_eventix_task_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_eventix_task_attempts")),
        sa.CheckConstraint(
            "error_eta_inc >= 0 AND error_eta_max >= 0", name=op.f("ck_eventix_task_backoff")
        ),
        sa.CheckConstraint(
            "max_retries IS NULL OR max_retries >= 0", name=op.f("ck_eventix_task_max_retries")
        ),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_eventix_task")),
    )
    op.create_index(
        "ix_eventix_task_expires",
        "eventix_task",
        ["expires"],
        unique=False,
        postgresql_where=sa.text("expires IS NOT NULL"),
    )
    op.create_index(
        "ix_eventix_task_lease",
        "eventix_task",
        ["worker_expires"],
        unique=False,
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.create_index(
        "ix_eventix_task_namespace_status", "eventix_task", ["namespace", "status"], unique=False
    )
    op.create_index(
        "ix_eventix_task_ready",
        "eventix_task",
        ["namespace", "priority", "eta"],
        unique=False,
        postgresql_where=sa.text("status IN ('scheduled', 'retry')"),
    )
    op.create_index(
        "ix_eventix_task_unique_key",
        "eventix_task",
        ["unique_key"],
        unique=False,
        postgresql_where=sa.text("unique_key IS NOT NULL"),
    )
    op.create_index(
        "ix_eventix_task_worker_id",
        "eventix_task",
        ["worker_id"],
        unique=False,
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.create_index(
        "uq_eventix_task_k8s_uid",
        "eventix_task",
        ["k8s_uid"],
        unique=True,
        postgresql_where=sa.text("k8s_uid IS NOT NULL AND source = 'k8s'"),
    )
    op.create_index(
        "uq_eventix_task_pending_unique_key",
        "eventix_task",
        ["namespace", "unique_key"],
        unique=True,
        postgresql_where=sa.text("unique_key IS NOT NULL AND status IN ('scheduled', 'retry')"),
    )
    op.create_index(
        "uq_eventix_task_schedule_tick",
        "eventix_task",
        ["schedule_uid", "schedule_time"],
        unique=True,
        postgresql_where=sa.text("schedule_uid IS NOT NULL"),
    )
    # One notification per statement and queue, not per row: a bulk enqueue of
    # 100k tasks wakes each worker once.
    op.execute(NOTIFY_FUNCTION)
    op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS eventix_task_notify_ready ON eventix_task")
    op.execute("DROP FUNCTION IF EXISTS eventix_task_notify_ready()")
    op.drop_index(
        "uq_eventix_task_schedule_tick",
        table_name="eventix_task",
        postgresql_where=sa.text("schedule_uid IS NOT NULL"),
    )
    op.drop_index(
        "uq_eventix_task_pending_unique_key",
        table_name="eventix_task",
        postgresql_where=sa.text("unique_key IS NOT NULL AND status IN ('scheduled', 'retry')"),
    )
    op.drop_index(
        "uq_eventix_task_k8s_uid",
        table_name="eventix_task",
        postgresql_where=sa.text("k8s_uid IS NOT NULL AND source = 'k8s'"),
    )
    op.drop_index(
        "ix_eventix_task_worker_id",
        table_name="eventix_task",
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.drop_index(
        "ix_eventix_task_unique_key",
        table_name="eventix_task",
        postgresql_where=sa.text("unique_key IS NOT NULL"),
    )
    op.drop_index(
        "ix_eventix_task_ready",
        table_name="eventix_task",
        postgresql_where=sa.text("status IN ('scheduled', 'retry')"),
    )
    op.drop_index("ix_eventix_task_namespace_status", table_name="eventix_task")
    op.drop_index(
        "ix_eventix_task_lease",
        table_name="eventix_task",
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.drop_index(
        "ix_eventix_task_expires",
        table_name="eventix_task",
        postgresql_where=sa.text("expires IS NOT NULL"),
    )
    op.drop_table("eventix_task")
