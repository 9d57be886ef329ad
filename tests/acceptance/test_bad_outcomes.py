"""An outcome the database cannot store never stalls a worker: a real worker
process, a batch of 200 ordinary tasks and one bad one. The 200 are recorded,
the bad one ends `error` saying why, and the worker goes on claiming."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from eventix_operator import enqueue, enqueue_many
from tests.acceptance.test_worker_processes import counts, get
from tests.support.processes import Processes

ORDINARY = 200
#: (kind, what the stored error's message says)
CASES = [
    ("nul", 'contains a character PostgreSQL cannot store (NUL, \\x00) at result["a"][2]'),
    ("nul_key", "(NUL, \\x00) in the key 'k\\x00' at result"),
    ("nan", "not JSON-serialisable: Out of range float values are not JSON compliant"),
    ("inf", "not JSON-serialisable: Out of range float values are not JSON compliant"),
    ("object", "not JSON-serialisable: Object of type object is not JSON serializable"),
    ("large", "over the 10000 byte limit"),
    ("poison", "the database refused to store the result: new row for relation"),
    ("raise_nul", "a\\x00b"),
    ("raise_nul_note", "plain"),
]


@pytest.fixture
def poison_refused(engine: Engine) -> None:
    """A constraint a DBA might add: the real server refuses one result value, a
    refusal no check in Python foresees."""
    with engine.begin() as conn:
        conn.execute(text(
            "ALTER TABLE eventix_task ADD CONSTRAINT no_poison "
            "CHECK (result IS DISTINCT FROM '\"poison\"'::jsonb)"
        ))  # fmt: skip


@pytest.mark.usefixtures("poison_refused")
@pytest.mark.parametrize(("kind", "message"), CASES, ids=[k for k, _ in CASES])
def test_a_bad_outcome_fails_alone(
    processes: Processes, engine: Engine, kind: str, message: str
) -> None:
    with engine.begin() as conn:
        ordinary = [{"task": "tests.record", "args": [i]} for i in range(ORDINARY)]
        enqueue_many(ordinary[: ORDINARY // 2], connection=conn)
        bad = enqueue("tests.bad", [kind], max_retries=0, connection=conn)
        enqueue_many(ordinary[ORDINARY // 2 :], connection=conn)
    processes.worker(
        "--concurrency", "4", EVENTIX_WORKER_BATCH_SIZE="500", EVENTIX_MAX_PAYLOAD_BYTES="10000"
    )
    processes.wait_for(
        lambda: counts(engine) == {"done": ORDINARY, "error": 1}, 60, "every outcome recorded"
    )
    failed = get(engine, bad)
    assert failed.status == "error"
    assert failed.error is not None
    assert message in failed.error["message"], failed.error
    if kind == "raise_nul_note":
        assert "a note with \\x00 in it" in failed.error["traceback"]
    # the worker is not wedged: it claims and records what comes next
    with engine.begin() as conn:
        after = enqueue("tests.record", [ORDINARY], connection=conn)
    processes.wait_for(lambda: get(engine, after).status == "done", 30, "the next task")
    assert processes.executions()[f"run {ORDINARY - 1}"] == 1
