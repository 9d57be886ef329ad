"""Cancelling running tasks (docs/cancelling.md): who asked and when, on the row.

Two nullable columns: adding them rewrites nothing and takes the table's lock only
for a moment. A running row with ``cancel_requested_at`` set is one its worker must
stop (it hears the uid on the ``eventix_task_cancel`` channel, or finds it at its
next heartbeat or look); ``cancelled_by`` (cli, api, dashboard, resource deletion)
is what its error says once it ends ``cancelled``.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("eventix_task", sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
    op.add_column("eventix_task", sa.Column("cancelled_by", sa.Text()))


def downgrade() -> None:
    op.drop_column("eventix_task", "cancelled_by")
    op.drop_column("eventix_task", "cancel_requested_at")
