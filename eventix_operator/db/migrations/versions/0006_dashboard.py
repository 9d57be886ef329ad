"""What the web dashboard reads: listing indexes, finished-time index, throughput
per minute, worker-pool state, joint statistics of queue and status.

- ``ix_eventix_task_listing`` (namespace, status, source, created_at, uid)
  replaces ``ix_eventix_task_namespace_status``: the same prefix, plus the keyset
  order of the task list, so each (queue, status, source) is one backward range
  scan and a capped count is an index range.
- ``ix_eventix_task_task_listing`` (task, status, source, created_at, uid): the
  list filtered by task name.
- ``ix_eventix_task_finished`` (finished_at, partial): one closed minute's
  finished rows, counted once into ``eventix_throughput``.
- ``eventix_pool`` / ``eventix_pool_sample``: what the operator's scaler saw and
  decided, for the dashboard (the API has no Kubernetes access).
- ``eventix_task_queue_status``: extended statistics (most common values of
  namespace and status together), the estimate the overview shows past its cap.

The indexes are built with plain ``CREATE INDEX`` in the migration's transaction,
as the earlier ones: writes to ``eventix_task`` wait while they build (seconds
per million rows). On a large live table, build them beforehand with ``CREATE
INDEX CONCURRENTLY`` under the same names; this migration then only drops the
old index (``IF NOT EXISTS`` makes it skip the ones that exist).

Revision ID: 0006
Revises: 0008 for now, the last one on main (0005 once #13's migration is in)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
# After main's 0008 (trace context) for now, so that there is one head; 0005 (#13)
# once it is in: the lead relinks the chain on merge.
down_revision = "0005"
branch_labels = None
depends_on = None

STATISTICS = "eventix_task_queue_status"


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_eventix_task_listing "
        "ON eventix_task (namespace, status, source, created_at, uid)"
    )
    op.execute("DROP INDEX IF EXISTS ix_eventix_task_namespace_status")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_eventix_task_task_listing "
        "ON eventix_task (task, status, source, created_at, uid)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_eventix_task_finished "
        "ON eventix_task (finished_at) WHERE finished_at IS NOT NULL"
    )
    op.execute(
        f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} (mcv) ON namespace, status FROM eventix_task"
    )

    op.create_table(
        "eventix_throughput",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("minute", "namespace", name=op.f("pk_eventix_throughput")),
    )
    op.create_table(
        "eventix_pool",
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("k8s_namespace", sa.Text(), nullable=False),
        sa.Column("k8s_name", sa.Text(), nullable=False),
        sa.Column("target_kind", sa.Text(), nullable=False),
        sa.Column("target_name", sa.Text(), nullable=False),
        sa.Column("queues", sa.ARRAY(sa.Text()), nullable=False),
        sa.Column("min_replicas", sa.Integer(), nullable=False),
        sa.Column("max_replicas", sa.Integer(), nullable=False),
        sa.Column("tasks_per_replica", sa.Integer(), nullable=False),
        sa.Column("activation_tasks", sa.Integer(), nullable=False),
        sa.Column("cooldown_seconds", sa.Float(), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=True),
        sa.Column("current_replicas", sa.Integer(), nullable=True),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("busy_workers", sa.Integer(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("last_scale_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_eventix_pool")),
    )
    op.create_table(
        "eventix_pool_sample",
        sa.Column("pool_uid", sa.Text(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("desired_replicas", sa.Integer(), nullable=True),
        sa.Column("current_replicas", sa.Integer(), nullable=True),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pool_uid", "minute", name=op.f("pk_eventix_pool_sample")),
    )


def downgrade() -> None:
    op.drop_table("eventix_pool_sample")
    op.drop_table("eventix_pool")
    op.drop_table("eventix_throughput")
    op.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
    op.execute("DROP INDEX IF EXISTS ix_eventix_task_finished")
    op.execute("DROP INDEX IF EXISTS ix_eventix_task_task_listing")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_eventix_task_namespace_status "
        "ON eventix_task (namespace, status)"
    )
    op.execute("DROP INDEX IF EXISTS ix_eventix_task_listing")
