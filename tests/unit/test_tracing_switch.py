"""Which OpenTelemetry variables turn traces on: decided without importing OpenTelemetry."""

from __future__ import annotations

import pytest

from eventix_operator.tracing import requested


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "worker"}, False),  # names a service, sends nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
        ({"OTEL_TRACES_EXPORTER": " None "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_CONFIG_FILE": "/etc/otel/config.yaml"}, True),
        ({"OTEL_TRACES_EXPORTER": ""}, False),
    ],
)
def test_traces_are_on_when_otel_variables_ask_for_an_exporter(
    environ: dict[str, str], on: bool
) -> None:
    assert requested(environ) is on
