"""The trigger table's data functions and the template, on a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from eventix_operator.db.triggers import (
    EventContext,
    TemplateError,
    TriggerOutcome,
    delete_trigger,
    get_trigger,
    list_triggers_for_event,
    record_trigger_outcomes,
    render,
    trigger_task,
    upsert_trigger,
    validate_template,
)

TEMPLATE = {"task": "ship", "args": ["{{ payload.order.id }}"], "kwargs": {"n": 1}}


def test_upsert_is_idempotent_and_keeps_counters(engine: Engine) -> None:
    with engine.begin() as conn:
        first = upsert_trigger(
            conn, uid="r1", name="ship", event_name="order", template=TEMPLATE,
            k8s_namespace="shop", k8s_name="ship", generation=1,
        )  # fmt: skip
        assert (first.fired_count, first.filter, first.template) == (0, None, TEMPLATE)
        record_trigger_outcomes(
            conn, [TriggerOutcome("r1", fired=2), TriggerOutcome("r1", failed=1, error="bad")]
        )
        again = upsert_trigger(
            conn, uid="r1", name="ship", event_name="order", template=TEMPLATE, generation=1
        )
        assert (again.fired_count, again.failed_count, again.last_error) == (2, 1, "bad")
        assert again.last_fired_at is not None
        changed = upsert_trigger(
            conn, uid="r1", name="ship", event_name="paid", template={"task": "x"}, generation=2
        )
        # A new generation forgets the old error; counters stay.
        assert (changed.event_name, changed.last_error, changed.fired_count) == ("paid", None, 2)
        assert get_trigger(conn, "r1") == changed
        assert delete_trigger(conn, "r1") is True
        assert delete_trigger(conn, "r1") is False
        assert get_trigger(conn, "r1") is None
        assert record_trigger_outcomes(conn, [TriggerOutcome("r1", fired=1)]) == 0


def test_list_triggers_for_event_applies_filters(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_trigger(conn, uid="a", name="all", event_name="order", template=TEMPLATE)
        upsert_trigger(
            conn, uid="b", name="big", event_name="order", template=TEMPLATE,
            filter={"size": "big", "customer": {"tier": "gold"}},
        )  # fmt: skip
        upsert_trigger(conn, uid="c", name="other", event_name="paid", template=TEMPLATE)
        small = list_triggers_for_event(conn, "order", {"size": "small"})
        assert [(m.trigger.name, m.matches) for m in small] == [("all", True), ("big", False)]
        big = list_triggers_for_event(
            conn, "order", {"size": "big", "customer": {"tier": "gold", "id": 3}, "more": 1}
        )
        assert [(m.trigger.name, m.matches) for m in big] == [("all", True), ("big", True)]
        assert list_triggers_for_event(conn, "nothing", {}) == []


def test_a_trigger_sees_only_the_events_of_its_queue_scope(engine: Engine) -> None:
    """The lookup filters by the event's queue in SQL: a trigger outside its scope is not
    returned at all, so it neither fires nor counts the event as ignored."""
    with engine.begin() as conn:
        upsert_trigger(conn, uid="any", name="any", event_name="order", template=TEMPLATE)
        upsert_trigger(
            conn, uid="a", name="team-a", event_name="order", template=TEMPLATE,
            k8s_namespace="team-a", queue_scope=["team-a", "team-a.%", "shared\\_mail"],
        )  # fmt: skip
        upsert_trigger(
            conn, uid="b", name="team-b", event_name="order", template=TEMPLATE,
            k8s_namespace="team-b", queue_scope=["team-b", "team-b.%"],
        )  # fmt: skip

        def seen(queue: str) -> list[str]:
            return [m.trigger.name for m in list_triggers_for_event(conn, "order", {}, queue)]

        assert seen("team-a") == ["any", "team-a"]
        assert seen("team-a.reports") == ["any", "team-a"]
        assert seen("shared_mail") == ["any", "team-a"]
        assert seen("sharedXmail") == ["any"]  # `_` is no wildcard
        assert seen("team-b") == ["any", "team-b"]
        assert seen("team-ab") == ["any"]
        assert seen("default") == ["any"]
        stored = get_trigger(conn, "a")
        assert stored is not None
        assert stored.queue_scope == ["team-a", "team-a.%", "shared\\_mail"]


def test_a_resource_triggers_tasks_belong_to_its_namespace(engine: Engine) -> None:
    """So their unique keys merge only with that namespace's tasks."""
    with engine.begin() as conn:
        trig = upsert_trigger(
            conn, uid="t", name="shop/t", event_name="order", template=TEMPLATE,
            k8s_namespace="shop", k8s_name="t",
        )  # fmt: skip
        code_like = upsert_trigger(conn, uid="c", name="c", event_name="order", template=TEMPLATE)
    event = EventContext(name="order", namespace="shop", payload={"order": {"id": 1}})
    task = trigger_task(trig, event)
    assert (task.k8s_namespace, task.k8s_name, task.source) == ("shop", "t", "trigger")
    assert trigger_task(code_like, event).k8s_namespace is None


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"args": []}, "needs a task name"),
        ({"task": "x", "code": "import os"}, "unknown template field"),
        ({"task": "x", "args": "no"}, "args must be list"),
        ({"task": "x", "args": ["hello {{ payload.a }}"]}, "is not a placeholder"),
        ({"task": "{{ payload.task }}"}, "taken literally"),
        ({"task": "x", "args": ["{{ event.secret }}"]}, "event placeholder"),
        ({"task": "x", "max_retries": -1}, ">= 0"),
        ({"task": "x", "retry": 1}, "retry must be bool"),
    ],
)
def test_bad_templates_are_refused_before_writing(
    engine: Engine, template: dict[str, object], message: str
) -> None:
    with pytest.raises(TemplateError, match=message), engine.begin() as conn:
        upsert_trigger(conn, uid="bad", name="bad", event_name="e", template=template)
    with engine.connect() as conn:
        assert get_trigger(conn, "bad") is None


def test_render_takes_values_from_the_event() -> None:
    event = EventContext(
        name="order", namespace="shop", priority=-2, operator="bob",
        payload={"order": {"id": 7, "lines": [{"sku": "a"}, {"sku": "b"}]}, "note": None},
    )  # fmt: skip
    template = {
        "whole": "{{ payload.order }}",
        "deep": ["{{payload.order.lines.1.sku}}", "{{ payload.note }}", "{{ event.name }}"],
        "literal": "{{ not a placeholder",
        "number": 3,
    }
    assert render(template, event) == {
        "whole": {"id": 7, "lines": [{"sku": "a"}, {"sku": "b"}]},
        "deep": ["b", None, "order"],
        "literal": "{{ not a placeholder",
        "number": 3,
    }
    with pytest.raises(TemplateError, match="has no 'missing'"):
        render("{{ payload.order.missing }}", event)
    with pytest.raises(TemplateError, match="has no '5'"):
        render("{{ payload.order.lines.5 }}", event)


def test_trigger_task_takes_queue_priority_operator_from_the_event(engine: Engine) -> None:
    event = EventContext(name="order", namespace="shop", priority=-2, operator="bob",
                         payload={"order": {"id": 7}})  # fmt: skip
    with engine.begin() as conn:
        trig = upsert_trigger(
            conn, uid="t", name="t", event_name="order",
            template={**TEMPLATE, "unique_key": "{{ payload.order.id }}", "max_retries": 2},
        )  # fmt: skip
        pinned = upsert_trigger(
            conn, uid="p", name="p", event_name="order",
            template={"task": "audit", "namespace": "audit"},
        )  # fmt: skip
    task = trigger_task(trig, event)
    assert (task.task, task.args, task.kwargs) == ("ship", (7,), {"n": 1})
    assert (task.queue, task.priority, task.operator, task.source) == ("shop", -2, "bob", "trigger")
    assert (task.unique_key, task.max_retries) == ("7", 2)
    assert trigger_task(pinned, event).queue == "audit"
    validate_template({"task": "x", "delay": 1.5, "unique_key": None})
