"""Schedule table, and indexes for status sync and schedule runs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eventix_schedule",
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("k8s_namespace", sa.Text(), nullable=False),
        sa.Column("k8s_name", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("time_zone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("suspend", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("concurrency_policy", sa.Text(), server_default="Allow", nullable=False),
        sa.Column("starting_deadline_seconds", sa.Integer(), nullable=True),
        sa.Column("catch_up", sa.Text(), server_default="Latest", nullable=False),
        sa.Column("max_catch_up_runs", sa.Integer(), server_default="100", nullable=False),
        sa.Column(
            "successful_runs_history_limit", sa.Integer(), server_default="3", nullable=False
        ),
        sa.Column("failed_runs_history_limit", sa.Integer(), server_default="1", nullable=False),
        sa.Column("template", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_tick", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_tick", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "catch_up IN ('Skip', 'Latest', 'All')", name=op.f("ck_eventix_schedule_catch_up")
        ),
        sa.CheckConstraint(
            "concurrency_policy IN ('Allow', 'Forbid', 'Replace')",
            name=op.f("ck_eventix_schedule_concurrency_policy"),
        ),
        sa.CheckConstraint(
            "max_catch_up_runs >= 1", name=op.f("ck_eventix_schedule_max_catch_up_runs")
        ),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_eventix_schedule")),
    )
    op.create_index(
        "ix_eventix_schedule_due",
        "eventix_schedule",
        ["next_tick"],
        unique=False,
        postgresql_where=sa.text("NOT suspend AND error IS NULL"),
    )
    op.create_index(
        "ix_eventix_task_k8s_updated",
        "eventix_task",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("k8s_uid IS NOT NULL"),
    )
    op.create_index(
        "ix_eventix_task_schedule_runs",
        "eventix_task",
        ["schedule_uid", "status"],
        unique=False,
        postgresql_where=sa.text("schedule_uid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_eventix_task_schedule_runs",
        table_name="eventix_task",
        postgresql_where=sa.text("schedule_uid IS NOT NULL"),
    )
    op.drop_index(
        "ix_eventix_task_k8s_updated",
        table_name="eventix_task",
        postgresql_where=sa.text("k8s_uid IS NOT NULL"),
    )
    op.drop_index(
        "ix_eventix_schedule_due",
        table_name="eventix_schedule",
        postgresql_where=sa.text("NOT suspend AND error IS NULL"),
    )
    op.drop_table("eventix_schedule")
