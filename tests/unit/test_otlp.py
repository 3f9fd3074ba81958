"""OTLP export: HTTP by default, gRPC only when asked for and installed."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.ops.telemetry import otlp_exporter

_PROTOCOL_VARS = (
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)


def _close(*exporters: Any) -> None:
    for exporter in exporters:
        exporter.shutdown()


@pytest.fixture(autouse=True)
def _no_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROTOCOL_VARS:
        monkeypatch.delenv(name, raising=False)


def test_http_is_the_default_for_both_signals() -> None:
    spans, metrics = otlp_exporter("traces"), otlp_exporter("metrics")
    assert isinstance(spans, HttpSpanExporter)
    assert isinstance(metrics, HttpMetricExporter)
    _close(spans, metrics)


def test_grpc_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    spans = otlp_exporter("traces")
    assert isinstance(spans, GrpcSpanExporter)
    _close(spans)
    # A signal's own variable wins over the general one.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    metrics = otlp_exporter("metrics")
    assert isinstance(metrics, HttpMetricExporter)
    assert not isinstance(metrics, GrpcMetricExporter)
    _close(metrics)


def test_grpc_without_the_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    # As if the `grpc` extra were not installed: the import fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(ConfigError, match=r"pip install 'agenticflow\[grpc\]'"):
        otlp_exporter("traces")


def test_an_unsupported_protocol_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigError, match="http/json"):
        otlp_exporter("metrics")
