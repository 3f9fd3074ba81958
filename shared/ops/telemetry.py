"""Tracing with OpenTelemetry: one trace per workflow, across processes.

The context travels in the W3C ``traceparent``/``tracestate`` headers of every
NATS message: :func:`inject` adds the current span's context to a message's
headers (nothing when no span is recording), :func:`extract` reads it back.

:func:`configure_tracing` sets up export from the standard environment
variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default, or ``grpc``
with the ``grpc`` extra: ``pip install 'agenticflow[grpc]'``),
``OTEL_SERVICE_NAME``, ``OTEL_SDK_DISABLED``. With none of them set nothing is
exported and spans cost next to nothing. ``AGENTICFLOW_TRACE_FILE=PATH``
(``{pid}`` is replaced) writes one JSON line per finished span, for debugging
and tests.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from agenticflow.shared.errors import ConfigError

TRACE_FILE_ENV = "AGENTICFLOW_TRACE_FILE"
_lock = threading.Lock()
_installed: list[TracerProvider] = []
"""The provider this process installed (at most one)."""


def tracer() -> trace.Tracer:
    """AgenticFlow's tracer (a no-op one until tracing is configured)."""
    return trace.get_tracer("agenticflow")


def tracing_enabled() -> bool:
    """Whether a tracer provider is installed in this process (by
    :func:`configure_tracing` or by the host application): without one every
    span is a no-op, and a hot path may leave out making it (unless a message
    it handles carries a ``traceparent``, whose trace its events continue)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's context (``traceparent``, ``tracestate``) to
    headers; nothing (and at no cost) when there is no valid span context."""
    if not trace.get_current_span().get_span_context().is_valid:
        return
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The context carried by a message's headers (empty when none)."""
    return propagate.extract(dict(headers or {}))


def traceparent() -> str | None:
    """The current span's ``traceparent`` header value, if a span is recording."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_of(parent: str | None) -> otel_context.Context:
    """A context whose parent is the span named by a ``traceparent`` value."""
    return extract({"traceparent": parent} if parent else {})


class JsonLinesExporter(SpanExporter):
    """Writes each finished span as one JSON line (name, ids, parent, times, attributes)."""

    def __init__(self, path: str) -> None:
        self.path = path.replace("{pid}", str(os.getpid()))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.context
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
                        "span_id": f"{ctx.span_id:016x}" if ctx else None,
                        "parent_id": f"{parent.span_id:016x}" if parent else None,
                        "service": span.resource.attributes.get("service.name"),
                        "pid": os.getpid(),
                        "start": span.start_time,
                        "end": span.end_time,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                    },
                    default=str,
                )
            )
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release: the file is opened per export."""


def configure_tracing(service: str) -> bool:
    """Install a tracer provider exporting as the environment says; returns
    whether spans are exported. Idempotent; does nothing when no exporter is
    configured or ``OTEL_SDK_DISABLED`` is true."""
    with _lock:
        if _installed:
            return True
        if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
            return False
        processors = _processors()
        if not processors:
            return False
        provider = TracerProvider(resource=resource(service))
        for processor in processors:
            provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        _installed.append(provider)
        return True


def resource(service: str) -> Resource:
    """The process's OpenTelemetry resource: service name (``OTEL_SERVICE_NAME``
    wins), host and pid; ``OTEL_RESOURCE_ATTRIBUTES`` adds more."""
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or service,
            "host.name": socket.gethostname(),
            "process.pid": os.getpid(),
        }
    )


def shutdown_tracing() -> None:
    """Flush and stop exporting (call at process exit)."""
    for provider in _installed:
        provider.shutdown()


def _processors() -> list[Any]:
    processors: list[Any] = []
    path = os.environ.get(TRACE_FILE_ENV)
    if path:
        processors.append(SimpleSpanProcessor(JsonLinesExporter(path)))
    for exporter in exporter_names("traces"):
        if exporter == "console":
            processors.append(BatchSpanProcessor(ConsoleSpanExporter()))
        elif exporter == "otlp":
            processors.append(BatchSpanProcessor(otlp_exporter("traces")))
    return processors


def exporter_names(signal: str) -> list[str]:
    """The exporters ``OTEL_<SIGNAL>_EXPORTER`` names for ``signal`` (``traces``,
    ``metrics``); ``otlp`` when only an OTLP endpoint is set."""
    exporters = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "")
    endpoint = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return [e.strip() for e in exporters.split(",") if e.strip()] or (["otlp"] if endpoint else [])


def otlp_protocol(signal: str) -> str:
    """The OTLP protocol for ``signal`` (``grpc`` or ``http/protobuf``, the default)."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )


_OTLP_EXPORTERS = {
    "traces": ("trace", "OTLPSpanExporter"),
    "metrics": ("metric", "OTLPMetricExporter"),
}


def otlp_exporter(signal: str) -> Any:
    """A new OTLP exporter for ``signal`` (``traces`` or ``metrics``): over HTTP
    unless :func:`otlp_protocol` says ``grpc``. Raises ConfigError for gRPC
    without the ``grpc`` extra installed, and for a protocol we do not export."""
    module, name = _OTLP_EXPORTERS[signal]
    protocol = otlp_protocol(signal)
    if protocol == "grpc":
        try:
            found = importlib.import_module(
                f"opentelemetry.exporter.otlp.proto.grpc.{module}_exporter"
            )
        except ImportError as exc:
            raise ConfigError(
                f"OTLP over gRPC (OTEL_EXPORTER_OTLP_PROTOCOL=grpc) needs the grpc extra: "
                f"pip install 'agenticflow[grpc]' ({exc})"
            ) from exc
    elif protocol == "http/protobuf":
        found = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module}_exporter")
    else:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: AgenticFlow exports OTLP as "
            "'http/protobuf' (the default) or 'grpc'"
        )
    return getattr(found, name)()


__all__ = [
    "TRACE_FILE_ENV",
    "JsonLinesExporter",
    "configure_tracing",
    "context_of",
    "exporter_names",
    "extract",
    "inject",
    "otlp_exporter",
    "otlp_protocol",
    "resource",
    "shutdown_tracing",
    "traceparent",
    "tracer",
    "tracing_enabled",
]
