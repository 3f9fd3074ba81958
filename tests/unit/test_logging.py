"""Logging set-up: lines go to the stderr of the moment, as JSON with trace ids."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import io, logging, sys
    import structlog
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from agenticflow.shared.ops.logging import configure_logging

    trace.set_tracer_provider(TracerProvider())
    first = io.StringIO()
    real = sys.stderr
    sys.stderr = first  # a test runner capturing output
    configure_logging(fmt="json")
    log = structlog.get_logger("x")
    log.warning("captured")
    sys.stderr = real
    first.close()  # the capture ends; cached loggers must not keep it
    with trace.get_tracer("t").start_as_current_span("s"):
        log.warning("after", n=1)
    logging.getLogger("nats").warning("library line")
    log.debug("filtered out")
    """
)


def test_lines_follow_the_current_stderr_and_carry_trace_ids() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["after", "library line"]
    assert lines[0]["n"] == 1
    assert len(lines[0]["trace_id"]) == 32
    assert lines[1]["logger"] == "nats"
    assert lines[1]["level"] == "warning"
