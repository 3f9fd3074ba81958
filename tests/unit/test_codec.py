"""The codec: events and task messages to headers + msgpack body, and back."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticflow.shared.errors import (
    MalformedMessageError,
    MessageError,
    PayloadTooLargeError,
    UnknownSchemaVersionError,
)
from agenticflow.shared.graph.workflow import RetryPolicy, parse_workflow
from agenticflow.shared.wire import events as ev
from agenticflow.shared.wire.codec import (
    DEFAULT_MAX_PAYLOAD,
    H_MSG_ID,
    H_SOURCE,
    H_TYPE,
    H_VCLOCK,
    TaskMessage,
    check_size,
    decode_event,
    decode_task,
    encode_event,
    encode_task,
    pack,
    task_identity,
    unpack,
)
from agenticflow.shared.wire.events import (
    PAYLOADS,
    SCHEMA_VERSION,
    ErrorInfo,
    Event,
    EventType,
    MessageRejected,
    Payload,
    RecordedEffect,
    TaskCompleted,
    TaskDeadLettered,
    TaskEffectRecorded,
    TaskFailed,
    TaskHeartbeat,
    TaskRetryDue,
    TaskRetryScheduled,
    TaskScheduled,
    TaskStarted,
    TaskTimedOut,
    TaskUnserved,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowRejected,
    WorkflowResumed,
    WorkflowResumeRequested,
    WorkflowStarted,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key
from agenticflow.shared.wire.names import SYSTEM_WORKFLOW, Names
from agenticflow.shared.wire.schemas import REGISTRY
from agenticflow.shared.wire.vclock import VectorClock

NAMES = Names("af")
WF = "wf-0123456789abcdef"
H_SCHEMA = "AF-Schema"
H_WORKFLOW = "AF-Workflow"
H_TASK = "AF-Task"
H_ATTEMPT = "AF-Attempt"

_DEFINITION = parse_workflow(
    {
        "name": "sample",
        "tasks": [
            {"id": "fetch", "capability": "http", "params": {"url": "https://x"}},
            {
                "id": "sum.up",
                "capability": "math",
                "depends_on": ["fetch"],
                "retry": {"max_attempts": 5, "non_retryable": ["KeyError"]},
                "timeout_s": 2.5,
            },
        ],
        "default_retry": RetryPolicy(backoff=3.0).model_dump(),
    }
)
_ERROR = ErrorInfo(type="ValueError", message="boom", code="task_error", retryable=False)

SAMPLES: dict[EventType, Payload] = {
    EventType.WORKFLOW_SUBMITTED: WorkflowSubmitted(
        definition=_DEFINITION, input={"n": 3, "tags": ["a", "b"]}, submitted_by="cli"
    ),
    EventType.WORKFLOW_STARTED: WorkflowStarted(tasks=2),
    EventType.WORKFLOW_REJECTED: WorkflowRejected(reason="bad graph", problems=["cycle", "dup"]),
    EventType.WORKFLOW_COMPLETED: WorkflowCompleted(output={"sum.up": 42, "x": [1.5, None]}),
    EventType.WORKFLOW_FAILED: WorkflowFailed(reason="task failed", task_id="fetch", error=_ERROR),
    EventType.TASK_SCHEDULED: TaskScheduled(capability="http"),
    EventType.TASK_STARTED: TaskStarted(worker="w1", agent="agent-a", instance="w1.agent-a.0"),
    EventType.TASK_COMPLETED: TaskCompleted(
        result={"rows": [1, 2, {"k": "v"}], "ok": True}, worker="w1", agent="a", duration_ms=1.25
    ),
    EventType.TASK_FAILED: TaskFailed(error=_ERROR, worker="w1", agent="a", duration_ms=3.0),
    EventType.TASK_RETRY_SCHEDULED: TaskRetryScheduled(
        next_attempt=2, delay_s=0.5, due_ns=1_700_000_000_000_000_000
    ),
    EventType.TASK_RETRY_DUE: TaskRetryDue(),
    EventType.TASK_TIMED_OUT: TaskTimedOut(timeout_s=30.0),
    EventType.TASK_UNSERVED: TaskUnserved(capability="gpu"),
    EventType.TASK_HEARTBEAT: TaskHeartbeat(worker="w1"),
    EventType.TASK_EFFECT_RECORDED: TaskEffectRecorded(
        effect=RecordedEffect(call=2, name="search", params_hash="ab12", result={"hits": [1, 2]}),
        key=f"{WF}:fetch:2:search",
        replayed=True,
        worker="w1",
    ),
    EventType.TASK_DEAD_LETTERED: TaskDeadLettered(reason="delivered 5 times", deliveries=5),
    EventType.WORKFLOW_RESUME_REQUESTED: WorkflowResumeRequested(from_task="b"),
    EventType.WORKFLOW_RESUMED: WorkflowResumed(tasks=["b", "c"]),
    EventType.MESSAGE_REJECTED: MessageRejected(
        reason="bad body", code="malformed_message", subject="af.task.http", stream_seq=17
    ),
    EventType.TASK_APPROVAL_REQUESTED: ev.TaskApprovalRequested(
        reason="refund 90?", data={"amount": 90}, index=1, timeout_s=3600.0, on_timeout="fail"
    ),
    EventType.TASK_APPROVAL_EXPIRED: ev.TaskApprovalExpired(due_ns=1_700_000_000_000_000_000),
    EventType.TASK_WAIT_ELAPSED: ev.TaskWaitElapsed(due_ns=1_700_000_000_000_000_000),
    EventType.TASK_APPROVAL_DECIDED: ev.TaskApprovalDecided(
        index=1, decision=ev.ApprovalDecision(approved=False, comment="no", by="ann")
    ),
    EventType.TASK_TOOL_CALLED: ev.TaskToolCalled(
        tool="search", agent="a", call=0, key="k", params_hash="ab", outcome="ok"
    ),
    EventType.TASK_AUCTION_OPENED: ev.TaskAuctionOpened(
        capability="pick",
        queue="pick",
        window_s=0.5,
        due_ns=1_700_000_000_000_000_000,
        claim_timeout_s=30.0,
        params={"k": 1},
    ),
    EventType.TASK_BID: ev.TaskBid(worker="w-1", agent="picker", value=0.5),
    EventType.TASK_AUCTION_CLOSED: ev.TaskAuctionClosed(due_ns=1_700_000_000_000_000_000),
    EventType.TASK_AWARDED: ev.TaskAwarded(winner="w-1", agent="picker", value=0.5, bids=3),
    EventType.TASK_CLAIM_EXPIRED: ev.TaskClaimExpired(
        winner="w-1", claim_timeout_s=30.0, due_ns=1_700_000_000_000_000_000
    ),
    EventType.INTERVENTION_REQUESTED: ev.InterventionRequested(
        request_id="r1",
        action="modify",
        by="ann",
        changes=ev.Modification(remove=["b"], params={"c": {"k": 1}}),
    ),
    EventType.INTERVENTION_APPLIED: ev.InterventionApplied(
        request_id="r1", action="feedback", text="hi", feedback=["hi"]
    ),
    EventType.INTERVENTION_REFUSED: ev.InterventionRefused(
        request_id="r1", action="pause", reason="already paused", code="already_paused"
    ),
    EventType.WORKFLOW_ABORTED: ev.WorkflowAborted(reason="stop", by="ann", cancelled=["b"]),
    EventType.WORKFLOW_CANCELLED: ev.WorkflowCancelled(
        reason="enough", by="ann", cancelled=["b"], completed=["a"]
    ),
    EventType.AGENT_STATE_CHANGED: ev.AgentStateChanged(
        instance="w1.a.0",
        agent="a",
        worker="w1",
        from_state="idle",
        to_state="processing",
        trigger="task_assigned",
    ),
    EventType.TASK_OUTPUT: ev.TaskOutput(
        index=2,
        chunks=[
            ev.OutputChunk(kind="token", data="Hel", at_ns=5),
            ev.OutputChunk(kind="artifact", data=b"\x00\xff", at_ns=6),
            ev.OutputChunk(kind="progress", data={"done": 3, "of": 4}, at_ns=7),
        ],
        dropped=1,
        last=True,
    ),
}


def make_event(
    event_type: EventType = EventType.TASK_COMPLETED,
    data: Payload | None = None,
    *,
    workflow_id: str = WF,
    task_id: str | None = "fetch",
    attempt: int | None = 1,
) -> Event:
    return Event(
        id=task_key(workflow_id, task_id or "-", attempt or 0, event_type.value),
        type=event_type,
        workflow_id=workflow_id,
        source="coordinator-host-1-abc",
        timestamp=1_700_000_000_123_456_789,
        vclock=VectorClock({"coordinator-host-1-abc": 3, "worker-1": 2}),
        data=data if data is not None else SAMPLES[event_type],
        task_id=task_id,
        attempt=attempt,
    )


def make_task(**overrides: Any) -> TaskMessage:
    fields: dict[str, Any] = {
        "workflow_id": WF,
        "task_id": "sum.up",
        "attempt": 2,
        "capability": "math",
        "params": {"op": "add", "nested": {"x": [1, 2]}},
        "inputs": {"fetch": {"rows": [1, 2, 3]}},
        "workflow_input": {"n": 3},
        "timeout_s": 2.5,
        "vclock": VectorClock({"coordinator-1": 4}),
        "source": "coordinator-1",
    }
    fields.update(overrides)
    return TaskMessage(**fields)


# Events ----------------------------------------------------------------------


def test_samples_cover_every_event_type() -> None:
    assert set(SAMPLES) == set(EventType) == set(PAYLOADS)
    for event_type, payload in SAMPLES.items():
        assert type(payload) is PAYLOADS[event_type]


@pytest.mark.parametrize("event_type", list(EventType))
def test_event_round_trip(event_type: EventType) -> None:
    event = make_event(event_type)
    subject, headers, body = encode_event(event, NAMES)

    assert subject == f"af.evt.{WF}.{event_type.value}"
    assert headers[H_MSG_ID] == event.id
    assert headers[H_TYPE] == event_type.value
    assert headers[H_SCHEMA] == str(REGISTRY.version(event_type.value))
    assert headers[H_VCLOCK] == "coordinator-host-1-abc:3,worker-1:2"
    assert headers[H_SOURCE] == event.source
    assert all(isinstance(v, str) for v in headers.values())
    assert isinstance(body, bytes)

    decoded = decode_event(subject, headers, body, NAMES, seq=99)
    assert decoded.seq == 99
    assert type(decoded.data) is PAYLOADS[event_type]
    assert decoded.data == event.data
    assert decoded == event.model_copy(update={"seq": 99})


def test_event_round_trip_without_task() -> None:
    event = make_event(EventType.WORKFLOW_STARTED, task_id=None, attempt=None)
    decoded = decode_event(*encode_event(event, NAMES), NAMES)
    assert decoded == event
    assert decoded.task_id is None
    assert decoded.attempt is None
    assert decoded.seq is None


def test_event_round_trip_system_workflow() -> None:
    event = make_event(EventType.MESSAGE_REJECTED, workflow_id=SYSTEM_WORKFLOW, task_id=None)
    subject, headers, body = encode_event(event, NAMES)
    assert subject == f"af.evt.{SYSTEM_WORKFLOW}.message.rejected"
    assert decode_event(subject, headers, body, NAMES) == event


def test_event_round_trip_other_prefix() -> None:
    names = Names("test_7")
    event = make_event()
    subject, headers, body = encode_event(event, names)
    assert subject.startswith("test_7.evt.")
    assert decode_event(subject, headers, body, names) == event
    with pytest.raises(MalformedMessageError, match="not an event subject"):
        decode_event(subject, headers, body, NAMES)


def test_event_empty_vclock_round_trip() -> None:
    event = make_event().model_copy(update={"vclock": VectorClock()})
    subject, headers, body = encode_event(event, NAMES)
    assert headers[H_VCLOCK] == ""
    assert decode_event(subject, headers, body, NAMES).vclock == VectorClock()


def test_decode_event_ignores_unknown_payload_fields() -> None:
    """Rolling upgrades: a newer node may add payload fields."""
    subject, headers, _ = encode_event(make_event(EventType.TASK_STARTED), NAMES)
    body = pack(
        {
            "ts": 1,
            "task": "fetch",
            "attempt": 1,
            "data": {"worker": "w", "agent": "a", "instance": "w.a.0", "new_field": [1]},
            "extra": True,
        }
    )
    decoded = decode_event(subject, headers, body, NAMES)
    assert decoded.data == TaskStarted(worker="w", agent="a", instance="w.a.0")


def test_decode_event_missing_data_uses_defaults() -> None:
    subject, headers, _ = encode_event(make_event(EventType.TASK_RETRY_DUE), NAMES)
    decoded = decode_event(subject, headers, pack({"ts": 5}), NAMES)
    assert decoded.data == TaskRetryDue()
    assert decoded.timestamp == 5


# Event decode errors ---------------------------------------------------------


def _encoded(event_type: EventType = EventType.TASK_STARTED) -> tuple[str, dict[str, str], bytes]:
    return encode_event(make_event(event_type), NAMES)


@pytest.mark.parametrize(
    "body", [b"\xc1", b"\x92\x01", b"\x81\xa1", b"", b"\xff" * 3, b"\x91\x01\x02"]
)
def test_decode_event_garbage_body(body: bytes) -> None:
    subject, headers, _ = _encoded()
    with pytest.raises(MalformedMessageError, match="not valid msgpack"):
        decode_event(subject, headers, body, NAMES)


@pytest.mark.parametrize("value", [[1, 2], "text", 3, None, b"raw"])
def test_decode_event_body_not_a_map(value: object) -> None:
    subject, headers, _ = _encoded()
    with pytest.raises(MalformedMessageError, match="event body must be a map"):
        decode_event(subject, headers, pack(value), NAMES)


def test_decode_event_no_headers() -> None:
    subject, _, body = _encoded()
    with pytest.raises(MalformedMessageError, match=f"missing header {H_TYPE}"):
        decode_event(subject, None, body, NAMES)
    with pytest.raises(MalformedMessageError, match=f"missing header {H_TYPE}"):
        decode_event(subject, {}, body, NAMES)


@pytest.mark.parametrize("header", [H_TYPE, H_MSG_ID, H_SOURCE, H_VCLOCK, H_SCHEMA])
def test_decode_event_missing_header(header: str) -> None:
    subject, headers, body = _encoded()
    del headers[header]
    with pytest.raises(MalformedMessageError, match=f"missing header {header}"):
        decode_event(subject, headers, body, NAMES)


def test_decode_event_type_does_not_match_subject() -> None:
    subject, headers, body = _encoded(EventType.TASK_STARTED)
    headers[H_TYPE] = EventType.TASK_COMPLETED.value
    with pytest.raises(MalformedMessageError, match="does not match the subject") as info:
        decode_event(subject, headers, body, NAMES)
    assert "task.completed" in str(info.value)
    assert "task.started" in str(info.value)


def test_decode_event_unknown_type() -> None:
    _, headers, body = _encoded()
    headers[H_TYPE] = "task.exploded"
    with pytest.raises(MalformedMessageError, match=r"unknown event type 'task\.exploded'"):
        decode_event(f"af.evt.{WF}.task.exploded", headers, body, NAMES)


@pytest.mark.parametrize(
    "subject", ["af.task.http", "xx.evt.wf.task.started", "af.evt.", f"af.evt.{WF}", "af.evt..x"]
)
def test_decode_event_not_an_event_subject(subject: str) -> None:
    _, headers, body = _encoded()
    with pytest.raises(MalformedMessageError, match="is not an event subject"):
        decode_event(subject, headers, body, NAMES)


def test_decode_event_newer_schema() -> None:
    subject, headers, body = _encoded()
    headers[H_SCHEMA] = str(REGISTRY.version(EventType.TASK_STARTED.value) + 1)
    with pytest.raises(
        UnknownSchemaVersionError, match=r"task\.started payload has schema version 3, newer"
    ):
        decode_event(subject, headers, body, NAMES)


def test_a_version_1_task_started_is_migrated() -> None:
    """Version 1 had no ``instance``: reading names the agent's registry entry."""
    subject, headers, _ = _encoded()
    headers[H_SCHEMA] = "1"
    body = pack({"ts": 1, "task": "fetch", "attempt": 1, "data": {"worker": "w", "agent": "a"}})
    decoded = decode_event(subject, headers, body, NAMES)
    assert decoded.data == TaskStarted(worker="w", agent="a", instance="w.a")
    assert decoded.migrated_from == 1


def test_every_payload_version_reaches_the_current_one() -> None:
    for kind in REGISTRY.kinds():
        assert REGISTRY.oldest(kind) == 1, kind


@pytest.mark.parametrize("value", ["x", "", "-1", "1.0", " 1"])
def test_decode_event_invalid_schema_header(value: str) -> None:
    subject, headers, body = _encoded()
    headers[H_SCHEMA] = value
    with pytest.raises(MalformedMessageError, match=f"invalid {H_SCHEMA} header"):
        decode_event(subject, headers, body, NAMES)


def test_decode_event_older_than_any_migration() -> None:
    subject, headers, body = _encoded()
    headers[H_SCHEMA] = "0"
    with pytest.raises(UnknownSchemaVersionError, match="older than any this node migrates from"):
        decode_event(subject, headers, body, NAMES)


def test_decode_event_unicode_digit_schema() -> None:
    subject, headers, body = _encoded()
    headers[H_SCHEMA] = "²"
    with pytest.raises(MalformedMessageError):
        decode_event(subject, headers, body, NAMES)


def test_decode_event_payload_does_not_match_schema() -> None:
    subject, headers, _ = _encoded(EventType.TASK_STARTED)
    body = pack({"ts": 1, "data": {"worker": "w"}})
    with pytest.raises(MalformedMessageError, match="payload does not match its schema") as info:
        decode_event(subject, headers, body, NAMES)
    message = str(info.value)
    assert message.startswith("task.started")
    assert "agent" in message


def test_decode_event_payload_wrong_type() -> None:
    subject, headers, _ = _encoded(EventType.TASK_RETRY_SCHEDULED)
    body = pack({"ts": 1, "data": {"next_attempt": "two", "delay_s": 1.0, "due_ns": 5}})
    with pytest.raises(MalformedMessageError, match="next_attempt"):
        decode_event(subject, headers, body, NAMES)


def test_decode_event_payload_not_a_map() -> None:
    subject, headers, _ = _encoded(EventType.TASK_STARTED)
    with pytest.raises(MalformedMessageError, match="does not match its schema"):
        decode_event(subject, headers, pack({"ts": 1, "data": [1, 2]}), NAMES)


def test_decode_event_missing_timestamp() -> None:
    subject, headers, _ = _encoded(EventType.TASK_RETRY_DUE)
    with pytest.raises(MalformedMessageError, match="timestamp"):
        decode_event(subject, headers, pack({"data": {}}), NAMES)


def test_decode_event_bad_attempt() -> None:
    subject, headers, _ = _encoded(EventType.TASK_RETRY_DUE)
    with pytest.raises(MalformedMessageError, match="attempt"):
        decode_event(subject, headers, pack({"ts": 1, "attempt": "x"}), NAMES)


@pytest.mark.parametrize("value", ["a:x", "a", "a:1,a:2", ":1", "a b:1", "a:-1"])
def test_decode_event_malformed_vclock(value: str) -> None:
    subject, headers, body = _encoded()
    headers[H_VCLOCK] = value
    with pytest.raises(MalformedMessageError, match="vector clock"):
        decode_event(subject, headers, body, NAMES)


def test_decode_errors_are_message_errors() -> None:
    assert issubclass(MalformedMessageError, MessageError)
    assert MalformedMessageError.code == "malformed_message"


# Task messages ---------------------------------------------------------------


def test_task_round_trip() -> None:
    task = make_task()
    subject, headers, body = encode_task(task, NAMES)

    assert subject == "af.task.math"
    assert headers == {
        H_MSG_ID: f"{WF}:sum.up:2:task",
        H_TYPE: "task",
        H_SCHEMA: str(SCHEMA_VERSION),
        H_VCLOCK: "coordinator-1:4",
        H_SOURCE: "coordinator-1",
        H_WORKFLOW: WF,
        H_TASK: "sum.up",
        H_ATTEMPT: "2",
    }
    raw = unpack(body)
    assert "vclock" not in raw
    assert "source" not in raw

    assert decode_task(subject, headers, body) == task


def test_task_round_trip_defaults() -> None:
    task = TaskMessage(workflow_id=WF, task_id="t", attempt=1, capability="echo")
    decoded = decode_task(*encode_task(task, NAMES))
    assert decoded == task
    assert decoded.params == {}
    assert decoded.timeout_s is None
    assert decoded.vclock == VectorClock()
    assert decoded.source == ""


def test_task_msg_id_matches_task_key() -> None:
    task = make_task()
    assert task.msg_id == task_key(task.workflow_id, task.task_id, task.attempt, "task")


def test_task_message_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempt"):
        make_task(attempt=0)


def _task_encoded() -> tuple[str, dict[str, str], bytes]:
    return encode_task(make_task(), NAMES)


def test_decode_task_wrong_type_header() -> None:
    subject, headers, body = _task_encoded()
    headers[H_TYPE] = "task.started"
    with pytest.raises(MalformedMessageError, match="is not 'task'"):
        decode_task(subject, headers, body)


@pytest.mark.parametrize("header", [H_TYPE, H_SCHEMA, H_VCLOCK, H_SOURCE])
def test_decode_task_missing_header(header: str) -> None:
    subject, headers, body = _task_encoded()
    del headers[header]
    with pytest.raises(MalformedMessageError, match=f"missing header {header}"):
        decode_task(subject, headers, body)


def test_decode_task_no_headers() -> None:
    subject, _, body = _task_encoded()
    with pytest.raises(MalformedMessageError, match="missing header"):
        decode_task(subject, None, body)


def test_decode_task_garbage_body() -> None:
    subject, headers, _ = _task_encoded()
    with pytest.raises(MalformedMessageError, match="not valid msgpack"):
        decode_task(subject, headers, b"\xc1\xc1")


def test_decode_task_body_not_a_map() -> None:
    subject, headers, _ = _task_encoded()
    with pytest.raises(MalformedMessageError, match="task body must be a map"):
        decode_task(subject, headers, pack(["x"]))


def test_decode_task_newer_schema() -> None:
    subject, headers, body = _task_encoded()
    headers[H_SCHEMA] = str(SCHEMA_VERSION + 5)
    with pytest.raises(MalformedMessageError, match="newer"):
        decode_task(subject, headers, body)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"attempt": 0}, "attempt"),
        ({"attempt": "first"}, "attempt"),
        ({"capability": None}, "capability"),
        ({"params": [1]}, "params"),
        ({"timeout_s": "soon"}, "timeout_s"),
    ],
)
def test_decode_task_payload_does_not_match_schema(change: dict[str, Any], field: str) -> None:
    subject, headers, body = _task_encoded()
    raw = {**unpack(body), **change}
    with pytest.raises(MalformedMessageError, match="task message does not match") as info:
        decode_task(subject, headers, pack(raw))
    assert field in str(info.value)


def test_decode_task_missing_field() -> None:
    subject, headers, body = _task_encoded()
    raw = unpack(body)
    del raw["workflow_id"]
    with pytest.raises(MalformedMessageError, match="workflow_id"):
        decode_task(subject, headers, pack(raw))


def test_decode_task_malformed_vclock() -> None:
    subject, headers, body = _task_encoded()
    headers[H_VCLOCK] = "a:1,a:2"
    with pytest.raises(MalformedMessageError, match="vector clock"):
        decode_task(subject, headers, body)


@pytest.mark.parametrize("subject", ["af.task.http", "af.task.xmath", "af.task.math.x"])
def test_decode_task_wrong_capability_subject(subject: str) -> None:
    _, headers, body = _task_encoded()
    with pytest.raises(MalformedMessageError, match="queue 'math' arrived on subject"):
        decode_task(subject, headers, body)


def test_decode_task_header_vclock_and_source_win_over_body() -> None:
    subject, headers, body = _task_encoded()
    raw = {**unpack(body), "vclock": {"evil": 9}, "source": "evil"}
    task = decode_task(subject, headers, pack(raw))
    assert task.vclock == VectorClock({"coordinator-1": 4})
    assert task.source == "coordinator-1"


def test_task_identity_with_bad_body() -> None:
    _, headers, _ = _task_encoded()
    assert task_identity(headers) == (WF, "sum.up", 2)


@pytest.mark.parametrize("missing", [H_WORKFLOW, H_TASK, H_ATTEMPT])
def test_task_identity_missing_header(missing: str) -> None:
    _, headers, _ = _task_encoded()
    del headers[missing]
    assert task_identity(headers) is None


@pytest.mark.parametrize("attempt", ["x", "", "1.5"])
def test_task_identity_bad_attempt(attempt: str) -> None:
    _, headers, _ = _task_encoded()
    headers[H_ATTEMPT] = attempt
    assert task_identity(headers) is None


def test_task_identity_no_headers() -> None:
    assert task_identity(None) is None
    assert task_identity({}) is None


# Size checks -----------------------------------------------------------------


def test_event_payload_too_large() -> None:
    event = make_event(EventType.TASK_COMPLETED, TaskCompleted(result="x" * 5000))
    with pytest.raises(PayloadTooLargeError, match="exceeds the server's max_payload of 4096"):
        encode_event(event, NAMES, max_payload=4096)
    assert encode_event(event, NAMES, max_payload=8192)[2]


def test_event_payload_too_large_default_limit() -> None:
    event = make_event(
        EventType.TASK_COMPLETED, TaskCompleted(result=b"\0" * (DEFAULT_MAX_PAYLOAD + 1))
    )
    with pytest.raises(PayloadTooLargeError):
        encode_event(event, NAMES)


def test_task_payload_too_large() -> None:
    task = make_task(inputs={"big": "y" * 10_000})
    with pytest.raises(PayloadTooLargeError, match="max_payload of 1000"):
        encode_task(task, NAMES, max_payload=1000)


def test_payload_too_large_counts_headers() -> None:
    """A small body with large headers is still too large."""
    event = make_event(EventType.TASK_RETRY_DUE).model_copy(update={"source": "s" * 2000})
    with pytest.raises(PayloadTooLargeError):
        encode_event(event, NAMES, max_payload=2000)


def test_check_size_boundary() -> None:
    headers = {"K": "vv"}  # 1 + 2 + 4 bytes
    body = b"x" * 100
    limit = 100 + 64 + 7
    check_size(headers, body, limit)
    with pytest.raises(PayloadTooLargeError, match=f"message of {limit} bytes"):
        check_size(headers, body, limit - 1)


def test_payload_too_large_is_a_message_error() -> None:
    assert issubclass(PayloadTooLargeError, MessageError)
    assert not issubclass(PayloadTooLargeError, MalformedMessageError)


# pack / unpack ---------------------------------------------------------------


@pytest.mark.parametrize("value", [object(), {1, 2}, 2**64, -(2**63) - 1, "\ud800"])
def test_pack_unserialisable(value: object) -> None:
    with pytest.raises(MalformedMessageError, match="cannot be encoded as msgpack"):
        pack(value)


def test_pack_unpack_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "s", b"bytes"], "n": {"k": -(2**63)}, 5: 2**64 - 1}
    assert unpack(pack(value)) == value


def test_unpack_extra_bytes_is_malformed() -> None:
    with pytest.raises(MalformedMessageError):
        unpack(msgpack.packb(1) + msgpack.packb(2))


# Property: arbitrary results survive a TaskCompleted round trip --------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
results = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(database=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(results)
def test_task_completed_result_round_trip(result: Any) -> None:
    event = make_event(EventType.TASK_COMPLETED, TaskCompleted(result=result, worker="w"))
    decoded = decode_event(*encode_event(event, NAMES), NAMES)
    assert isinstance(decoded.data, TaskCompleted)
    assert decoded.data.result == result
    assert decoded == event


@settings(database=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(min_size=1, max_size=10), results, max_size=4))
def test_task_params_round_trip(params: dict[str, Any]) -> None:
    task = make_task(params=params, inputs={"dep": params})
    assert decode_task(*encode_task(task, NAMES)) == task


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b", "x\r\nAF-Type: workflow.submitted"])
def test_header_values_with_line_breaks_or_nul_are_never_sent(bad: str) -> None:
    event = make_event(EventType.TASK_STARTED).model_copy(update={"source": bad})
    with pytest.raises(MalformedMessageError, match="AF-Source holds CR, LF or NUL"):
        encode_event(event, NAMES)
    with pytest.raises(MalformedMessageError, match="holds CR, LF or NUL"):
        check_size({"X-Note": bad}, b"", DEFAULT_MAX_PAYLOAD)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("AF-Schema", "1" * 4400),
        ("AF-Schema", "1" * 20),
        ("AF-Schema", "\u0661"),
        ("AF-VClock", "x:" + "9" * 4400),
        ("AF-VClock", f"x:{2**63}"),
        ("AF-VClock", ",".join(f"n{i}:1" for i in range(5000))[:8000]),
    ],
)
def test_numbers_in_headers_are_bounded_before_they_are_parsed(header: str, value: str) -> None:
    subject, headers, body = encode_event(make_event(EventType.TASK_STARTED), NAMES)
    with pytest.raises(MalformedMessageError):
        decode_event(subject, {**headers, header: value}, body, NAMES)


def test_a_task_identity_with_a_huge_attempt_is_unreadable() -> None:
    _, headers, _ = encode_task(
        TaskMessage(workflow_id="wf", task_id="t", attempt=1, capability="x"), NAMES
    )
    assert task_identity(headers) == ("wf", "t", 1)
    assert task_identity({**headers, "AF-Attempt": "1" * 4400}) is None
    assert task_identity({**headers, "AF-Workflow": "../etc"}) is None


@pytest.mark.parametrize(
    "change",
    [
        {"headers": {"AF-Source": "a b"}},
        {"headers": {"AF-Source": "x" * 129}},
        {"headers": {"AF-Source": "caf\u00e9"}},
        {"body": {"task": "../../x"}},
        {"body": {"task": 7}},
        {"body": {"attempt": 2**31}},
        {"body": {"attempt": -1}},
        {"body": {"attempt": True}},
        {"body": {"attempt": "1"}},
    ],
)
def test_event_envelope_fields_are_checked_by_pattern_and_range(change: dict[str, Any]) -> None:
    subject, headers, body = encode_event(make_event(EventType.TASK_STARTED), NAMES)
    raw = {**msgpack.unpackb(body), **change.get("body", {})}
    with pytest.raises(MalformedMessageError):
        decode_event(subject, {**headers, **change.get("headers", {})}, pack(raw), NAMES)
