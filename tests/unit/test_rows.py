"""Rows map to records by position: the records' fields must be the columns the
statements return, in the same order (both come from the schema)."""

from __future__ import annotations

from dataclasses import fields

from eventix_operator.db import statements
from eventix_operator.db.rows import ClaimedTask, TaskRecord
from eventix_operator.db.schema import task_table
from eventix_operator.db.triggers import TriggerRecord


def names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def test_records_follow_the_tables() -> None:
    assert names(TaskRecord) == statements.TASK_COLUMNS == tuple(c.name for c in task_table.c)
    assert names(ClaimedTask) == statements.CLAIMED_COLUMNS
    assert names(TriggerRecord) == statements.TRIGGER_COLUMNS


def test_one_claim_one_requeue() -> None:
    claims = [n for n in dir(statements) if "CLAIM" in n and not n.startswith("_")]
    assert sorted(claims) == [
        "CLAIMED_COLUMNS", "CLAIM_TASKS", "CLAIM_TASK_ROWS", "COMPLETE_AND_CLAIM"
    ]  # fmt: skip
    # The same statement up to what it returns (the queue settings' part included);
    # the write-back's claims the same way once its tasks are recorded, but for the
    # tasks it tells the queue settings it ended.
    end = "RETURNING next.slot AS claim_order"
    claim = statements.CLAIM_TASKS.text.split(end)[0]
    assert claim == statements.CLAIM_TASK_ROWS.text.split(end)[0]
    completed = "ARRAY(SELECT CAST(uid AS uuid) FROM completed)"
    fused = statements.COMPLETE_AND_CLAIM.text.split(end)[0].split("), held AS", 1)[1]
    assert "held AS" + fused == claim.split("WITH ", 1)[1].replace(
        "CAST('{}' AS uuid[])", completed
    )
