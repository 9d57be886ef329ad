"""Trigger table: declarative triggers that turn posted events into tasks.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eventix_trigger",
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("k8s_namespace", sa.Text(), nullable=True),
        sa.Column("k8s_name", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False),
        sa.Column("filter", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("template", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fired_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("ignored_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.CheckConstraint(
            "filter IS NULL OR jsonb_typeof(filter) = 'object'",
            name=op.f("ck_eventix_trigger_filter_is_object"),
        ),
        sa.CheckConstraint(
            "jsonb_typeof(template) = 'object'", name=op.f("ck_eventix_trigger_template_is_object")
        ),
        sa.PrimaryKeyConstraint("uid", name=op.f("pk_eventix_trigger")),
    )
    op.create_index(
        "ix_eventix_trigger_event_name", "eventix_trigger", ["event_name"], unique=False
    )
    op.create_index(
        "ix_eventix_trigger_k8s_name",
        "eventix_trigger",
        ["k8s_namespace", "k8s_name"],
        unique=False,
        postgresql_where=sa.text("k8s_name IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_eventix_trigger_k8s_name",
        table_name="eventix_trigger",
        postgresql_where=sa.text("k8s_name IS NOT NULL"),
    )
    op.drop_index("ix_eventix_trigger_event_name", table_name="eventix_trigger")
    op.drop_table("eventix_trigger")
