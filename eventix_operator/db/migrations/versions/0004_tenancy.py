"""Tenancy: unique keys merge within one Kubernetes namespace, triggers see the events of
their namespace's queues, a schedule says why it stopped.

The pending unique-key index gains ``COALESCE(k8s_namespace, '')``: a resource's task
merges only with tasks of its own namespace, and tasks of no namespace (REST API,
client, CLI) only with one another. The new index is finer than the old one, so
building it cannot fail; building it reads the task table once and blocks writes to
it meanwhile (as 0001's indexes did). Downgrading fails while two pending tasks of
one queue share a key across namespaces.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PENDING_WITH_KEY = "unique_key IS NOT NULL AND status IN ('scheduled', 'retry')"


def upgrade() -> None:
    op.drop_index(
        "uq_eventix_task_pending_unique_key",
        table_name="eventix_task",
        postgresql_where=sa.text(PENDING_WITH_KEY),
    )
    op.create_index(
        "uq_eventix_task_pending_unique_key",
        "eventix_task",
        ["namespace", "unique_key", sa.text("COALESCE(k8s_namespace, '')")],
        unique=True,
        postgresql_where=sa.text(PENDING_WITH_KEY),
    )
    op.add_column("eventix_trigger", sa.Column("queue_scope", postgresql.ARRAY(sa.Text())))
    op.add_column("eventix_schedule", sa.Column("error_reason", sa.Text()))


def downgrade() -> None:
    op.drop_column("eventix_schedule", "error_reason")
    op.drop_column("eventix_trigger", "queue_scope")
    op.drop_index(
        "uq_eventix_task_pending_unique_key",
        table_name="eventix_task",
        postgresql_where=sa.text(PENDING_WITH_KEY),
    )
    op.create_index(
        "uq_eventix_task_pending_unique_key",
        "eventix_task",
        ["namespace", "unique_key"],
        unique=True,
        postgresql_where=sa.text(PENDING_WITH_KEY),
    )
