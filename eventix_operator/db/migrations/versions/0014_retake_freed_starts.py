"""A write-back retakes the starts its own outcomes freed without the queue's lock
(docs/queues.md, "How the claim enforces them").

Under a concurrency limit every claim with room took the queue's row lock and held
it to its commit, and a worker's write-back (the outcome of a task and the claim of
its successor, one transaction) was four statements and a commit in a pipeline.
Now the write-back of successes is one statement (``COMPLETE_AND_CLAIM``), and
``eventix_queue_allowance`` takes ``ended``: the tasks that statement has just
recorded, from its own ``RETURNING`` (which the call depends on, so they are
recorded before it runs). Those tasks no longer count as running, whichever row
version the function's snapshot shows, and the starts they freed are retaken
with no lock: taking back what it freed leaves the queue's running count where it
was, whatever other claims do meanwhile. A claim under the lock counts those
tasks as running until the write-back commits, and their successors after; either
way the sum stays within the limit. A lowered limit still wins: the count without
the lock caps what is retaken, so a queue over its new limit shrinks as its tasks
end. A queue with a rate limit still takes the lock (every start goes in its log),
and a claim that wants more than it freed counts again under the lock.

The three-argument form stays, for workers of the previous release during a
rolling upgrade; it asks the new one with no ended tasks.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ALLOWANCE_FUNCTION = """
CREATE FUNCTION eventix_queue_allowance(
    queues text[], wanted integer, skip_locked boolean, ended uuid[])
RETURNS TABLE (queue_name text, allowance integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    limited text;
    locked boolean;
    s record;
    n integer;
    freed integer;
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
        -- First without the lock: a queue found full gets 0 and is not locked, and
        -- the starts this transaction freed are retaken. Then, if it wants more and
        -- has room, under the lock, whose count decides.
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
                    WHERE t.namespace = s.name AND t.status = 'processing'
                      AND t.uid <> ALL(ended))::integer);
            END IF;
            IF n > 0 AND s.rate_count IS NOT NULL THEN
                n := LEAST(n, s.rate_count - (
                    SELECT count(*) FROM unnest(s.recent_starts) AS r(at)
                    WHERE r.at > now() - make_interval(secs => s.rate_per_seconds))::integer);
            END IF;
            EXIT WHEN n <= 0;
            IF NOT locked AND s.rate_count IS NULL AND cardinality(ended) > 0 THEN
                freed := (
                    SELECT count(*) FROM eventix_task AS t
                    WHERE t.uid = ANY(ended) AND t.namespace = s.name)::integer;
                EXIT WHEN freed >= n;
            END IF;
        END LOOP;
        queue_name := limited;
        allowance := GREATEST(n, 0);
        RETURN NEXT;
    END LOOP;
END
$$
"""

#: The previous release's form, for its workers until they are replaced.
DELEGATING_FUNCTION = """
CREATE OR REPLACE FUNCTION eventix_queue_allowance(
    queues text[], wanted integer, skip_locked boolean)
RETURNS TABLE (queue_name text, allowance integer)
LANGUAGE sql VOLATILE AS $$
    SELECT * FROM eventix_queue_allowance(queues, wanted, skip_locked, '{}'::uuid[])
$$
"""


def upgrade() -> None:
    op.execute(ALLOWANCE_FUNCTION)
    op.execute(DELEGATING_FUNCTION)


def downgrade() -> None:
    from importlib import import_module

    previous = import_module(
        "eventix_operator.db.migrations.versions.0012_allowance_lock_only_with_room"
    )
    op.execute(previous.ALLOWANCE_FUNCTION)  # CREATE OR REPLACE: the three-argument form
    op.execute("DROP FUNCTION IF EXISTS eventix_queue_allowance(text[], integer, boolean, uuid[])")
