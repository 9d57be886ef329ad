"""Optional OpenTelemetry traces: whoever enqueues a task, its attempts continue their trace.

Everything of OpenTelemetry that eventix-operator touches is here, behind a few
calls, and nothing of it is imported unless it is used: a process traces when
OpenTelemetry's own environment variables ask for it (an ``OTEL_TRACES_EXPORTER``
other than ``none``, or an ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``..._TRACES_ENDPOINT``, and ``OTEL_SDK_DISABLED`` not ``true``) and the ``otel``
extra is installed. The SDK is then set up by its own configurator, the one
``opentelemetry-instrument`` runs, so every ``OTEL_*`` variable means what
OpenTelemetry's documentation says (service name, resource attributes, sampler,
propagators, exporter endpoint, headers, batching); the only defaults added are
the specification's own, which the Python SDK does not apply by itself: the
``otlp`` exporter when only an endpoint is given, over ``http/protobuf`` (the
exporter the extra installs) unless a protocol is named. A process that already
has a tracer provider (run under ``opentelemetry-instrument``) keeps it.

What is stored with a task is a carrier: the propagation headers
(``traceparent``, ``tracestate``, whatever ``OTEL_PROPAGATORS`` injects) of the
enqueuer's span, as a JSON object. ``"relation": "link"`` in it says that the
attempts start a trace of their own with a link to that span instead of
becoming its children (schedule ticks, bulk enqueues: docs/observability.md).

The Python client never sets anything up: an application that imported
OpenTelemetry and is inside a span has its context stored (:func:`current`);
one that did not pays one dictionary lookup.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "Attempt",
    "Attempts",
    "attempts",
    "current",
    "enabled",
    "enqueuing",
    "from_environment",
    "from_headers",
    "requested",
]

#: The carrier key that makes the attempts link to the enqueuer rather than be its children.
RELATION = "relation"
LINK = "link"
INSTRUMENTATION = "eventix_operator"
#: The standard library's logger, not structlog's: a command that configured no
#: logging (``eventix enqueue``) must not print to stdout, where its output goes.
log = logging.getLogger("eventix.tracing")


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether OpenTelemetry's variables ask this process for traces (nothing imported)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_CONFIG_FILE")
    )


_lock = threading.Lock()
_state: list[Tracer | None] = []  # this process's tracer, once decided


def _tracer() -> Tracer | None:
    """This process's tracer, the SDK set up on first use; None when not tracing."""
    if not _state:
        with _lock:  # the first enqueues may come from several threads at once
            if not _state:
                _state.append(_setup())
    return _state[0]


def _setup() -> Tracer | None:
    if not requested():
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator
    except ImportError:
        _warn(
            "OTEL_* variables ask for traces, but OpenTelemetry's SDK is not installed "
            "(pip install 'eventix-operator[otel]'): running without traces"
        )
        return None
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # The specification's defaults, which the Python SDK leaves to its distro.
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        if not (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        ):
            os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        try:
            _OTelSDKConfigurator().configure()  # type: ignore[no-untyped-call]
        except Exception as exc:  # an exporter not installed, a bad protocol: say which
            _warn(f"OpenTelemetry could not be set up, running without traces: {exc}")
            return None
        log.info("traces on: exporter %s", os.environ["OTEL_TRACES_EXPORTER"])
    try:
        version = importlib.metadata.version("eventix-operator")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout
        version = "0.0.0"
    return trace.get_tracer(INSTRUMENTATION, version)


def _warn(message: str) -> None:
    log.warning(message)


def enabled() -> bool:
    """Whether this process traces; sets OpenTelemetry up the first time. Processes
    ask once at start and keep the answer: their hot paths check a boolean."""
    return _tracer() is not None


# -- the enqueuer's side ---------------------------------------------------------------


def current(*, link: bool = False) -> dict[str, str] | None:
    """The carrier of the caller's current span, for the Python client: only an
    application that imported OpenTelemetry can be inside a span, so one that did
    not is asked nothing and loads nothing."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from opentelemetry import propagate, trace

    if not trace.get_current_span().get_span_context().is_valid:
        return None
    return _carrier(propagate, None, link)


def from_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The carrier of the context an HTTP request carries (``traceparent``,
    ``tracestate``, as the configured propagators read them); None when the
    process does not trace or the request carries no valid context."""
    if _tracer() is None:
        return None
    from opentelemetry import propagate, trace

    context = propagate.extract(headers)
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return _carrier(propagate, context, False)


def from_environment() -> dict[str, str]:
    """``TRACEPARENT`` and ``TRACESTATE`` of the environment, OpenTelemetry's
    carrier for a command run inside a traced script or CI job."""
    return {
        header: os.environ[name]
        for header, name in (("traceparent", "TRACEPARENT"), ("tracestate", "TRACESTATE"))
        if os.environ.get(name)
    }


@contextlib.contextmanager
def enqueuing(
    task: str,
    *,
    link: bool = False,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[dict[str, str] | None]:
    """A producer span ``eventix.enqueue <task>`` around an enqueue made by one of
    our processes (CLI, operator, scheduler), child of ``parent`` (a carrier) if
    given; yields the carrier to store with the task, None when not tracing.
    ``attributes`` adds to the span's (``messaging.destination.name``: the queue)."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    context = propagate.extract(parent) if parent else None
    attrs: dict[str, str | int] = {
        "messaging.system": "eventix",
        "messaging.operation.type": "send",
        "eventix.task.name": task,
    }
    attrs.update(attributes or {})
    with tracer.start_as_current_span(
        f"eventix.enqueue {task}", context=context, kind=SpanKind.PRODUCER, attributes=attrs
    ):
        yield _carrier(propagate, None, link)


def _carrier(propagate: Any, context: Any, link: bool) -> dict[str, str] | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    if not carrier:
        return None
    if link:
        carrier[RELATION] = LINK
    return carrier


# -- the worker's side -----------------------------------------------------------------


class Attempt:
    """One attempt's span, current in the thread or task that runs it (so that
    what the task itself traces or enqueues is its child) until :meth:`end`."""

    __slots__ = ("_detach", "_token", "span")

    def __init__(self, span: Span, token: object, detach: Any) -> None:
        self.span = span
        self._token = token
        self._detach = detach

    def end(self, outcome: str, error: Mapping[str, Any] | None = None) -> None:
        """``outcome``: the status it leads to (done, retry, error, or interrupted);
        ``error``: the stored error document (type, message, traceback), recorded as
        OpenTelemetry's exception event with the span's status ERROR."""
        span = self.span
        span.set_attribute("eventix.task.outcome", outcome)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            kind = str(error.get("type", "Error"))
            message = str(error.get("message", ""))
            span.set_attribute("error.type", kind)
            span.add_event(
                "exception",
                {
                    "exception.type": kind,
                    "exception.message": message,
                    "exception.stacktrace": str(error.get("traceback", "")),
                },
            )
            span.set_status(Status(StatusCode.ERROR, f"{kind}: {message}"[:1000]))
        self._detach(self._token)
        span.end()


class Attempts:
    """Starts the span of each attempt a native worker makes: ``eventix.task <name>``,
    a consumer span, child of the stored context (or linked to it)."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import context, propagate, trace

        self._tracer = tracer
        self._context = context
        self._extract = propagate.extract
        self._trace = trace
        self._consumer = trace.SpanKind.CONSUMER
        self._root = context.Context()

    def start(self, task: str, queue: str, uid: str, attempt: int, stored: Any) -> Attempt:
        parent = self._root
        links = None
        if isinstance(stored, dict) and stored:
            context = self._extract(stored)
            if stored.get(RELATION) == LINK:
                linked = self._trace.get_current_span(context).get_span_context()
                if linked.is_valid:
                    links = [self._trace.Link(linked)]
            else:
                parent = context
        span = self._tracer.start_span(
            f"eventix.task {task}",
            context=parent,
            kind=self._consumer,
            links=links,
            # OpenTelemetry's messaging conventions where they have a name (queue, uid);
            # each attribute costs the SDK a few microseconds, so none twice.
            attributes={
                "messaging.system": "eventix",
                "messaging.operation.type": "process",
                "messaging.destination.name": queue,
                "messaging.message.id": uid,
                "eventix.task.name": task,
                "eventix.task.attempt": attempt,
            },
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return Attempt(span, token, self._context.detach)


def attempts() -> Attempts | None:
    """The worker's attempt spans, or None when this process does not trace."""
    tracer = _tracer()
    return None if tracer is None else Attempts(tracer)
