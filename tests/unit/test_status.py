from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventix_operator.db.rows import TaskRecord
from eventix_operator.db.triggers import TriggerRecord
from eventix_operator.operator.status import invalid_status, task_status, trigger_status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(**changes: Any) -> TaskRecord:
    base = TaskRecord(
        uid="u1", task="t", namespace="default", status="scheduled", priority=0, eta=T0,
        scheduled=T0, args=[], kwargs={}, unique_key=None, revision=1, created_at=T0,
        updated_at=T0, worker_id=None, worker_expires=None, retry=True, max_retries=None,
        attempts=0, error_eta_inc=15, error_eta_max=300, timeout_seconds=None,
        store_result=True, result=None, error=None, result_expires=None, error_expires=None,
        expires=None, started_at=None, finished_at=None, operator=None, source="k8s",
        k8s_namespace="ns", k8s_name="n", k8s_uid="k", schedule_uid=None, schedule_time=None,
        trace_context=None,
    )  # fmt: skip
    return replace(base, **changes)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize(
    ("db_status", "phase"),
    [("scheduled", "Pending"), ("retry", "Retrying"), ("processing", "Running"),
     ("done", "Succeeded"), ("error", "Failed"), ("cancelled", "Cancelled")],
)  # fmt: skip
def test_phase_follows_the_row(db_status: str, phase: str) -> None:
    status = task_status(record(status=db_status), previous=None, generation=None, now=T0)
    assert status["phase"] == phase


def test_success_shows_the_result_and_no_error() -> None:
    done = record(status="done", result={"n": 1}, attempts=1, finished_at=T0)
    status = task_status(done, previous=None, generation=3, now=T0)
    assert status["result"] == {"n": 1}
    assert status["error"] is None
    assert status["finishedAt"] == "2026-01-01T00:00:00Z"
    assert status["observedGeneration"] == 3
    assert conditions(status)["Ready"]["status"] == "True"
    assert conditions(status)["Stalled"]["status"] == "False"


def test_failure_is_not_ready_and_stalled_with_the_message() -> None:
    failed = record(status="error", attempts=4, error={"type": "E", "message": "boom", "x": 1})
    status = task_status(failed, previous=None, generation=None, now=T0)
    assert status["error"] == {"type": "E", "message": "boom"}
    ready, stalled = conditions(status)["Ready"], conditions(status)["Stalled"]
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "TaskFailed", "boom")
    assert (stalled["status"], stalled["reason"]) == ("True", "TaskFailed")


@pytest.mark.parametrize(
    ("db_status", "reconciling", "stalled"),
    [("scheduled", "Pending", False), ("processing", "Running", False),
     ("retry", "Retrying", False), ("done", None, False), ("error", None, True),
     ("cancelled", None, False)],
)  # fmt: skip
def test_a_task_on_its_way_is_reconciling_and_a_failed_one_stalled(
    db_status: str, reconciling: str | None, stalled: bool
) -> None:
    """What kstatus and the Argo CD health check read (docs/observability.md)."""
    row = record(status=db_status, attempts=2, error={"type": "E", "message": "boom"})
    found = conditions(task_status(row, previous=None, generation=1, now=T0))
    assert set(found) == {"Ready", "Reconciling", "Stalled"}
    on_its_way = found["Reconciling"]
    assert on_its_way["status"] == ("True" if reconciling else "False")
    if reconciling:
        assert on_its_way["reason"] == reconciling
    assert found["Stalled"]["status"] == ("True" if stalled else "False")
    assert found["Ready"]["status"] == ("False" if stalled else "True")


def test_reconciling_messages_say_what_the_task_waits_for() -> None:
    def message(**changes: Any) -> str:
        status = task_status(record(**changes), previous=None, generation=1, now=T0)
        return str(conditions(status)["Reconciling"]["message"])

    assert message() == "waiting in queue default, due at 2026-01-01T00:00:00Z"
    assert message(status="processing", attempts=1) == "attempt 1 is running"
    assert message(status="retry", attempts=1, error={"type": "E", "message": "x"}) == (
        "attempt 1 failed (E: x); next attempt at 2026-01-01T00:00:00Z"
    )


def test_retrying_shows_when_the_next_attempt_is() -> None:
    retrying = record(status="retry", eta=T0 + timedelta(seconds=30), error={"type": "E"})
    status = task_status(retrying, previous=None, generation=None, now=T0)
    assert status["nextAttemptAt"] == "2026-01-01T00:00:30Z"
    assert status["error"]["type"] == "E"


def test_transition_time_moves_only_when_the_condition_changes() -> None:
    first = task_status(record(), previous=None, generation=None, now=T0)
    later = T0 + timedelta(minutes=5)
    running = task_status(record(status="processing"), previous=first, generation=None, now=later)
    assert conditions(running)["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    failed = task_status(record(status="error"), previous=running, generation=None, now=later)
    assert conditions(failed)["Ready"]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    # recomputing an unchanged status gives the same dict: nothing to write
    assert (
        task_status(record(status="error"), previous=failed, generation=None, now=later) == failed
    )


# -- EventixTrigger -------------------------------------------------------------------


def trigger(**changes: Any) -> TriggerRecord:
    base = TriggerRecord(
        uid="t1", name="shop/ship", k8s_namespace="shop", k8s_name="ship", generation=2,
        event_name="order.created", filter=None, template={"task": "ship"}, fired_count=0,
        ignored_count=0, failed_count=0, last_fired_at=None, last_error=None,
        last_error_at=None, created_at=T0, updated_at=T0,
    )  # fmt: skip
    return replace(base, **changes)


def test_trigger_status_shows_the_counters_of_its_row() -> None:
    later = T0 + timedelta(minutes=1)
    row = trigger(fired_count=3, ignored_count=2, failed_count=1, last_fired_at=later,
                  last_error="no 'id'", last_error_at=T0)  # fmt: skip
    status = trigger_status(row, previous=None, now=later)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 2,
        "firedCount": 3,
        "ignoredCount": 2,
        "failedCount": 1,
        "lastFiredTime": "2026-01-01T00:01:00Z",
        "lastError": {"message": "no 'id'", "time": "2026-01-01T00:00:00Z"},
    }
    ready, stalled = conditions(status)["Ready"], conditions(status)["Stalled"]
    # A failing event does not make the trigger unready: the next one may carry the key.
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Registered",
        2,
    )
    assert ready["message"] == "task ship on event 'order.created'"
    assert stalled["status"] == "False"


def test_trigger_status_of_a_fresh_trigger_clears_what_is_not_there() -> None:
    status = trigger_status(trigger(), previous=None, now=T0)
    # None removes the field in the merge patch (an error of an older generation, say).
    assert status["lastError"] is None
    assert status["lastFiredTime"] is None
    assert status["firedCount"] == 0


def test_trigger_status_recovers_from_an_invalid_spec_and_then_stays_put() -> None:
    invalid = invalid_status("bad placeholder", previous=None, generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    fixed = trigger_status(trigger(), previous=invalid, now=later)
    ready = conditions(fixed)["Ready"]
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "2026-01-01T00:05:00Z")
    assert conditions(fixed)["Stalled"]["status"] == "False"
    # New counts later keep the transition time; the same row gives the same dict.
    counted = trigger_status(trigger(fired_count=1), previous=fixed, now=later + timedelta(1))
    assert conditions(counted)["Ready"]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    assert trigger_status(trigger(fired_count=1), previous=counted, now=later) == counted


def test_a_task_shows_the_queue_it_waits_in() -> None:
    """The queue the operator chose when the spec names none (docs/tenancy.md)."""
    status = task_status(record(namespace="team-a"), previous=None, generation=None, now=T0)
    assert status["queue"] == "team-a"


def test_a_refused_queue_is_not_ready_and_stalled_with_its_reason() -> None:
    refused = invalid_status(
        "namespace 'a' may not use queue 'b'", previous=None, generation=4, now=T0,
        reason="QueueNotAllowed",
    )  # fmt: skip
    ready, stalled = conditions(refused)["Ready"], conditions(refused)["Stalled"]
    assert (ready["status"], ready["reason"]) == ("False", "QueueNotAllowed")
    assert (stalled["status"], stalled["reason"]) == ("True", "QueueNotAllowed")
    assert ready["message"] == "namespace 'a' may not use queue 'b'"
    assert refused["observedGeneration"] == 4
