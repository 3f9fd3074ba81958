"""The one codec: events and task messages to NATS headers + msgpack body.

Headers (DESIGN section 4): ``Nats-Msg-Id`` (the event id, which JetStream
dedupes on), ``AF-Type``, ``AF-Schema``, ``AF-VClock`` (``n1:12,n2:7``) and
``AF-Source``. Task messages also carry ``AF-Workflow``, ``AF-Task`` and
``AF-Attempt`` so that a task whose body is unreadable can still be reported
against its workflow.

Every decode error is a :class:`~agenticflow.shared.errors.MalformedMessageError`; every
message is size-checked before it is published, because nats-py checks only
the body and the server drops the whole connection for an oversized message.

With a :class:`~agenticflow.shared.security.seal.Seal`, encoding encrypts and signs the body
(``AF-Enc``, ``AF-Key``, ``AF-TS``, ``AF-Sig``) and decoding verifies and
decrypts it first; a forged, replayed or undecryptable message is a
MalformedMessageError too (its subclasses), so it takes the poison path:
recorded, terminated, never applied. Received input is bounded: at most
:data:`MAX_HEADERS` headers of :data:`MAX_HEADER_BYTES` in all, and lists and
maps nested at most :data:`MAX_DEPTH` deep.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agenticflow.shared.errors import (
    ConfigError,
    MalformedMessageError,
    PayloadTooLargeError,
    UnknownSchemaVersionError,
)
from agenticflow.shared.ops.telemetry import inject
from agenticflow.shared.security.seal import Seal, TrustedKey
from agenticflow.shared.wire.events import (
    SCHEMA_VERSION,
    ApprovalDecision,
    Event,
    EventType,
    RecordedEffect,
)
from agenticflow.shared.wire.ids import ID_RE, TASK_ID_RE
from agenticflow.shared.wire.names import Names, queue_of
from agenticflow.shared.wire.schemas import REGISTRY, read_payload
from agenticflow.shared.wire.vclock import MAX_COUNTER, VectorClock

H_MSG_ID = "Nats-Msg-Id"
H_TYPE = "AF-Type"
H_SCHEMA = "AF-Schema"
H_VCLOCK = "AF-VClock"
H_SOURCE = "AF-Source"
H_WORKFLOW = "AF-Workflow"
H_TASK = "AF-Task"
H_ATTEMPT = "AF-Attempt"

TASK_TYPE = "task"
DEFAULT_MAX_PAYLOAD = 1024 * 1024
MAX_DEPTH = 64
"""Deepest nesting of lists and maps accepted in a received body."""
MAX_HEADERS = 32
MAX_HEADER_BYTES = 8 * 1024
MAX_ATTEMPT = 2**31 - 1
"""Largest attempt number a received event may name."""
_NAME_RE = re.compile(r"^[\x21-\x7e]{1,128}\Z")
"""A node id or principal in a header: 1-128 printable ASCII characters, no spaces."""
_HEADER_OVERHEAD = 64  # "NATS/1.0\r\n", separators and the trailing CRLF


def pack(value: Any) -> bytes:
    """msgpack-encode plain data; raises MalformedMessageError for other types."""
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise MalformedMessageError(f"value cannot be encoded as msgpack: {exc}") from exc


def unpack(body: bytes, *, max_depth: int | None = None) -> Any:
    """msgpack-decode a body; raises MalformedMessageError, also when lists and
    maps are nested deeper than ``max_depth``."""
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except msgpack.StackError as exc:
        raise MalformedMessageError("body is nested too deeply") from exc
    except Exception as exc:  # msgpack raises several unrelated types
        raise MalformedMessageError(f"body is not valid msgpack: {exc}") from exc
    if max_depth is not None and len(body) > max_depth:  # a shorter body cannot be deeper
        check_depth(value, max_depth)
    return value


def check_depth(value: Any, limit: int) -> None:
    """Raise MalformedMessageError if lists and maps nest deeper than ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise MalformedMessageError(f"body nests lists and maps deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def check_headers(headers: Mapping[str, str] | None) -> None:
    """Raise MalformedMessageError for too many or too large headers."""
    if not headers:
        return
    if len(headers) > MAX_HEADERS:
        raise MalformedMessageError(f"{len(headers)} headers, more than {MAX_HEADERS}")
    size = sum(len(k) + len(v) for k, v in headers.items())
    if size > MAX_HEADER_BYTES:
        raise MalformedMessageError(f"headers of {size} bytes, more than {MAX_HEADER_BYTES}")


def check_size(headers: Mapping[str, str], body: bytes, max_payload: int) -> None:
    """Raise PayloadTooLargeError when headers + body exceed ``max_payload``, and
    MalformedMessageError when a header value holds CR, LF or NUL (which the
    server would turn into spaces or a broken frame)."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\0" in value:
            raise MalformedMessageError(f"header {name} holds CR, LF or NUL: not sent")
    size = len(body) + _HEADER_OVERHEAD + sum(len(k) + len(v) + 4 for k, v in headers.items())
    if size > max_payload:
        raise PayloadTooLargeError(
            f"message of {size} bytes exceeds the server's max_payload of {max_payload} bytes"
        )


@contextmanager
def _unreadable(what: str) -> Iterator[None]:
    """Whatever a decoder raises is the message's fault: a MalformedMessageError."""
    try:
        yield
    except MalformedMessageError:
        raise
    except Exception as exc:
        raise MalformedMessageError(f"{what} cannot be read: {type(exc).__name__}: {exc}") from exc


def _header(headers: Mapping[str, str] | None, name: str) -> str:
    value = (headers or {}).get(name)
    if value is None:
        raise MalformedMessageError(f"missing header {name}")
    return value


def parse_uint(text: str, what: str, *, digits: int = 19) -> int:
    """A non-negative decimal integer of at most ``digits`` digits (bounded work:
    checked before it is converted); raises MalformedMessageError."""
    if not (0 < len(text) <= digits and text.isascii() and text.isdigit()):
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"
        raise MalformedMessageError(f"invalid {what} {shown!r}: expected up to {digits} digits")
    return int(text)


def _schema(headers: Mapping[str, str] | None) -> int:
    return parse_uint(_header(headers, H_SCHEMA), f"{H_SCHEMA} header", digits=6)


# Events ---------------------------------------------------------------------


def encode_event(
    event: Event, names: Names, *, max_payload: int = DEFAULT_MAX_PAYLOAD, seal: Seal | None = None
) -> tuple[str, dict[str, str], bytes]:
    """``(subject, headers, body)`` of an event; raises PayloadTooLargeError."""
    subject = names.event_subject(event.workflow_id, event.type.value)
    headers = {
        H_MSG_ID: seal.message_id(event.id) if seal is not None else event.id,
        H_TYPE: event.type.value,
        H_SCHEMA: str(REGISTRY.version(event.type.value)),
        H_VCLOCK: event.vclock.encode(),
        H_SOURCE: event.source,
    }
    inject(headers)
    body = pack(
        {
            "ts": event.timestamp,
            "task": event.task_id,
            "attempt": event.attempt,
            "data": event.data.model_dump(mode="python"),
        }
    )
    if seal is not None:
        body = seal.close(subject, headers, body)
    check_size(headers, body, max_payload)
    return subject, headers, body


def decode_event(
    subject: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    names: Names,
    *,
    seq: int | None = None,
    seal: Seal | None = None,
    stored_ns: int | None = None,
) -> Event:
    """Rebuild an event from a stored message; raises MalformedMessageError.

    With a seal, the message is verified (replays by ``stored_ns``, the server's
    time of storing it) and decrypted first; the event's ``signer`` names the
    principal whose key signed it (and ``signer_role`` its role)."""
    with _unreadable("event"):
        return _decode_event(subject, headers, body, names, seq=seq, seal=seal, stored_ns=stored_ns)


def _decode_event(
    subject: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    names: Names,
    *,
    seq: int | None,
    seal: Seal | None,
    stored_ns: int | None,
) -> Event:
    check_headers(headers)
    subject = names.published_subject(subject)  # the stored one carries its partition
    signer: TrustedKey | None = None
    if seal is not None:
        body, signer = seal.open(subject, headers, body, stored_ns=stored_ns)
    parsed = names.parse_event_subject(subject)
    if parsed is None:
        raise MalformedMessageError(f"{subject!r} is not an event subject")
    workflow_id, subject_type = parsed
    type_text = _header(headers, H_TYPE)
    if type_text != subject_type:
        raise MalformedMessageError(
            f"{H_TYPE} {type_text!r} does not match the subject's event type {subject_type!r}"
        )
    try:
        event_type = EventType(type_text)
    except ValueError as exc:
        raise MalformedMessageError(f"unknown event type {type_text!r}") from exc
    version = _schema(headers)
    raw = unpack(body, max_depth=MAX_DEPTH)
    if not isinstance(raw, dict):
        raise MalformedMessageError("event body must be a map")
    source = _header(headers, H_SOURCE)
    if not _NAME_RE.match(source):
        raise MalformedMessageError(f"invalid {H_SOURCE} header: 1-128 printable ASCII characters")
    task_id, attempt, ts = raw.get("task"), raw.get("attempt"), raw.get("ts")
    if not (type(ts) is int and 0 <= ts <= MAX_COUNTER):
        raise MalformedMessageError("invalid timestamp in the event body (0 to 2^63-1 ns)")
    if task_id is not None and not (isinstance(task_id, str) and TASK_ID_RE.match(task_id)):
        raise MalformedMessageError("invalid task id in the event body")
    if attempt is not None and not (type(attempt) is int and 0 <= attempt <= MAX_ATTEMPT):
        raise MalformedMessageError(f"invalid attempt in the event body (0 to {MAX_ATTEMPT})")
    try:
        data = read_payload(event_type, version, raw.get("data") or {})
        return Event(
            id=_header(headers, H_MSG_ID),
            type=event_type,
            workflow_id=workflow_id,
            source=source,
            timestamp=ts,
            vclock=VectorClock.decode(_header(headers, H_VCLOCK)),
            data=data,
            task_id=task_id,
            attempt=attempt,
            migrated_from=version if version != REGISTRY.version(event_type.value) else None,
            seq=seq,
            stored_ns=stored_ns,
            signer=signer.principal if signer else None,
            signer_role=signer.role if signer else None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedMessageError(
            f"{event_type.value} payload does not match its schema: {where}: {first['msg']}"
        ) from exc


# Task messages --------------------------------------------------------------


class TaskMessage(BaseModel):
    """What a worker receives: one attempt of one task."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    workflow_id: str
    task_id: str
    attempt: int = Field(ge=1)
    capability: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    """Results of the task's dependencies, by task id."""
    workflow_input: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = None
    heartbeat_s: float | None = None
    """Send a ``task.heartbeat`` this often while running (None: don't)."""
    vclock: VectorClock = Field(default_factory=VectorClock)
    source: str = ""
    route: str | None = None
    """Only the workers started with this route serve the task (see :func:`queue_of`)."""
    recorded: list[RecordedEffect] = Field(default_factory=list)
    """Side effects this attempt made in the run being re-executed, in call order."""
    replay: bool = False
    """Serve side effects from ``recorded`` only; a call not in it fails the task."""
    approval: ApprovalDecision | None = None
    """The decision of the task's approval gate, if it has one."""
    approvals: list[ApprovalDecision] = Field(default_factory=list)
    """Decisions of the handler's ``ctx.request_approval`` calls so far, in order."""
    feedback: list[str] = Field(default_factory=list)
    """Feedback people sent to the workflow before this attempt was dispatched."""
    traceparent: str | None = None
    """The workflow's trace; the dispatch span's context travels in the headers."""
    direct: str | None = None
    """The worker node the task was awarded to (an auction): it travels on that
    worker's direct subject instead of the shared queue."""
    version: str | None = None
    """The agent version the workflow is pinned to for this capability: only
    workers serving it (or compatible with it) get the task."""

    @field_validator("workflow_id")
    @classmethod
    def _check_workflow_id(cls, value: str) -> str:
        if not ID_RE.match(value):
            raise ValueError("workflow id must be 1-64 letters, digits, '_' or '-'")
        return value

    @property
    def queue(self) -> str:
        """The queue the task travels on: its capability, on its route if any,
        pinned to its version if any (a route wins: it names a fixed app)."""
        return queue_of(self.capability, self.route, self.version)

    @property
    def msg_id(self) -> str:
        """Derived idempotency key of this dispatch."""
        return f"{self.workflow_id}:{self.task_id}:{self.attempt}:task"


def encode_task(
    task: TaskMessage,
    names: Names,
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    seal: Seal | None = None,
) -> tuple[str, dict[str, str], bytes]:
    """``(subject, headers, body)`` of a task message; raises PayloadTooLargeError."""
    headers = {
        H_MSG_ID: seal.message_id(task.msg_id) if seal is not None else task.msg_id,
        H_TYPE: TASK_TYPE,
        H_SCHEMA: str(SCHEMA_VERSION),
        H_VCLOCK: task.vclock.encode(),
        H_SOURCE: task.source,
        H_WORKFLOW: task.workflow_id,
        H_TASK: task.task_id,
        H_ATTEMPT: str(task.attempt),
    }
    inject(headers)
    body = pack(task.model_dump(mode="python", exclude={"vclock", "source"}, exclude_defaults=True))
    if task.direct is not None:
        subject = names.direct_subject(task.queue, task.direct)
    else:
        subject = names.task_subject(task.queue)
    if seal is not None:
        body = seal.close(subject, headers, body)
    check_size(headers, body, max_payload)
    return subject, headers, body


def decode_task(
    subject: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    *,
    seal: Seal | None = None,
    stored_ns: int | None = None,
) -> TaskMessage:
    """Rebuild a task message; raises MalformedMessageError (with a seal: also
    when it is not signed by a coordinator, replayed or undecryptable)."""
    with _unreadable("task"):
        return _decode_task(subject, headers, body, seal, stored_ns)


def _decode_task(
    subject: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    seal: Seal | None,
    stored_ns: int | None,
) -> TaskMessage:
    check_headers(headers)
    if seal is not None:
        body, _ = seal.open(subject, headers, body, stored_ns=stored_ns)
    if _header(headers, H_TYPE) != TASK_TYPE:
        raise MalformedMessageError(f"{H_TYPE} header is not {TASK_TYPE!r}")
    if (version := _schema(headers)) > SCHEMA_VERSION:
        raise UnknownSchemaVersionError(
            f"task message has schema version {version}, newer than this node "
            f"understands ({SCHEMA_VERSION}): upgrade it"
        )
    raw = unpack(body, max_depth=MAX_DEPTH)
    if not isinstance(raw, dict):
        raise MalformedMessageError("task body must be a map")
    try:
        task = TaskMessage.model_validate(
            {
                **raw,
                "vclock": VectorClock.decode(_header(headers, H_VCLOCK)),
                "source": _header(headers, H_SOURCE),
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedMessageError(
            f"task message does not match its schema: {where}: {first['msg']}"
        ) from exc
    try:
        queue = task.queue
    except ConfigError as exc:
        raise MalformedMessageError(str(exc)) from exc
    tokens = subject.split(".")
    shared = task.direct is None and len(tokens) == 3 and tokens[1:] == ["task", queue]
    direct = len(tokens) == 4 and tokens[1:] == ["direct", queue, task.direct]
    if not (shared or direct):
        raise MalformedMessageError(f"task for queue {queue!r} arrived on subject {subject!r}")
    return task


def task_identity(headers: Mapping[str, str] | None) -> tuple[str, str, int] | None:
    """``(workflow, task, attempt)`` from a task's headers, even if its body is bad."""
    try:
        attempt = parse_uint(_header(headers, H_ATTEMPT), f"{H_ATTEMPT} header", digits=9)
        workflow_id, task_id = _header(headers, H_WORKFLOW), _header(headers, H_TASK)
    except MalformedMessageError:
        return None
    if not ID_RE.match(workflow_id) or not 0 < len(task_id) <= 128 or attempt < 1:
        return None
    return workflow_id, task_id, attempt


def task_clock(headers: Mapping[str, str] | None) -> VectorClock:
    """The dispatch clock in a task's headers, even if its body is bad (empty if unreadable)."""
    try:
        return VectorClock.decode(_header(headers, H_VCLOCK))
    except MalformedMessageError:
        return VectorClock()


__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "H_MSG_ID",
    "H_SOURCE",
    "H_TYPE",
    "H_VCLOCK",
    "MAX_DEPTH",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "TaskMessage",
    "check_depth",
    "check_headers",
    "check_size",
    "decode_event",
    "decode_task",
    "encode_event",
    "encode_task",
    "pack",
    "parse_uint",
    "task_clock",
    "task_identity",
    "unpack",
]
