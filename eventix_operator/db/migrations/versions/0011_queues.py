"""Queue settings: pause, concurrency and rate limits, retention (#15).

``eventix_queue`` holds one row per queue that has settings; a queue without a
row behaves as before. The claim consults it (eventix_operator/db/statements.py,
``_claim``): a paused queue is never claimed; a queue with a limit is claimed
under a row lock on its settings row, taken by ``eventix_queue_allowance``.

The allowance is a VOLATILE function on purpose: in READ COMMITTED each query in
it takes a fresh snapshot, so the count of a queue's running tasks it makes after
the row lock was granted sees every task the claim that held the lock before it
committed. Counted in the claim statement itself, with the statement's snapshot
(taken before the wait), those tasks would be invisible and racing claims would
exceed the limit together.

``recent_starts`` is the rate limit's state: the times of the queue's newest
``rate_count`` starts (the claims' ``now()``, which is also the tasks'
``started_at``). A claim may start as many tasks as the log holds fewer than
``rate_count`` starts newer than ``now() - rate_per_seconds``: then no window of
``rate_per_seconds`` holds more than ``rate_count`` starts, whatever the order in
which racing claims commit. Older entries never decide anything and are dropped.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ALLOWANCE_FUNCTION = """
CREATE FUNCTION eventix_queue_allowance(queues text[], wanted integer, skip_locked boolean)
RETURNS TABLE (queue_name text, allowance integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    limited text;
    s record;
    n integer;
BEGIN
    -- Locked in name order, so two claims of the same queues never deadlock. A claim
    -- of several queues skips a limited queue whose row another claim holds (it gets
    -- nothing of it this time) rather than wait: it never waits on another queue's
    -- limit. A claim of that queue alone waits its turn.
    FOR limited IN
        SELECT q.name FROM eventix_queue AS q
        WHERE q.name = ANY(queues)
          AND (q.concurrency_limit IS NOT NULL OR q.rate_count IS NOT NULL)
        ORDER BY q.name
    LOOP
        IF skip_locked THEN
            SELECT q.name, q.paused, q.concurrency_limit, q.rate_count, q.rate_per_seconds,
                   q.recent_starts
            INTO s FROM eventix_queue AS q WHERE q.name = limited FOR UPDATE SKIP LOCKED;
        ELSE
            SELECT q.name, q.paused, q.concurrency_limit, q.rate_count, q.rate_per_seconds,
                   q.recent_starts
            INTO s FROM eventix_queue AS q WHERE q.name = limited FOR UPDATE;
        END IF;
        IF NOT FOUND THEN
            queue_name := limited;
            allowance := 0;
            RETURN NEXT;
            CONTINUE;
        END IF;
        n := wanted;
        IF s.paused THEN
            n := 0;
        END IF;
        IF n > 0 AND s.concurrency_limit IS NOT NULL THEN
            n := LEAST(n, s.concurrency_limit - (
                SELECT count(*) FROM eventix_task AS t
                WHERE t.namespace = s.name AND t.status = 'processing')::integer);
        END IF;
        IF n > 0 AND s.rate_count IS NOT NULL THEN
            n := LEAST(n, s.rate_count - (
                SELECT count(*) FROM unnest(s.recent_starts) AS r(at)
                WHERE r.at > now() - make_interval(secs => s.rate_per_seconds))::integer);
        END IF;
        queue_name := s.name;
        allowance := GREATEST(n, 0);
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "eventix_queue",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        sa.Column("rate_count", sa.Integer(), nullable=True),
        sa.Column("rate_per_seconds", sa.Float(), nullable=True),
        sa.Column("retain_succeeded_seconds", sa.Integer(), nullable=True),
        sa.Column("retain_failed_seconds", sa.Integer(), nullable=True),
        sa.Column(
            "recent_starts",
            postgresql.ARRAY(sa.DateTime(timezone=True)),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("k8s_namespace", sa.Text(), nullable=True),
        sa.Column("k8s_name", sa.Text(), nullable=True),
        sa.Column("k8s_uid", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "concurrency_limit IS NULL OR concurrency_limit >= 1",
            name=op.f("ck_eventix_queue_concurrency_limit"),
        ),
        sa.CheckConstraint(
            "(rate_count IS NULL) = (rate_per_seconds IS NULL)"
            " AND (rate_count IS NULL OR (rate_count >= 1 AND rate_per_seconds > 0))",
            name=op.f("ck_eventix_queue_rate"),
        ),
        sa.CheckConstraint(
            "(retain_succeeded_seconds IS NULL OR retain_succeeded_seconds >= 0)"
            " AND (retain_failed_seconds IS NULL OR retain_failed_seconds >= 0)",
            name=op.f("ck_eventix_queue_retention"),
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_eventix_queue")),
    )
    op.execute(ALLOWANCE_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS eventix_queue_allowance(text[], integer, boolean)")
    op.drop_table("eventix_queue")
