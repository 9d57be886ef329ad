"""Traces with the real OpenTelemetry SDK, in this process: each enqueuer's context
is stored with its tasks, and a native worker's attempts continue it (as children,
or linked for bulk enqueues and schedule ticks), with their outcome and error.

The spans go to the SDK's InMemorySpanExporter through a TracerProvider set as
this process's global one, the way an application sets up OpenTelemetry; the
cross-process path (a worker process exporting OTLP) is tests/acceptance/test_traces.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from eventix_operator import enqueue, enqueue_many, tracing
from eventix_operator.db import admin
from eventix_operator.db.rows import TaskRecord
from eventix_operator.operator.kube import ResourceRef
from eventix_operator.operator.reconcile import enqueue_task
from eventix_operator.registry import Registry, task
from eventix_operator.resources import schedule_definition
from eventix_operator.schedules.scheduler import apply_schedule, fire_due
from eventix_operator.tenancy import TenancyPolicy
from eventix_operator.worker.worker import Worker, WorkerConfig

EXPORTER = InMemorySpanExporter()
#: What a task's own code traces, to check that it runs inside its attempt's span.
app_tracer = trace.get_tracer("tests.app")


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    """One global provider per process (OpenTelemetry refuses a second one)."""
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        sdk = TracerProvider()
        sdk.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(sdk)


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch, db_env: str) -> Iterator[None]:
    """This process traces: an OTEL_* variable asks for it, and the provider above
    is the one in place (so eventix_operator.tracing sets nothing up)."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    tracing._state.clear()
    EXPORTER.clear()
    yield
    tracing._state.clear()


def spans(name: str | None = None) -> list[ReadableSpan]:
    return [s for s in EXPORTER.get_finished_spans() if name is None or s.name == name]


def one(name: str) -> ReadableSpan:
    found = spans(name)
    assert len(found) == 1, [s.name for s in spans()]
    return found[0]


def span_id(span: Any) -> int:
    return int(span.get_span_context().span_id)


def trace_id(span: Any) -> int:
    return int(span.get_span_context().trace_id)


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def row(engine: Engine, uid: str) -> TaskRecord:
    with engine.connect() as conn:
        record = admin.get_task(conn, uid)
    assert record is not None
    return record


def make_registry() -> Registry:
    registry = Registry()

    @task(name="ok", registry=registry)
    def ok(n: int = 0) -> int:
        return n

    @task(name="boom", registry=registry)
    def boom() -> None:
        raise ValueError("it went wrong")

    @task(name="nested", registry=registry)
    def nested() -> str:
        with app_tracer.start_as_current_span("inside nested"):
            return enqueue("ok", [7])

    @task(name="nested_async", registry=registry)
    async def nested_async() -> None:
        with app_tracer.start_as_current_span("inside nested_async"):
            await asyncio.sleep(0)

    @task(name="nested_timed", registry=registry)
    def nested_timed() -> None:
        with app_tracer.start_as_current_span("inside nested_timed"):
            pass

    return registry


def run_worker(database_url: str, registry: Registry | None = None) -> None:
    """A native worker in this process, until no task is left to run (a burst may
    end while a retry due at once is being recorded: then another one)."""
    for _ in range(5):
        asyncio.run(_burst(database_url, registry))
        engine = create_engine(database_url)
        with engine.connect() as conn:
            left = conn.scalar(text("SELECT count(*) FROM eventix_task WHERE status = 'retry'"))
        engine.dispose()
        if not left:
            return
    raise AssertionError("tasks left to retry after five bursts")


async def _burst(database_url: str, registry: Registry | None) -> None:
    engine = create_async_engine(database_url)
    try:
        config = WorkerConfig(queues=("default", "q1"), burst=True, poll_interval=0.2)
        tasks = make_registry() if registry is None else registry
        await Worker(engine, tasks, config).run()
    finally:
        await engine.dispose()


def test_attempts_of_a_task_enqueued_inside_a_span_are_its_children(
    traced: None, engine: Engine, database_url: str
) -> None:
    with app_tracer.start_as_current_span("caller") as caller:
        ok = enqueue("ok", [1], queue="q1")
        boom = enqueue("boom", max_retries=1, backoff_seconds=0, queue="q1")
    stored = row(engine, ok).trace_context
    assert stored is not None
    # W3C trace context, as the SDK's propagator writes it (flags: sampled, random id)
    assert stored["traceparent"].startswith(f"00-{trace_id(caller):032x}-{span_id(caller):016x}-")
    run_worker(database_url, make_registry())

    attempt = one("eventix.task ok")
    assert attempt.kind is SpanKind.CONSUMER
    assert parent_id(attempt) == span_id(caller)
    assert trace_id(attempt) == trace_id(caller)
    assert attempt.attributes is not None
    assert dict(attempt.attributes) == {
        "messaging.system": "eventix",
        "messaging.operation.type": "process",
        "messaging.destination.name": "q1",
        "messaging.message.id": ok,
        "eventix.task.name": "ok",
        "eventix.task.attempt": 1,
        "eventix.task.outcome": "done",
    }
    assert attempt.status.status_code is StatusCode.UNSET
    assert not attempt.events

    failures = sorted(
        spans("eventix.task boom"), key=lambda s: attribute(s, "eventix.task.attempt")
    )
    assert [attribute(s, "eventix.task.outcome") for s in failures] == ["retry", "error"]
    for failed in failures:
        assert attribute(failed, "messaging.message.id") == boom
        assert parent_id(failed) == span_id(caller)
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "ValueError: it went wrong"
        [event] = failed.events
        assert event.name == "exception"
        attributes = dict(event.attributes or {})
        assert attributes["exception.type"] == "ValueError"
        assert attributes["exception.message"] == "it went wrong"
        assert 'raise ValueError("it went wrong")' in str(attributes["exception.stacktrace"])


def test_what_a_task_does_is_inside_its_attempt(
    traced: None, engine: Engine, database_url: str
) -> None:
    """A task's own spans, and the tasks it enqueues, are children of its attempt:
    sync tasks in the worker's threads, async ones on its loop, timed ones too."""
    with app_tracer.start_as_current_span("caller"):
        nested = enqueue("nested")
        enqueue("nested_async")
        enqueue("nested_timed", timeout_seconds=30)
    run_worker(database_url)

    for name in ("nested", "nested_async", "nested_timed"):
        attempt = one(f"eventix.task {name}")
        inner = one(f"inside {name}")
        assert parent_id(inner) == span_id(attempt), name
        assert trace_id(inner) == trace_id(attempt)
    # the task nested enqueued continues the trace under nested's own span
    follow_up = row(engine, nested).result
    assert attribute(one("eventix.task ok"), "messaging.message.id") == follow_up
    assert parent_id(one("eventix.task ok")) == span_id(one("inside nested"))


def test_bulk_enqueue_attempts_start_traces_linked_to_the_enqueuer(
    traced: None, engine: Engine, database_url: str
) -> None:
    with app_tracer.start_as_current_span("bulk caller") as caller:
        uids = enqueue_many([{"task": "ok", "args": [i]} for i in range(100)])  # COPY
        few = enqueue_many([{"task": "ok", "args": [i]} for i in range(2)])  # INSERT
    stored = row(engine, uids[0]).trace_context
    assert (stored or {})["relation"] == "link"
    assert row(engine, few[0]).trace_context == stored
    run_worker(database_url)

    attempts = spans("eventix.task ok")
    assert len(attempts) == 102
    assert {attribute(s, "messaging.message.id") for s in attempts} == {*uids, *few}
    for attempt in attempts:
        assert attempt.parent is None  # a trace of its own
        assert trace_id(attempt) != trace_id(caller)
        [link] = attempt.links
        assert link.context.span_id == span_id(caller)
        assert link.context.trace_id == trace_id(caller)
    assert len({trace_id(s) for s in attempts}) == 102


def test_a_task_no_worker_knows_fails_with_the_error_in_its_span(
    traced: None, database_url: str
) -> None:
    with app_tracer.start_as_current_span("caller") as caller:
        uid = enqueue("nobody.knows.me")
    run_worker(database_url)

    attempt = one("eventix.task nobody.knows.me")
    assert parent_id(attempt) == span_id(caller)
    assert attribute(attempt, "messaging.message.id") == uid
    assert attribute(attempt, "eventix.task.outcome") == "error"  # not retried
    assert attempt.status.status_code is StatusCode.ERROR
    [event] = attempt.events
    assert attribute(event, "exception.type") == "TaskNotRegistered"


def test_an_eventixtask_reconcile_is_the_parent_of_its_attempts(
    traced: None, engine: Engine, database_url: str
) -> None:
    ref = ResourceRef("eventixtasks", "team-a", "send-mail", "7f0c6d7e-0000-4000-8000-000000000001")
    result = enqueue_task(
        engine, ref, {"task": "ok", "args": [3]}, generation=1, previous=None,
        payload_limit=1_000_000, now=datetime.now(UTC), tenancy=TenancyPolicy(mode="shared"),
    )  # fmt: skip
    uid = result.status["taskUid"]
    enqueued = one("eventix.enqueue ok")
    assert enqueued.kind is SpanKind.PRODUCER
    assert enqueued.parent is None
    assert dict(enqueued.attributes or {}) == {
        "messaging.system": "eventix",
        "messaging.operation.type": "send",
        "eventix.task.name": "ok",
        "k8s.namespace.name": "team-a",
        "eventix.resource": "EventixTask/send-mail",
        "messaging.destination.name": "default",
    }
    run_worker(database_url)

    attempt = one("eventix.task ok")
    assert attribute(attempt, "messaging.message.id") == uid
    assert parent_id(attempt) == span_id(enqueued)
    assert trace_id(attempt) == trace_id(enqueued)


def test_a_schedule_tick_is_a_span_its_runs_link_to(
    traced: None, engine: Engine, database_url: str
) -> None:
    created = datetime.now(UTC) - timedelta(minutes=5)
    definition = schedule_definition(
        {"schedule": "* * * * *", "template": {"task": "ok", "args": [5]}},
        uid="sched-1", namespace="team-a", name="every-minute", generation=1, created_at=created,
    )  # fmt: skip
    with engine.begin() as conn:
        apply_schedule(conn, definition, created)
    with engine.begin() as conn:
        [firing] = fire_due(conn, datetime.now(UTC), payload_limit=1_000_000)
    [(tick, uid)] = firing.fired  # catchUp Latest: the most recent tick only
    tick_span = one("eventix.enqueue ok")
    assert attribute(tick_span, "eventix.schedule.tick") == tick.isoformat()
    assert attribute(tick_span, "eventix.resource") == "EventixSchedule/every-minute"
    assert (row(engine, uid).trace_context or {})["relation"] == "link"
    run_worker(database_url)

    attempt = one("eventix.task ok")
    assert attempt.parent is None
    [link] = attempt.links
    assert link.context.span_id == span_id(tick_span)


def test_a_worker_that_does_not_trace_makes_no_span(
    db_env: str, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The application traces (its context is stored), the worker does not: nothing."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    tracing._state.clear()
    EXPORTER.clear()
    with app_tracer.start_as_current_span("caller"):
        uid = enqueue("boom", max_retries=0)
    assert row(engine, uid).trace_context is not None  # the client follows the application
    ref = ResourceRef("eventixtasks", "team-a", "t", "7f0c6d7e-0000-4000-8000-000000000002")
    result = enqueue_task(
        engine, ref, {"task": "ok"}, generation=1, previous=None, payload_limit=1_000_000,
        now=datetime.now(UTC), tenancy=TenancyPolicy(mode="shared"),
    )  # fmt: skip
    assert row(engine, result.status["taskUid"]).trace_context is None  # the operator: none
    run_worker(database_url)
    assert row(engine, uid).status == "error"
    assert [s.name for s in spans()] == ["caller"]
    tracing._state.clear()


# -- what a process that does not trace loads -----------------------------------------

UNTRACED = """
import asyncio, json, sys
from eventix_operator import enqueue, enqueue_many
from eventix_operator.cli.main import app
from eventix_operator.registry import Registry, task
from eventix_operator.settings import get_settings
from eventix_operator.worker.run import run_worker, worker_config

registry = Registry()
task(name="ok", registry=registry)(lambda: None)
enqueue("ok")
enqueue_many([{"task": "ok"}] * 100)
try:
    app(["enqueue", "ok"], standalone_mode=False)
except SystemExit:
    pass
settings = get_settings()
config = worker_config(settings, queues=["default"], burst=True)
worker = asyncio.run(run_worker(settings, registry, config, settings.require_database_url()))
print(json.dumps({"stats": worker.stats, "modules": sorted(sys.modules)}))
"""

#: Makes ``import opentelemetry`` fail, as where the extra is not installed.
WITHOUT_THE_EXTRA = """
import sys
class NoOpenTelemetry:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoOpenTelemetry())
"""


def run_untraced(env: dict[str, str], prelude: str = "") -> tuple[dict[str, Any], str]:
    out = subprocess.run(
        [sys.executable, "-c", prelude + UNTRACED],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def base_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACE"))}
    return {**env, "DATABASE_URL": database_url, "EVENTIX_LOG_LEVEL": "WARNING"}


def test_without_otel_variables_nothing_of_opentelemetry_is_loaded(database_url: str) -> None:
    """Enqueue (client, bulk, CLI) and a worker run, in a process of their own: with
    the extra installed but no OTEL_* variable, OpenTelemetry is never imported."""
    result, _ = run_untraced(base_env(database_url))
    assert result["stats"]["succeeded"] == 102
    assert not [m for m in result["modules"] if m.startswith("opentelemetry")]


def test_without_the_extra_the_variables_get_a_warning_and_work_goes_on(
    database_url: str,
) -> None:
    env = {**base_env(database_url), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    result, stderr = run_untraced(env, WITHOUT_THE_EXTRA)
    assert result["stats"]["succeeded"] == 102
    assert not [m for m in result["modules"] if m.startswith("opentelemetry")]
    assert "pip install 'eventix-operator[otel]'" in stderr


def test_an_exporter_that_cannot_be_loaded_gets_a_warning_and_work_goes_on(
    database_url: str,
) -> None:
    env = {**base_env(database_url), "OTEL_TRACES_EXPORTER": "no-such-exporter"}
    result, stderr = run_untraced(env)
    assert result["stats"]["succeeded"] == 102
    assert "OpenTelemetry could not be set up, running without traces" in stderr
    assert "no-such-exporter" in stderr
