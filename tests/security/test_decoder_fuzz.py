"""Decoders under hostile input: whatever arrives, only MalformedMessageError.

Random subjects (event subjects of :class:`Names`, stored ones with their
partition token, task and direct subjects, junk), random header maps (the real
header names and others; values with huge, unicode or missing digits, long or
empty text) and random bodies (bytes, msgpack of anything, event-shaped maps,
deep nesting) go through ``decode_event`` and ``decode_task``, without a seal and
with seals that sign, encrypt or both; so do valid sealed messages changed a
little. The header parsers (``VectorClock.decode``, ``parse_uint``,
``task_identity``) are checked on their own.

And the positive side: a valid event or task round-trips, and changing one bit
of a sealed body, or one character of a signed header, is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agenticflow.shared.errors import (
    ForgedMessageError,
    MalformedMessageError,
    UndecryptableMessageError,
)
from agenticflow.shared.security.seal import (
    H_ENC,
    H_KEY,
    H_SIG,
    H_TS,
    DataKeys,
    Identity,
    Seal,
    TrustStore,
)
from agenticflow.shared.wire.codec import (
    H_ATTEMPT,
    H_MSG_ID,
    H_SCHEMA,
    H_SOURCE,
    H_TASK,
    H_TYPE,
    H_VCLOCK,
    H_WORKFLOW,
    TaskMessage,
    decode_event,
    decode_task,
    encode_event,
    encode_task,
    pack,
    parse_uint,
    task_identity,
)
from agenticflow.shared.wire.events import Event, EventType
from agenticflow.shared.wire.ids import ID_RE, TASK_ID_RE
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import MAX_COUNTER, VectorClock
from tests.unit.test_codec import SAMPLES

NAMES = Names(prefix="af")
COORDINATOR = Identity.generate("coordinator", "coordinator")
WORKER = Identity.generate("worker-1", "worker")
TRUST = TrustStore({identity.kid: identity.trusted() for identity in (COORDINATOR, WORKER)})
DATA = DataKeys.generate()
SEALS: dict[str, Seal | None] = {
    "none": None,
    "signed": Seal(identity=COORDINATOR, trust=TRUST),
    "encrypted": Seal(data_keys=DATA),
    "signed+encrypted": Seal(identity=COORDINATOR, trust=TRUST, data_keys=DATA),
}
"""The coordinator's seal in each mode: it signs as a coordinator (who may send
anything) and checks signatures against both keys."""
SIGNING = ["signed", "signed+encrypted"]
SIGNED_HEADERS = (
    H_MSG_ID,
    H_TYPE,
    H_SCHEMA,
    H_VCLOCK,
    H_SOURCE,
    H_WORKFLOW,
    H_TASK,
    H_ATTEMPT,
    H_ENC,
    H_KEY,
    H_TS,
)
"""The headers a signature covers (see ``agenticflow.shared.security.seal``)."""
HEADER_NAMES = [*SIGNED_HEADERS, H_SIG, "traceparent", "Nats-Sequence", "af-type", "AF-Type "]
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
CRYPTO = settings(FUZZ, max_examples=60)


# Strategies ---------------------------------------------------------------------

DIGIT_TEXT = [
    "",
    " ",
    "0",
    "1",
    "-1",
    "+1",
    " 1",
    "1 ",
    "1.0",
    "1e3",
    "0x10",
    "1_000",
    "9" * 9,
    "9" * 10,
    "9" * 19,
    "9" * 20,
    "9" * 4400,
    "9" * 5000,
    str(MAX_COUNTER),
    str(2**63),
    str(2**64),
    "\u0663",  # ARABIC-INDIC DIGIT THREE
    "\u0661\u0662\u0663",
    "\u00b2",  # SUPERSCRIPT TWO: isdigit() but not a decimal digit
    "\uff11\uff12\uff13",  # FULLWIDTH DIGITS
    "\U0001d7d7",  # MATHEMATICAL BOLD DIGIT NINE
    "\u07c0",  # NKO DIGIT ZERO
    "1\u0660",  # an ASCII digit, then an ARABIC-INDIC ZERO
]
"""Numbers as headers carry them, and what only looks like one."""
CLOCK_TEXT = [
    "coord:1",
    "coord:0",
    "coord:01",
    "coord:1,w1:2",
    "w1:2,coord:1",
    "a:1,a:2",
    "a:1,,b:2",
    "a:1,",
    ",a:1",
    ":1",
    "a:",
    "a",
    "a::1",
    "a:1:2",
    "a b:1",
    "a:" + "9" * 4400,
    "a:" + "9" * 19,
    f"a:{MAX_COUNTER}",
    f"a:{MAX_COUNTER + 1}",
    "a:\u0661",
    "x" * 129 + ":1",
    ",".join(f"n{i}:1" for i in range(4097)),
    "," * 5000,
    ":" * 100,
]
VALUES: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(DIGIT_TEXT),
    st.sampled_from(CLOCK_TEXT),
    st.sampled_from(
        [
            "task",
            "task.started",
            "workflow.submitted",
            "nope",
            COORDINATOR.kid,
            WORKER.kid,
            DATA.current,
            "AAAA",
            "====",
            "\x00",
            "\r\n",
            "x" * 9000,
        ]
    ),
    st.sampled_from([t.value for t in EventType]),
    st.from_regex(r"[0-9]{1,25}", fullmatch=True),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=25),
    st.text(max_size=60),
)
KEYS: st.SearchStrategy[str] = st.sampled_from(HEADER_NAMES) | st.text(max_size=20)
HEADERS: st.SearchStrategy[dict[str, str] | None] = st.none() | st.dictionaries(
    KEYS, VALUES, max_size=40
)
WORKFLOW_IDS: st.SearchStrategy[str] = st.from_regex(ID_RE) | st.text(max_size=70)
EVENT_TYPES: st.SearchStrategy[str] = st.sampled_from(
    [t.value for t in EventType] + ["task", "nope", "", "task.", ".x", "1", "1.task.started"]
) | st.text(max_size=30)
SUBJECTS: st.SearchStrategy[str] = st.one_of(
    st.builds(NAMES.event_subject, WORKFLOW_IDS, EVENT_TYPES),
    st.builds(
        lambda wf, partition, kind: f"af.evt.{wf}.{partition}.{kind}",
        WORKFLOW_IDS,
        st.integers(0, 99),
        EVENT_TYPES,
    ),
    st.builds(NAMES.task_subject, st.text(max_size=20)),
    st.builds(NAMES.direct_subject, st.text(max_size=20), st.text(max_size=20)),
    st.sampled_from(["", "af", "af.evt", "af.evt.", "af.evt..", "af.evt.wf.", "af.evt.wf.1."]),
    st.text(max_size=80),
)
PLAIN: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
"""Anything msgpack carries."""
FIELDS = st.sampled_from(
    ["worker", "agent", "instance", "result", "error", "definition", "action", "request_id"]
)
EVENT_BODIES: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "ts": PLAIN,
        "task": PLAIN | st.from_regex(TASK_ID_RE),
        "attempt": PLAIN | st.integers(-1, 2**31),
        "data": PLAIN | st.dictionaries(FIELDS, PLAIN, max_size=5),
    },
)
"""Maps shaped like an event body, with anything in the fields."""
TASK_BODIES: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "workflow_id": PLAIN | WORKFLOW_IDS,
        "task_id": PLAIN,
        "attempt": PLAIN,
        "capability": PLAIN | st.sampled_from(["x", "x@route"]),
        "direct": PLAIN,
        "route": PLAIN,
    },
)
DEEP = b"\x91" * 100_000 + b"\xc0"
"""A list nested 100,000 deep."""
BODIES: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=300),
    st.builds(pack, PLAIN),
    st.builds(pack, EVENT_BODIES),
    st.builds(pack, TASK_BODIES),
    st.sampled_from([b"", DEEP, b"\x81" * 70 + b"\xc0", b"\xdd\xff\xff\xff\xff"]),
)
STORED_NS = st.none() | st.integers(0, 2**64)


def event(event_type: EventType = EventType.TASK_STARTED) -> Event:
    """A valid event of this type (its sample payload from the codec's tests)."""
    return Event(
        id=f"wf-1:a:1:{event_type.value}",
        type=event_type,
        workflow_id="wf-1",
        source="coordinator-1",
        timestamp=1_700_000_000_000_000_000,
        vclock=VectorClock({"coord": 3, "w1": 2}),
        data=SAMPLES[event_type],
        task_id="a",
        attempt=1,
    )


TASK = TaskMessage(
    workflow_id="wf-1",
    task_id="a",
    attempt=1,
    capability="x",
    params={"p": [1, 2]},
    vclock=VectorClock({"coord": 3}),
    source="coordinator-1",
)
VALID_EVENTS = {name: encode_event(event(), NAMES, seal=seal) for name, seal in SEALS.items()}
VALID_TASKS = {name: encode_task(TASK, NAMES, seal=seal) for name, seal in SEALS.items()}

Message = tuple[str, dict[str, str] | None, bytes]


def changed(valid: Message) -> st.SearchStrategy[Message]:
    """A valid message with a few of its parts replaced, removed or cut."""
    subject, headers, body = valid

    def apply(edits: list[tuple[str, Any, Any]]) -> Message:
        new_subject, new_headers, new_body = subject, dict(headers or {}), body
        for what, key, value in edits:
            if what == "set":
                new_headers[key] = value
            elif what == "drop":
                new_headers.pop(key, None)
            elif what == "subject":
                new_subject = value
            elif what == "cut":
                new_body = new_body[: key % (len(new_body) + 1)]
            else:
                new_body = value
        return new_subject, new_headers, new_body

    edit = st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("drop"), st.sampled_from(HEADER_NAMES), st.none()),
        st.tuples(st.just("subject"), st.none(), SUBJECTS),
        st.tuples(st.just("cut"), st.integers(0, 10_000), st.none()),
        st.tuples(st.just("body"), st.none(), BODIES),
    )
    return st.lists(edit, max_size=3).map(apply)


def messages(valid: Message) -> st.SearchStrategy[Message]:
    """Random messages, and valid ones a little changed."""
    return st.tuples(SUBJECTS, HEADERS, BODIES) | changed(valid)


def decoded_or_refused(decode: Callable[[], Any]) -> Any:
    """What ``decode`` returns, or None when it refuses the message as it must."""
    try:
        return decode()
    except MalformedMessageError:
        return None


# Only MalformedMessageError ---------------------------------------------------------


@pytest.mark.parametrize("mode", list(SEALS))
@FUZZ
@given(data=st.data(), stored_ns=STORED_NS)
def test_decode_event_refuses_with_malformed_message_only(
    mode: str, data: st.DataObject, stored_ns: int | None
) -> None:
    seal = SEALS[mode]
    subject, headers, body = data.draw(messages(VALID_EVENTS[mode]))
    got = decoded_or_refused(
        lambda: decode_event(subject, headers, body, NAMES, seal=seal, stored_ns=stored_ns)
    )
    if got is not None:  # what it accepts is consistent with what it was given
        assert isinstance(got, Event)
        assert headers is not None
        assert NAMES.parse_event_subject(subject) == (got.workflow_id, got.type.value)
        assert headers[H_TYPE] == got.type.value
        assert got.attempt is None or 0 <= got.attempt < 2**31
        if seal is not None and seal.trust is not None:
            assert got.signer == COORDINATOR.principal
            assert got.signer_role == COORDINATOR.role


@pytest.mark.parametrize("mode", list(SEALS))
@FUZZ
@given(data=st.data(), stored_ns=STORED_NS)
def test_decode_task_refuses_with_malformed_message_only(
    mode: str, data: st.DataObject, stored_ns: int | None
) -> None:
    seal = SEALS[mode]
    subject, headers, body = data.draw(messages(VALID_TASKS[mode]))
    got = decoded_or_refused(
        lambda: decode_task(subject, headers, body, seal=seal, stored_ns=stored_ns)
    )
    if got is not None:
        assert isinstance(got, TaskMessage)
        assert got.attempt >= 1
        assert subject.split(".")[2] == got.queue


@FUZZ
@given(text=st.one_of(st.sampled_from(CLOCK_TEXT), VALUES, st.text(max_size=200)))
def test_a_vector_clock_header_parses_or_is_refused(text: str) -> None:
    clock = decoded_or_refused(lambda: VectorClock.decode(text))
    if clock is not None:
        assert isinstance(clock, VectorClock)
        assert len(clock) <= 4096
        assert all(0 < counter <= MAX_COUNTER for counter in clock.values())
        assert VectorClock.decode(clock.encode()) == clock


@FUZZ
@given(
    entries=st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z0-9_.\-]{1,130}", fullmatch=True) | st.text(max_size=5),
            st.sampled_from(DIGIT_TEXT) | st.from_regex(r"[0-9]{1,21}", fullmatch=True),
        ),
        max_size=12,
    )
)
def test_a_clock_of_entries_parses_to_what_it_says_or_is_refused(
    entries: list[tuple[str, str]],
) -> None:
    text = ",".join(f"{node}:{counter}" for node, counter in entries)
    clock = decoded_or_refused(lambda: VectorClock.decode(text))
    if clock is not None:
        assert isinstance(clock, VectorClock)
        assert clock.to_dict() == {n: int(c) for n, c in entries if int(c)}


@FUZZ
@given(text=VALUES, digits=st.integers(1, 30))
def test_parse_uint_takes_only_short_ascii_digit_strings(text: str, digits: int) -> None:
    number = decoded_or_refused(lambda: parse_uint(text, "value", digits=digits))
    if number is not None:
        assert text.isascii()
        assert text.isdigit()
        assert len(text) <= digits
        assert number == int(text)


@FUZZ
@given(headers=HEADERS)
def test_task_identity_never_raises(headers: dict[str, str] | None) -> None:
    identity = task_identity(headers)
    if identity is not None:
        assert headers is not None
        workflow_id, task_id, attempt = identity
        assert ID_RE.match(workflow_id)
        assert 0 < len(task_id) <= 128
        assert 1 <= attempt < 10**9
        assert headers[H_ATTEMPT].isascii()


# Valid messages round-trip; changed sealed ones are refused -----------------------

NODE_IDS = st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True)
EVENTS: st.SearchStrategy[Event] = st.builds(
    Event,
    id=st.from_regex(r"[A-Za-z0-9_.:\-]{1,60}", fullmatch=True),
    type=st.sampled_from(sorted(SAMPLES)),
    workflow_id=st.from_regex(ID_RE),
    source=st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True),
    timestamp=st.integers(0, MAX_COUNTER),
    vclock=st.dictionaries(NODE_IDS, st.integers(1, MAX_COUNTER), max_size=10).map(VectorClock),
    data=st.just(SAMPLES[EventType.TASK_STARTED]),
    task_id=st.none() | st.from_regex(TASK_ID_RE),
    attempt=st.none() | st.integers(0, 2**31 - 1),
).map(lambda e: e.model_copy(update={"data": SAMPLES[e.type]}))


@pytest.mark.parametrize("mode", list(SEALS))
@CRYPTO
@given(original=EVENTS, stored=st.booleans())
def test_a_valid_event_round_trips(mode: str, original: Event, stored: bool) -> None:
    seal = SEALS[mode]
    subject, headers, body = encode_event(original, NAMES, seal=seal)
    if stored:  # as the events stream stores it, with its partition token
        subject = f"af.evt.{original.workflow_id}.7.{original.type.value}"
    got = decode_event(subject, headers, body, NAMES, seal=seal, seq=5)
    published = seal.message_id(original.id) if seal is not None else original.id
    assert got.model_dump() == {**original.model_dump(), "id": published, "seq": 5}
    signs = seal is not None and seal.trust is not None
    assert (got.signer, got.signer_role) == (
        ("coordinator", "coordinator") if signs else (None, None)
    )


@pytest.mark.parametrize("mode", list(SEALS))
def test_a_valid_task_round_trips(mode: str) -> None:
    subject, headers, body = VALID_TASKS[mode]
    assert decode_task(subject, headers, body, seal=SEALS[mode]) == TASK


@pytest.mark.parametrize("mode", ["signed", "encrypted", "signed+encrypted"])
@CRYPTO
@given(original=EVENTS, index=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_one_bit_changed_in_a_sealed_body_is_refused(
    mode: str, original: Event, index: int, bit: int
) -> None:
    seal = SEALS[mode]
    subject, headers, body = encode_event(original, NAMES, seal=seal)
    flipped = bytearray(body)
    flipped[index % len(body)] ^= 1 << bit
    expected = UndecryptableMessageError if mode == "encrypted" else ForgedMessageError
    with pytest.raises(expected):
        decode_event(subject, headers, bytes(flipped), NAMES, seal=seal)
    task_subject, task_headers, task_body = VALID_TASKS[mode]
    flipped = bytearray(task_body)
    flipped[index % len(task_body)] ^= 1 << bit
    with pytest.raises(expected):
        decode_task(task_subject, task_headers, bytes(flipped), seal=seal)


def _other(char: str, shift: int) -> str:
    """Another printable ASCII character."""
    return chr(0x21 + (ord(char) - 0x21 + shift) % 94)


@pytest.mark.parametrize("mode", SIGNING)
@CRYPTO
@given(
    original=EVENTS,
    choice=st.integers(0, 100),
    position=st.integers(0, 10**4),
    shift=st.integers(1, 93),
    drop=st.booleans(),
)
def test_a_changed_signed_header_is_refused(
    mode: str, original: Event, choice: int, position: int, shift: int, drop: bool
) -> None:
    seal = SEALS[mode]
    subject, headers, body = encode_event(original, NAMES, seal=seal)
    signed = sorted(name for name in SIGNED_HEADERS if headers.get(name))
    name = signed[choice % len(signed)]
    forged = _changed_header(headers, name, position, shift, drop=drop)
    with pytest.raises(ForgedMessageError):
        decode_event(subject, forged, body, NAMES, seal=seal)
    task_subject, task_headers, task_body = VALID_TASKS[mode]
    signed = sorted(n for n in SIGNED_HEADERS if task_headers.get(n))
    name = signed[choice % len(signed)]
    forged = _changed_header(task_headers, name, position, shift, drop=drop)
    with pytest.raises(ForgedMessageError):
        decode_task(task_subject, forged, task_body, seal=seal)


def _changed_header(
    headers: Mapping[str, str], name: str, position: int, shift: int, *, drop: bool
) -> dict[str, str]:
    """``headers`` with one character of header ``name`` changed (or the header dropped)."""
    forged = dict(headers)
    if drop:
        del forged[name]
        return forged
    value = forged[name]
    at = position % len(value)
    forged[name] = value[:at] + _other(value[at], shift) + value[at + 1 :]
    assert forged[name] != value
    return forged
