"""The count of failed runs has a SQL form (for write-backs); it must say what
the Python form says for every status and attempt count."""

from __future__ import annotations

from sqlalchemy import Engine, text

from eventix_operator.db.schema import TASK_STATUSES
from eventix_operator.retry import failures_so_far, failures_so_far_sql


def test_sql_and_python_count_the_same_failures(engine: Engine) -> None:
    cases = [(status, attempts) for status in TASK_STATUSES for attempts in range(4)]
    values = ", ".join(f"('{s}', {a})" for s, a in cases)
    query = text(f"SELECT s, a, {failures_so_far_sql('s', 'a')} FROM (VALUES {values}) AS v(s, a)")
    with engine.connect() as conn:
        in_sql = {(s, a): n for s, a, n in conn.execute(query)}
    assert in_sql == {(s, a): failures_so_far(s, a) for s, a in cases}
