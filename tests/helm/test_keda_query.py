"""The query the chart gives KEDA's PostgreSQL scaler, run on the real schema: it counts what
the operator's pool scaler counts (due and running tasks of the pool's queues), nothing else."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tests.helm.conftest import KEDA, Tools, merged, one

ROWS = [
    # (queue, status, eta offset in seconds): counted?
    ("default", "scheduled", -5, True),  # due
    ("default", "retry", -1, True),  # due again after a failure
    ("reports.v2", "processing", -60, True),  # running
    ("default", "scheduled", 3600, False),  # not due yet
    ("default", "retry", 600, False),  # backing off
    ("default", "done", -5, False),
    ("default", "error", -5, False),
    ("default", "cancelled", -5, False),
    ("emails", "scheduled", -5, False),  # another pool's queue
    ("o'brien", "scheduled", -5, False),  # a quote in a name is data, not SQL
]


def test_keda_query_counts_due_and_running_tasks_of_the_pools_queues(
    tools: Tools, engine: Engine
) -> None:
    scaled = one(tools.template(KEDA), "ScaledObject")
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    with engine.begin() as conn:
        for queue, status, offset, _ in ROWS:
            conn.execute(
                text(
                    "INSERT INTO eventix_task (task, namespace, status, eta)"
                    " VALUES ('t', :queue, :status, now() + make_interval(secs => :offset))"
                ),
                {"queue": queue, "status": status, "offset": offset},
            )
        assert conn.execute(text(query)).scalar_one() == sum(1 for *_, counted in ROWS if counted)
        # The schema allows no quote in a queue name; were one to get past it, it stays data.
        values = merged(KEDA, {"workers": {"queues": ["o'brien"]}})
        quoted = one(tools.template(values, extra=("--skip-schema-validation",)), "ScaledObject")
        count = conn.execute(text(quoted["spec"]["triggers"][0]["metadata"]["query"]))
        assert count.scalar_one() == 1
