"""Signed and encrypted envelopes, key files, and the limits on received input."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agenticflow.cli import app
from agenticflow.shared.errors import (
    ConfigError,
    ForgedMessageError,
    MalformedMessageError,
    ReplayedMessageError,
    UndecryptableMessageError,
)
from agenticflow.shared.security.seal import (
    DataKeys,
    Identity,
    Seal,
    TrustStore,
    add_identity,
    init_keys,
    revoke,
    rotate_data_key,
)
from agenticflow.shared.wire.codec import (
    MAX_DEPTH,
    MAX_HEADERS,
    TaskMessage,
    decode_event,
    decode_task,
    encode_event,
    encode_task,
    pack,
    unpack,
)
from agenticflow.shared.wire.events import Event, EventType, TaskStarted
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import VectorClock

NAMES = Names("af")
SUBJECT = "af.evt.wf-1.task.started"
SIGNED_HEADERS = [
    "Nats-Msg-Id",
    "AF-Type",
    "AF-Schema",
    "AF-VClock",
    "AF-Source",
    "AF-Enc",
    "AF-Key",
    "AF-TS",
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    init_keys(
        directory, [("coordinator", "coordinator"), ("worker", "worker"), ("client", "client")]
    )
    return directory


def seal(keys: Path, principal: str) -> Seal:
    return Seal.from_dir(keys, principal)


def started(worker: str = "w1") -> Event:
    return Event(
        id="wf-1:a:1:started",
        type=EventType.TASK_STARTED,
        workflow_id="wf-1",
        source=worker,
        timestamp=time.time_ns(),
        vclock=VectorClock({worker: 3}),
        data=TaskStarted(worker=worker, instance="i1", agent="echo"),
        task_id="a",
        attempt=1,
    )


def test_a_sealed_event_opens_for_a_trusted_reader_and_names_its_signer(keys: Path) -> None:
    subject, headers, body = encode_event(started(), NAMES, seal=seal(keys, "worker"))
    assert b"wf-1" not in body
    assert b"i1" not in body
    assert {"AF-Key", "AF-Sig", "AF-TS", "AF-Enc"} <= set(headers)
    event = decode_event(
        subject, headers, body, NAMES, seal=seal(keys, "coordinator"), stored_ns=time.time_ns()
    )
    assert event.data == TaskStarted(worker="w1", instance="i1", agent="echo")
    assert event.signer == "worker"
    assert "signer" not in event.model_dump()  # not part of the event's data
    with pytest.raises(MalformedMessageError):  # without the keys: unreadable
        decode_event(subject, headers, body, NAMES)


@settings(max_examples=40, deadline=None)
@given(which=st.sampled_from(SIGNED_HEADERS), suffix=st.sampled_from(["0", "x", "1"]))
def test_changing_any_signed_header_breaks_the_signature(
    keys: Path, which: str, suffix: str
) -> None:
    subject, headers, body = encode_event(started(), NAMES, seal=seal(keys, "worker"))
    headers[which] = headers[which] + suffix
    with pytest.raises((ForgedMessageError, MalformedMessageError)):
        decode_event(subject, headers, body, NAMES, seal=seal(keys, "coordinator"))


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_changing_any_bit_of_the_body_breaks_the_signature(
    keys: Path, position: int, bit: int
) -> None:
    subject, headers, body = encode_event(started(), NAMES, seal=seal(keys, "worker"))
    index = position % len(body)
    altered = body[:index] + bytes([body[index] ^ (1 << bit)]) + body[index + 1 :]
    with pytest.raises(ForgedMessageError, match="bad signature"):
        decode_event(subject, headers, altered, NAMES, seal=seal(keys, "coordinator"))


def test_moving_a_message_to_another_subject_breaks_it(keys: Path) -> None:
    subject, headers, body = encode_event(started(), NAMES, seal=seal(keys, "worker"))
    other = subject.replace("wf-1", "wf-2")
    with pytest.raises(ForgedMessageError, match="bad signature"):
        decode_event(other, headers, body, NAMES, seal=seal(keys, "coordinator"))


def test_unsigned_unknown_and_wrong_role_messages_are_forged(keys: Path) -> None:
    reader = seal(keys, "coordinator")
    subject, headers, body = encode_event(started(), NAMES, seal=Seal(data_keys=reader.data_keys))
    with pytest.raises(ForgedMessageError, match="unsigned"):
        decode_event(subject, headers, body, NAMES, seal=reader)
    stranger = Seal(identity=Identity.generate("eve", "coordinator"), data_keys=reader.data_keys)
    subject, headers, body = encode_event(started(), NAMES, seal=stranger)
    with pytest.raises(ForgedMessageError, match="unknown key"):
        decode_event(subject, headers, body, NAMES, seal=reader)
    task = TaskMessage(workflow_id="wf-1", task_id="a", attempt=1, capability="echo")
    for principal in ("worker", "client"):
        subject, headers, body = encode_task(task, NAMES, seal=seal(keys, principal))
        with pytest.raises(ForgedMessageError, match=f"{principal} .* may not send 'task'"):
            decode_task(subject, headers, body, seal=reader)
    subject, headers, body = encode_task(task, NAMES, seal=seal(keys, "coordinator"))
    assert decode_task(subject, headers, body, seal=seal(keys, "worker")) == task  # the control


def test_a_message_stored_long_after_it_was_signed_is_a_replay(keys: Path) -> None:
    writer, reader = seal(keys, "worker"), seal(keys, "coordinator")
    subject, headers, body = encode_event(started(), NAMES, seal=writer)
    now = time.time_ns()
    decode_event(subject, headers, body, NAMES, seal=reader, stored_ns=now + 119 * 10**9)
    with pytest.raises(ReplayedMessageError, match="a replay"):
        decode_event(subject, headers, body, NAMES, seal=reader, stored_ns=now + 600 * 10**9)
    with pytest.raises(ReplayedMessageError):  # "signed" far in the future: also refused
        decode_event(subject, headers, body, NAMES, seal=reader, stored_ns=now - 600 * 10**9)


def test_old_data_keys_still_read_after_a_rotation_and_unknown_ones_are_refused(
    tmp_path: Path,
) -> None:
    init_keys(tmp_path, [("worker", "worker")])
    before = Seal.from_dir(tmp_path, "worker")
    subject, headers, body = encode_event(started(), NAMES, seal=before)
    rotated = rotate_data_key(tmp_path)
    after = Seal.from_dir(tmp_path, "worker")
    assert after.data_keys is not None
    assert after.data_keys.current == rotated.current != headers["AF-Enc"]
    assert decode_event(subject, headers, body, NAMES, seal=after).data == TaskStarted(
        worker="w1", instance="i1", agent="echo"
    )
    _, new_headers, _ = encode_event(started(), NAMES, seal=after)
    assert new_headers["AF-Enc"] == rotated.current
    other = Seal(data_keys=DataKeys.generate())
    with pytest.raises(UndecryptableMessageError):
        decode_event(
            subject,
            {k: v for k, v in headers.items() if k not in ("AF-Key", "AF-Sig")},
            body,
            NAMES,
            seal=other,
        )
    plain_subject, plain_headers, plain_body = encode_event(started(), NAMES)
    with pytest.raises(UndecryptableMessageError, match="not encrypted"):
        decode_event(
            plain_subject, plain_headers, plain_body, NAMES, seal=Seal(data_keys=after.data_keys)
        )


def test_sealed_values_are_bound_to_their_key(keys: Path) -> None:
    box = seal(keys, "worker")
    blob = box.seal_value("af_memory/a.x", pack({"secret": 1}))
    assert b"secret" not in blob
    assert unpack(box.open_value("af_memory/a.x", blob)) == {"secret": 1}
    with pytest.raises(UndecryptableMessageError, match="does not decrypt"):
        box.open_value("af_memory/a.y", blob)
    with pytest.raises(UndecryptableMessageError, match="not encrypted"):
        box.open_value("af_memory/a.x", pack({"secret": 1}))
    assert Seal().open_value("k", b"plain") == b"plain"


def test_key_files_are_private_and_the_trust_store_is_managed(tmp_path: Path) -> None:
    made = init_keys(tmp_path, [("coordinator", "coordinator"), ("alice", "client")])
    for name in ("coordinator.key", "alice.key", "data-keys.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    trust = TrustStore.load(tmp_path / "trust.json")
    assert {k.principal for k in trust.keys.values()} == {"coordinator", "alice"}
    alice = trust.get(made[1].kid)
    assert alice is not None
    assert alice.role == "client"
    with pytest.raises(ConfigError, match="exists"):
        init_keys(tmp_path, [])
    with pytest.raises(ConfigError, match="exists"):
        add_identity(tmp_path, "alice", "client")
    with pytest.raises(ConfigError, match="role 'root'"):
        add_identity(tmp_path, "bob", "root")
    assert revoke(tmp_path, "alice") == [made[1].kid]
    with pytest.raises(ConfigError, match="is not in"):  # a key the trust store dropped
        Seal.from_dir(tmp_path, "alice")
    with pytest.raises(ConfigError, match="no key for principal 'nobody'"):
        Seal.from_dir(tmp_path, "nobody")
    with pytest.raises(ConfigError, match="does not exist"):
        Seal.from_dir(tmp_path / "missing", "coordinator")
    (tmp_path / "trust.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Seal.from_dir(tmp_path, "coordinator")


# Input limits ---------------------------------------------------------------
def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):  # depth lists around a number
        value = [value]
    return value


def test_bodies_nested_too_deep_are_refused() -> None:
    assert unpack(pack(nested(MAX_DEPTH)), max_depth=MAX_DEPTH) == nested(MAX_DEPTH)
    with pytest.raises(MalformedMessageError, match=f"deeper than {MAX_DEPTH}"):
        unpack(pack(nested(MAX_DEPTH + 1)), max_depth=MAX_DEPTH)
    with pytest.raises(MalformedMessageError, match="nested too deeply"):
        unpack(b"\x91" * 100_000 + b"\xc0")  # past msgpack's own stack
    task = {
        "workflow_id": "wf-1",
        "task_id": "a",
        "attempt": 1,
        "capability": "echo",
        "params": {"x": nested(80)},
    }
    headers = {"AF-Type": "task", "AF-Schema": "1", "AF-VClock": "", "AF-Source": "c"}
    with pytest.raises(MalformedMessageError, match="deeper than"):
        decode_task("af.task.echo", headers, msgpack.packb(task))


def test_too_many_or_too_large_headers_are_refused() -> None:
    subject, headers, body = encode_event(started(), NAMES)
    crowded = {**headers, **{f"X-{i}": "v" for i in range(MAX_HEADERS)}}
    with pytest.raises(MalformedMessageError, match="headers"):
        decode_event(subject, crowded, body, NAMES)
    with pytest.raises(MalformedMessageError, match="headers of"):
        decode_event(subject, {**headers, "X-Big": "v" * 9000}, body, NAMES)
    assert decode_event(subject, headers, body, NAMES).task_id == "a"  # the control


def test_the_keys_commands_manage_a_directory(tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    made = runner.invoke(app, ["keys", "init", str(keys)])
    assert made.exit_code == 0, made.output
    assert "coordinator (coordinator): key" in made.output
    assert (
        runner.invoke(app, ["keys", "add", str(keys), "alice", "--role", "client"]).exit_code == 0
    )
    rotated = runner.invoke(app, ["keys", "rotate", str(keys)])
    assert "2 kept for reading" in rotated.output
    listing = runner.invoke(app, ["keys", "list", str(keys), "--json"])
    data = json.loads(listing.output)
    assert sorted(i["principal"] for i in data["identities"]) == [
        "alice",
        "client",
        "coordinator",
        "worker",
    ]
    assert len(data["data_keys"]) == 2
    assert "key" not in json.dumps(data["identities"]).replace('"kid"', "")  # no secrets
    assert runner.invoke(app, ["keys", "revoke", str(keys), "alice"]).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", str(keys), "alice"])
    assert again.exit_code == 2
    assert "no trusted key belongs to 'alice'" in again.output
    assert runner.invoke(app, ["keys", "add", str(keys), "bob", "--role", "root"]).exit_code == 2
