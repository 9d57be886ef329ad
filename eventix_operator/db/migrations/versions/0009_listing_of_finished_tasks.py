"""The dashboard's listing indexes hold finished tasks only.

``ix_eventix_task_listing`` and ``ix_eventix_task_task_listing`` (migration 0006)
held every row. A task's row changes state three times on the queue's hot path
(enqueued, claimed, written back), and as no such update can be HOT (the status is
in the ready index's predicate), each change added an entry to both: 6 of the 14
index entries a plain task cost, and measured with pgbench on the worker's own
claim and write-back statements, 40 % of their rate and of bulk enqueue's
(bench/README.md, "#14"). Restricted to finished rows (done, error, cancelled) they
take one entry each per task, at the write-back; the dashboard lists pending rows
from the ready index and running ones from the lease index, both small.

Built with plain ``CREATE INDEX`` in the migration's transaction, as 0006 did:
writes to ``eventix_task`` wait while they build (seconds per million rows).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: As in eventix_operator/db/schema.py at this revision (migrations do not import it).
FINISHED = "status IN ('done', 'error', 'cancelled')"
INDEXES = {
    "ix_eventix_task_listing": "namespace, status, source, created_at, uid",
    "ix_eventix_task_task_listing": "task, status, source, created_at, uid",
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON eventix_task ({columns}) WHERE {FINISHED}")


def downgrade() -> None:
    for name, columns in INDEXES.items():
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE INDEX {name} ON eventix_task ({columns})")
