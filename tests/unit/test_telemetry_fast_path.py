"""Tracing costs nothing when nobody traces, and a trace still goes on."""

from __future__ import annotations

from opentelemetry import trace

from agenticflow.shared.ops.telemetry import context_of, inject, tracer, tracing_enabled

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_inject_adds_nothing_without_a_span_context() -> None:
    headers: dict[str, str] = {}
    inject(headers)
    assert headers == {}


def test_a_trace_goes_on_through_a_process_that_does_not_trace() -> None:
    # The worker and coordinator open a span for a message that carries a
    # traceparent even when they do not trace: their events continue the trace.
    with tracer().start_as_current_span("task", context=context_of(PARENT)):
        headers: dict[str, str] = {}
        inject(headers)
    assert headers["traceparent"].split("-")[1] == PARENT.split("-")[1]


def test_tracing_enabled_says_whether_a_provider_is_installed() -> None:
    installed = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    assert tracing_enabled() is installed
