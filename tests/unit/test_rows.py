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
    assert sorted(claims) == ["CLAIMED_COLUMNS", "CLAIM_TASKS", "CLAIM_TASK_ROWS"]
    # The same statement up to what it returns (the queue settings' part included).
    end = "RETURNING next.slot AS claim_order"
    assert (
        statements.CLAIM_TASKS.text.split(end)[0] == statements.CLAIM_TASK_ROWS.text.split(end)[0]
    )
