"""structlog set-up: JSON in production, readable in a terminal.

Every line carries what is bound where it was logged: the worker binds the
workflow id, task id, attempt, agent and instance around each task (structlog
context variables, so the handler's and the tools' lines have them too), and
:func:`add_trace_ids` adds the current OpenTelemetry ``trace_id`` and
``span_id``, which join a log line to its trace. Lines from other libraries
(standard ``logging``, e.g. nats-py) go through the same renderer.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the current span's ``trace_id`` and ``span_id`` (when there is one)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", f"{context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{context.span_id:016x}")
    return event_dict


class _StderrLogger:
    """structlog's output: one line on whatever ``sys.stderr`` is *now*.

    structlog's ``PrintLogger`` keeps the stream it was given, so a process
    (or a test run) that swaps ``sys.stderr`` after configuring leaves every
    cached logger writing to a closed file; looking it up per line costs
    nothing next to rendering the line.
    """

    _lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A logging handler that writes to the current ``sys.stderr`` (like
    logging's own last-resort handler)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(*, level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and the standard library's logging) once, at a
    process's entry point."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    common: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    number = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*common, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                *common,
                structlog.stdlib.add_logger_name,
                structlog.processors.format_exc_info,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(number, logging.WARNING))  # libraries: warnings and worse


__all__ = ["add_trace_ids", "configure_logging"]
