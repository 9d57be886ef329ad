"""A claim of a full or paused queue takes no lock (docs/queues.md, "How the claim
enforces them").

``eventix_queue_allowance`` (migration 0011) took the row lock of each limited
queue before counting. Every claim that found the queue full still held that lock
until it committed, and made its transaction write (a row lock is a write), so the
workers woken by a freed slot queued up behind each other for it, each committing
in turn, while the one claim that could use the slot waited among them.

Now the function first counts without the lock, with a fresh snapshot of its own:
a queue that this count finds full (or paused) gets 0 at once, and only one that
has room is locked and counted again; the locked count decides, as before. A count
without the lock can only be stale towards "full": a slot freed after it is
announced on the ready channel at that commit (``freeing`` in statements.py), so
the claimant tries again.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ALLOWANCE_FUNCTION = """
CREATE OR REPLACE FUNCTION eventix_queue_allowance(
    queues text[], wanted integer, skip_locked boolean)
RETURNS TABLE (queue_name text, allowance integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    limited text;
    locked boolean;
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
        -- First without the lock: a queue found full gets 0 and is not locked. Then,
        -- if it has room, under the lock, whose count decides.
        FOREACH locked IN ARRAY ARRAY[false, true] LOOP
            IF NOT locked THEN
                SELECT q.name, q.paused, q.concurrency_limit, q.rate_count,
                       q.rate_per_seconds, q.recent_starts
                INTO s FROM eventix_queue AS q WHERE q.name = limited;
            ELSIF skip_locked THEN
                SELECT q.name, q.paused, q.concurrency_limit, q.rate_count,
                       q.rate_per_seconds, q.recent_starts
                INTO s FROM eventix_queue AS q WHERE q.name = limited FOR UPDATE SKIP LOCKED;
            ELSE
                SELECT q.name, q.paused, q.concurrency_limit, q.rate_count,
                       q.rate_per_seconds, q.recent_starts
                INTO s FROM eventix_queue AS q WHERE q.name = limited FOR UPDATE;
            END IF;
            IF NOT FOUND THEN
                n := 0;
                EXIT;
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
            EXIT WHEN n <= 0;
        END LOOP;
        queue_name := limited;
        allowance := GREATEST(n, 0);
        RETURN NEXT;
    END LOOP;
END
$$
"""


def upgrade() -> None:
    op.execute(ALLOWANCE_FUNCTION)


def downgrade() -> None:
    from importlib import import_module

    previous = import_module("eventix_operator.db.migrations.versions.0011_queues")
    op.execute(previous.ALLOWANCE_FUNCTION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
