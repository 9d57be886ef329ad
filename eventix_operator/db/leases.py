"""Leases: claim, record, heartbeat, release, recover, purge.

A claimed task is leased to a worker id until ``worker_expires``; the native
worker renews its leases by heartbeat and records outcomes guarded by them, so
that nothing is recorded for a task another worker holds now. HTTP workers
(Eventix's ``TaskWorker``) claim through the same statement
(:func:`claim_slots`) and write back by revision (:mod:`.writeback`).
Recovery and purging serve both: whoever runs them (a native worker, the REST
API) does it for everyone.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from eventix_operator.db import statements
from eventix_operator.db.errors import database_unavailable, first_line, isolate
from eventix_operator.db.payload import clean, dump_error
from eventix_operator.db.rows import ClaimedTask, Fetch, TaskRecord
from eventix_operator.retry import RetryPolicy

if TYPE_CHECKING:  # the asyncio extension loads the ORM: only processes that need it pay
    from sqlalchemy import TextClause
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


@dataclass(frozen=True, slots=True)
class Success:
    uid: str
    result_json: str


@dataclass(frozen=True, slots=True)
class Failure:
    """``retry_in`` is the delay before the next attempt, or None for a final error."""

    uid: str
    error: dict[str, Any]
    retry_in: float | None


@dataclass(frozen=True, slots=True)
class Cancelled:
    """A task stopped after its cancel was asked for: recorded ``cancelled`` for good,
    its error naming who cancelled it (from the row); ``note`` is added to the
    message (say, that the task did not stop within the grace period)."""

    uid: str
    note: str = ""


Outcome = Success | Failure | Cancelled
#: A statement and its parameters.
Step = tuple["TextClause", dict[str, Any]]

#: Rows one purge transaction removes at most.
PURGE_BATCH = 2000
#: Seconds one purge call goes on, batch after batch, while expired rows are left.
PURGE_SECONDS = 5.0


def refused(outcome: Outcome, exc: Exception) -> Failure:
    """What is recorded instead of an outcome the database refused: a success
    becomes a final failure saying why (running the task again gives the same
    result), a failure keeps its retry with an error document that says why its
    own could not be stored."""
    reason = first_line(exc)
    if isinstance(outcome, Cancelled):  # a constant document: refused only by a bug
        message = f"the database refused to record the cancel: {reason}"
        return Failure(outcome.uid, {"type": "Cancelled", "message": message}, None)
    if isinstance(outcome, Success):
        message = f"the database refused to store the result: {reason}"
        return Failure(outcome.uid, {"type": "ResultNotStorable", "message": message}, None)
    error = {
        "type": clean(str(outcome.error.get("type", "Error"))),
        "message": f"the database refused to store this failure's error: {reason}",
    }
    return Failure(outcome.uid, error, outcome.retry_in)


def worker_lost(worker_id: str | None) -> dict[str, str]:
    return {
        "type": "WorkerLost",
        "message": f"the worker {worker_id} stopped heartbeating and no retries are left",
    }


def cancelled_lost(by: str, worker_id: str | None) -> dict[str, str]:
    return {
        "type": "Cancelled",
        "message": f"cancelled by {by} (its worker {worker_id} stopped heartbeating)",
    }


class LeaseStore:
    """A native worker's side of the queue: everything it does under its worker id.

    ``on_refused(uid, reason)`` hears of each outcome the database refused (it is
    recorded as a failure instead, see :func:`refused`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        worker_id: str,
        lease_seconds: float,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.on_refused = on_refused

    async def claim(self, queues: Sequence[str], limit: int) -> list[ClaimedTask]:
        async with self.engine.begin() as conn:
            return await self._claim(conn, queues, limit)

    async def _claim(
        self, conn: AsyncConnection, queues: Sequence[str], limit: int
    ) -> list[ClaimedTask]:
        result = await conn.execute(statements.CLAIM_TASKS, self._claim_params(queues, limit))
        return [ClaimedTask(*row) for row in result.all()]

    def _claim_params(self, queues: Sequence[str], limit: int) -> dict[str, Any]:
        return {
            "queues": list(queues),
            "limit": limit,
            "worker_ids": [self.worker_id],
            "lease_seconds": self.lease_seconds,
        }

    async def record(self, outcomes: Iterable[Outcome]) -> tuple[int, int]:
        """Write outcomes; returns (completed, failed) rows changed.

        Rows this worker no longer holds (lease expired and claimed elsewhere)
        are not touched: their current holder decides their fate. An outcome the
        database refuses is recorded as a failure saying why, and costs no other
        outcome its place (:func:`~.errors.isolate`); an outage is raised, and
        the caller keeps the outcomes to try again.
        """
        batch = list(outcomes)
        return await self._count(batch, await isolate(self._write, batch))

    async def record_and_claim(
        self, outcomes: Iterable[Outcome], queues: Sequence[str], limit: int
    ) -> tuple[int, int, list[ClaimedTask] | None]:
        """:meth:`record`, then claim up to ``limit`` tasks in the same transaction:
        the starts of a queue with a concurrency limit that the outcomes free are
        this worker's again at once, with no commit, wake-up or second claim in
        between (docs/queues.md). Successes go as one statement
        (COMPLETE_AND_CLAIM), which retakes the starts they freed without the
        queue's lock; a batch with failures or cancels as its statements and the
        claim, in one pipeline. The claim runs after the outcomes' updates, so it
        counts their tasks as ended. Successes wake nobody: the starts they free
        and this claim leaves are announced after it (NOTIFY_FREED).

        Returns (completed, failed, the claimed tasks), or None for the tasks when a
        refused outcome split the batch (:func:`~.errors.isolate`) and nothing was
        claimed: then the caller claims as usual."""
        batch = list(outcomes)
        claim = self._claim_params(queues, limit)
        try:
            if all(isinstance(o, Success) for o in batch):
                rows, jobs, quiet = await self._complete_and_claim(batch, claim)
            else:
                steps = self._write_steps(batch)
                *written, claimed = await self._pipeline([*steps, (statements.CLAIM_TASKS, claim)])
                rows, jobs, quiet = [r for w in written for r in w], claimed, []
        except Exception as exc:
            if database_unavailable(exc):
                raise
            return (*await self.record(batch), None)
        tasks = [ClaimedTask(*row) for row in jobs]
        ended = Counter(quiet)  # the successes here woke nobody; failures and cancels did
        ended.subtract(task.namespace for task in tasks)
        left = sorted(queue for queue, n in ended.items() if n > 0)
        if left:
            async with self.engine.begin() as conn:
                await conn.execute(statements.NOTIFY_FREED, {"queues": left})
        return (*await self._count(batch, self._recorded(batch, rows)), tasks)

    async def _complete_and_claim(
        self, batch: list[Outcome], claim: dict[str, Any]
    ) -> tuple[list[Any], list[Any], list[str]]:
        """COMPLETE_AND_CLAIM, in autocommit (the statement is its transaction: one
        round trip); the rows it recorded (uid first), those it claimed, and the
        queues of the tasks it ended."""
        ((_, params),) = self._write_steps(batch)
        async with self._driver() as driver:
            await driver.set_autocommit(True)
            try:
                sql = statements.for_psycopg(statements.COMPLETE_AND_CLAIM)
                rows = await (await driver.execute(sql, {**params, **claim})).fetchall()
            finally:
                if not driver.closed:
                    await driver.set_autocommit(False)
        uids, queues = (rows[0][0] or [], rows[0][1] or []) if rows else ([], [])
        claimed = [row[2:] for row in rows if row[2] is not None]
        return [(uid,) for uid in uids], claimed, list(queues)

    async def _pipeline(self, steps: Sequence[Step]) -> list[list[Any]]:
        """Run ``steps`` in one transaction sent as one pipeline (psycopg's: one round
        trip for all, where each statement and the commit would take its own); the
        rows of each. A broken connection is dropped from the pool."""
        async with self._driver() as driver:
            try:
                async with driver.pipeline():
                    cursors = []
                    for statement, params in steps:
                        cursor = driver.cursor()
                        await cursor.execute(statements.for_psycopg(statement), params)
                        cursors.append(cursor)
                    await driver.commit()
                return [
                    await cursor.fetchall() if cursor.description is not None else []
                    for cursor in cursors
                ]
            except Exception:
                if not driver.closed:
                    await driver.rollback()
                raise

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection's psycopg connection, for what runs on psycopg itself
        (SQLAlchemy's asyncio layer costs about 1.5 ms a statement here, as much as
        the statement). A broken connection is dropped from the pool."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            try:
                yield raw.driver_connection  # type: ignore[misc]
            except Exception as exc:
                if database_unavailable(exc):
                    await conn.invalidate()
                raise

    async def _count(
        self, batch: list[Outcome], outcomes: Sequence[bool | Exception]
    ) -> tuple[int, int]:
        """(completed, failed) of what :meth:`_write` did for ``batch``; an outcome
        the database refused is recorded as the failure :func:`refused` makes of it."""
        done = failed = 0
        replacements: list[Outcome] = []
        for outcome, written in zip(batch, outcomes, strict=True):
            if written is True:
                if isinstance(outcome, Success):
                    done += 1
                else:
                    failed += 1  # a cancel counts as a failure: the task did not succeed
            elif isinstance(written, Exception):
                replacement = refused(outcome, written)
                if self.on_refused is not None:
                    self.on_refused(outcome.uid, replacement.error["message"])
                replacements.append(replacement)
        if replacements:
            # A constant-shaped, cleaned document: refused again only by a bug.
            failed += sum(1 for w in await isolate(self._write, replacements) if w is True)
        return done, failed

    async def _write(self, batch: list[Outcome]) -> list[bool]:
        """Whether each outcome was recorded (False: its lease had passed on)."""
        async with self.engine.begin() as conn:
            return await self._write_in(conn, batch)

    async def _write_in(self, conn: AsyncConnection, batch: list[Outcome]) -> list[bool]:
        rows: list[Any] = []
        for statement, params in self._write_steps(batch):
            rows += (await conn.execute(statement, params)).all()
        return self._recorded(batch, rows)

    @staticmethod
    def _recorded(batch: list[Outcome], rows: list[Any]) -> list[bool]:
        """Whether each outcome was recorded, from the rows (uid first) the write
        returned: an outcome without one had lost its lease."""
        if len(rows) == len(batch):  # the common case: every lease still held
            return [True] * len(batch)
        recorded = {row[0] for row in rows}
        return [o.uid in recorded for o in batch]

    def _write_steps(self, batch: list[Outcome]) -> list[Step]:
        """The statements that record ``batch``, with their parameters."""
        successes = [o for o in batch if isinstance(o, Success)]
        failures = [o for o in batch if isinstance(o, Failure)]
        cancels = [o for o in batch if isinstance(o, Cancelled)]
        steps: list[Step] = []
        if successes:
            params: dict[str, Any] = {
                "uids": ",".join([o.uid for o in successes]),
                "results": f"[{','.join([o.result_json for o in successes])}]",
                "worker_id": self.worker_id,
            }
            steps.append((statements.COMPLETE_TASKS, params))
        if failures:
            params = {
                "uid": [o.uid for o in failures],
                "error": [dump_error(o.error) for o in failures],
                "retry_in": [o.retry_in for o in failures],
                "worker_id": self.worker_id,
            }
            steps.append((statements.FAIL_TASKS, params))
        if cancels:
            params = {
                "uid": [o.uid for o in cancels],
                "note": [o.note for o in cancels],
                "worker_id": self.worker_id,
            }
            steps.append((statements.RECORD_CANCELLED, params))
        return steps

    async def heartbeat(self) -> int:
        """Renew this worker's leases; how many."""
        return (await self.renew())[0]

    async def renew(self) -> tuple[int, list[str]]:
        """Renew this worker's leases: how many, and the uids among them whose
        cancel was asked for (the fallback for a worker that cannot LISTEN)."""
        params = {"worker_id": self.worker_id, "lease_seconds": self.lease_seconds}
        async with self.engine.begin() as conn:
            renewed, cancelled = (await conn.execute(statements.HEARTBEAT, params)).one()
        return int(renewed), list(cancelled)

    async def to_stop(self, uids: Sequence[str]) -> list[str]:
        """Of ``uids`` (tasks this worker runs), those it must stop: cancelled, or no
        longer its own to finish (deleted, or leased to another worker). A read, no
        write: cheap enough for a worker that cannot LISTEN to ask every second."""
        if not uids:
            return []
        params = {"uids": list(uids), "worker_id": self.worker_id}
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return [str(u) for (u,) in await conn.execute(statements.RUNNING_CANCELS, params)]

    async def release(self, uids: Sequence[str], started: Sequence[bool]) -> int:
        if not uids:
            return 0
        params = {"uid": list(uids), "started": list(started), "worker_id": self.worker_id}
        async with self.engine.begin() as conn:
            return len((await conn.execute(statements.RELEASE_TASKS, params)).all())

    async def recover_expired_leases(self, limit: int = 1000) -> list[tuple[str, str]]:
        """Requeue tasks of dead workers, or fail those whose lost run was their
        last (the retry policy decides) and end those cancelled meanwhile; returns
        (uid, new status) of each."""
        return await recover_expired_leases(self.engine, limit)

    async def purge_expired(self, limit: int = PURGE_BATCH) -> int:
        return await purge_expired(self.engine, limit)


async def recover_expired_leases(engine: AsyncEngine, limit: int = 1000) -> list[tuple[str, str]]:
    """Requeue tasks of dead workers (native or HTTP), or end with ``WorkerLost``
    those whose lost run was their last; returns (uid, new status) of each."""
    async with engine.connect() as conn:
        # A transaction even on an autocommit engine (the REST API's): the rows
        # stay locked from the look to the update.
        await conn.execution_options(isolation_level="READ COMMITTED")
        async with conn.begin():
            expired = (await conn.execute(statements.LOCK_EXPIRED_LEASES, {"limit": limit})).all()
            if not expired:
                return []
            params: dict[str, list[Any]] = {"uid": [], "status": [], "error": []}
            for uid, worker_id, retry, max_retries, attempts, inc, cap, by in expired:
                params["uid"].append(uid)
                if by is not None:  # cancelled while it ran: never run again
                    params["status"].append("cancelled")
                    params["error"].append(json.dumps(cancelled_lost(by, worker_id)))
                elif RetryPolicy(retry, max_retries, inc, cap).run_left_after_loss(attempts):
                    params["status"].append("scheduled")
                    params["error"].append(None)
                else:
                    params["status"].append("error")
                    params["error"].append(json.dumps(worker_lost(worker_id)))
            rows = (await conn.execute(statements.RECOVER_LEASES, params)).all()
            return [(str(r.uid), r.status) for r in rows]


async def purge_expired(
    engine: AsyncEngine, limit: int = PURGE_BATCH, max_seconds: float = PURGE_SECONDS
) -> int:
    """Remove finished tasks whose result or error expired, in transactions of at
    most ``limit`` rows, until none is left or ``max_seconds`` have passed; returns
    how many. Each batch locks only finished rows, skipping locked ones: nothing a
    claim, a heartbeat or a write-back waits for. A call that removed at least a
    full batch may have left more (:data:`PURGE_BATCH`): call again soon."""
    total = 0
    deadline = time.monotonic() + max_seconds
    while True:
        async with engine.begin() as conn:
            removed = (await conn.execute(statements.PURGE_EXPIRED, {"limit": limit})).rowcount
        total += removed
        if removed < limit or time.monotonic() >= deadline:
            return total


async def claim_slots(
    fetch: Fetch, queue: str, worker_ids: Sequence[str], lease_seconds: float
) -> list[TaskRecord | None]:
    """Lease the next due tasks of one queue, the n-th to the n-th worker id
    (concurrent ``GET /tasks/next_scheduled``: a worker id used twice, as
    Eventix's default ``default``, still gets one task per request); None where
    no task was left for a slot."""
    params = {
        "queues": [queue],
        "worker_ids": list(worker_ids),
        "limit": len(worker_ids),
        "lease_seconds": lease_seconds,
    }
    rows = await fetch(statements.CLAIM_TASK_ROWS, params)
    by_slot = {row[0]: TaskRecord.from_row(row[1:]) for row in rows}
    return [by_slot.get(slot) for slot in range(1, len(worker_ids) + 1)]
