"""The enqueuer's trace context on each task, for OpenTelemetry (docs/observability.md).

A nullable jsonb column: adding it rewrites nothing and takes its lock only for a
moment; rows enqueued untraced, and every row from before, keep NULL.

Revision ID: 0008
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("eventix_task", sa.Column("trace_context", postgresql.JSONB()))


def downgrade() -> None:
    op.drop_column("eventix_task", "trace_context")
