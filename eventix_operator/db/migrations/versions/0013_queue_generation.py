"""The generation of the EventixQueue that configures a queue, on its settings row.

The status sync writes an EventixQueue's status from the row alone (as it does an
EventixSchedule's or an EventixTrigger's from theirs), so the row keeps the
``metadata.generation`` the operator applied: the sync's ``observedGeneration``
then says which spec the settings it shows are. A nullable column: adding it
rewrites nothing, and a row the CLI or the REST API made (no resource) has none.
The operator applies every resource again when it starts (kopf's resume), which
fills it for rows written before this revision.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("eventix_queue", sa.Column("k8s_generation", sa.Integer()))


def downgrade() -> None:
    op.drop_column("eventix_queue", "k8s_generation")
