"""Leadership leases of operator replicas; autovacuum settings fit for a queue.

``eventix_lease`` replaces the session advisory locks that chose the replica
syncing status and scaling pools: through a transaction pooler a session lock
stays on a server connection that other clients are given, and two replicas
could both believe they lead.

The task table changes a few rows many times (a task is inserted, claimed and
finished within seconds) while it keeps a long history of finished rows. With
PostgreSQL's defaults, autovacuum waits for dead rows worth 20 % of the table:
with ten million finished rows kept, two million dead ones pile up in the hot
part before it runs, and claims scan past them. As pgqueuer's ``autovac``
does, vacuum after 1 % (at least 1,000 rows), analyze after 2 %, and let
autovacuum run unthrottled on this table. Inserts trigger a vacuum the same way
(PostgreSQL 13+), which keeps the visibility map of the history current.
pgqueuer also lowers the fill factor for HOT updates; here every status change
touches indexed columns (the partial indexes' predicates), so no update can be
HOT and a lower fill factor would only cost space.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUEUE_AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_vacuum_insert_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "500",
    "autovacuum_vacuum_cost_limit": "10000",
    "autovacuum_vacuum_cost_delay": "0",
}


def upgrade() -> None:
    op.create_table(
        "eventix_lease",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "acquired_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "renewed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_eventix_lease")),
    )
    options = ", ".join(f"{key} = {value}" for key, value in QUEUE_AUTOVACUUM.items())
    op.execute(f"ALTER TABLE eventix_task SET ({options})")


def downgrade() -> None:
    op.execute(f"ALTER TABLE eventix_task RESET ({', '.join(QUEUE_AUTOVACUUM)})")
    op.drop_table("eventix_lease")
