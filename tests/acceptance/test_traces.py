"""Traces across processes: the enqueuer in one process (this test, `eventix enqueue`,
`eventix api`), the worker in another, both exporting OTLP/HTTP with the SDK's own
exporter to a receiver the test runs; the worker's spans continue the enqueuers'
traces with their names, attributes and errors."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import Engine, text

from eventix_operator import enqueue
from tests.api.conftest import TOKEN, launch
from tests.support.otlp import Collector, Received
from tests.support.processes import Processes

#: The test's own tracer, from a provider of its own: the client reads the current span.
tracer = TracerProvider().get_tracer("tests.acceptance")


def ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def finished(engine: Engine, count: int) -> bool:
    with engine.connect() as conn:
        done = conn.scalar(
            text("SELECT count(*) FROM eventix_task WHERE status IN ('done', 'error')")
        )
    return done == count


def attempts(collector: Collector, task: str) -> list[Received]:
    found = collector.named(f"eventix.task {task}")
    return sorted(found, key=lambda s: s.attributes["eventix.task.attempt"])


def attempt_of(collector: Collector, uid: str) -> Received:
    [found] = [
        s for s in collector.named("eventix.task") if s.attributes["messaging.message.id"] == uid
    ]
    return found


def test_a_worker_process_continues_the_traces_of_its_enqueuers(
    processes: Processes, engine: Engine, database_url: str, collector: Collector
) -> None:
    with tracer.start_as_current_span("checkout") as checkout, engine.begin() as conn:
        ok = enqueue("tests.record", [1], connection=conn)
        failing = enqueue("tests.fail", ["no stock"], max_retries=1, backoff_seconds=0,
                          connection=conn)  # fmt: skip
    with tracer.start_as_current_span("deploy script") as deploy:
        traceparent = f"00-{ids(deploy)[0]}-{ids(deploy)[1]}-01"
        cli = processes.cli("enqueue", "tests.record", "--args", "[2]",
                            TRACEPARENT=traceparent, **collector.env("eventix-cli"))  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    by_cli = cli.stdout.strip()

    worker = processes.worker(**collector.env("eventix-worker"))
    processes.wait_for(lambda: finished(engine, 3), 60, "the three tasks to finish")
    assert processes.stop(worker) == 0, processes.logs()  # its spans are sent as it exits
    collector.wait_for(lambda: len(collector.named("eventix.task")) == 4, 30, "four attempts")

    attempt = attempt_of(collector, ok)
    assert attempt.service == "eventix-worker"
    assert attempt.kind == "SPAN_KIND_CONSUMER"
    assert (attempt.trace_id, attempt.parent_span_id) == ids(checkout)
    assert attempt.attributes == {
        "messaging.system": "eventix",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "messaging.message.id": ok,
        "eventix.task.name": "tests.record",
        "eventix.task.attempt": 1,
        "eventix.task.outcome": "done",
    }
    assert attempt.status_code == "STATUS_CODE_UNSET"

    failures = attempts(collector, "tests.fail")
    assert [(s.attributes["eventix.task.attempt"], s.attributes["eventix.task.outcome"])
            for s in failures] == [(1, "retry"), (2, "error")]  # fmt: skip
    for span in failures:
        assert span.attributes["messaging.message.id"] == failing
        assert (span.trace_id, span.parent_span_id) == ids(checkout)
        assert span.status_code == "STATUS_CODE_ERROR"
        assert span.status_message == "ValueError: no stock"
        assert span.attributes["error.type"] == "ValueError"
        [(name, event)] = span.events
        assert name == "exception"
        assert event["exception.type"] == "ValueError"
        assert event["exception.message"] == "no stock"
        assert "raise ValueError(message)" in event["exception.stacktrace"]

    # eventix enqueue: its span continues TRACEPARENT, the attempt continues its span
    [enqueued] = collector.named("eventix.enqueue")
    assert enqueued.service == "eventix-cli"
    assert enqueued.kind == "SPAN_KIND_PRODUCER"
    assert (enqueued.trace_id, enqueued.parent_span_id) == ids(deploy)
    from_cli = attempt_of(collector, by_cli)
    assert (from_cli.trace_id, from_cli.parent_span_id) == (enqueued.trace_id, enqueued.span_id)


ORDER_TRIGGER = """\
triggers:
  OrderTrigger:
    event_name: order.created
    namespace: default
    code: |
      def execute(self, event):
          return TEventixTask(task="tests.record", args=[event.payload["order"]])
"""


def traceparent() -> tuple[str, str, str]:
    """A caller's context as an HTTP client sends it: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def test_rest_requests_carrying_traceparent_are_the_parents_of_their_tasks(
    processes: Processes, engine: Engine, database_url: str, collector: Collector, tmp_path: Path
) -> None:
    (tmp_path / "triggers").mkdir()
    (tmp_path / "triggers" / "orders.yaml").write_text(ORDER_TRIGGER)
    posted, posted_trace, posted_span = traceparent()
    event, event_trace, event_span = traceparent()
    with launch(
        database_url,
        Path("python"),
        tmp_path,
        EVENTIX_API_TOKEN=TOKEN,
        EVENTIX_TRIGGER_CONFIG_DIRECTORY=str(tmp_path / "triggers"),
        **collector.env("eventix-api"),
    ) as api:
        status, task = api.request("POST", "/task", {"task": "tests.record", "args": [10]},
                                   headers={"traceparent": posted})  # fmt: skip
        assert status == 200, task
        order = {"name": "order.created", "payload": {"order": 11}}
        status, fired = api.request("POST", "/event", order, headers={"traceparent": event})
        assert status == 200, fired
        status, untraced = api.request("POST", "/task", {"task": "tests.record", "args": [12]})
        assert status == 200, untraced
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT args->>0, trace_context FROM eventix_task")).all())
    assert stored["10"] == {"traceparent": posted}
    assert stored["11"] == {"traceparent": event}
    assert stored["12"] is None

    worker = processes.worker(**collector.env("eventix-worker"))
    processes.wait_for(lambda: finished(engine, 3), 60, "the three tasks to finish")
    assert processes.stop(worker) == 0, processes.logs()
    collector.wait_for(lambda: len(collector.named("eventix.task")) == 3, 30, "three attempts")

    with engine.connect() as conn:
        uids = dict(conn.execute(text("SELECT args->>0, uid::text FROM eventix_task")).all())
    posted_attempt = attempt_of(collector, uids["10"])
    assert (posted_attempt.trace_id, posted_attempt.parent_span_id) == (posted_trace, posted_span)
    fired_attempt = attempt_of(collector, uids["11"])
    assert (fired_attempt.trace_id, fired_attempt.parent_span_id) == (event_trace, event_span)
    assert attempt_of(collector, uids["12"]).parent_span_id == ""  # none: a trace of its own
