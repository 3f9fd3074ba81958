"""What the bus contract does not cover for the ``redis`` backend: several
processes (here, several connections) sharing one Redis.

Effects are awaited on events or fetches bounded by a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from agenticflow.cluster.redis_server import RedisServer
from agenticflow.shared.bus.base import Bus, ConsumerSpec, Message
from agenticflow.shared.errors import TransportError
from agenticflow.shared.ops.config import Settings
from tests.conformance.conftest import ACK_WAIT_S, contract_settings

WAIT_S = 5.0


def msg_id() -> dict[str, str]:
    return {"Nats-Msg-Id": uuid.uuid4().hex}


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """One deployment (prefix) on the session's redis-server."""
    return contract_settings("redis", request)


@pytest.fixture
async def buses(settings: Settings) -> AsyncIterator[list[Bus]]:
    """Two connections of one deployment, as two processes would have."""
    opened = [await Bus.connect(settings, name=f"p{i}") for i in range(2)]
    await opened[0].ensure_topology()
    yield opened
    for bus in opened:
        await bus.close()


async def test_two_connections_compete_on_one_task_consumer(buses: list[Bus]) -> None:
    first, second = buses
    n, total = first.names, 40
    consumer = await first.ensure_task_consumer("shared")
    await second.ensure_task_consumer("shared")  # the second process finds it
    taken: list[Counter[int]] = [Counter(), Counter()]
    done = asyncio.Event()
    acks: set[asyncio.Task[None]] = set()

    def taker(i: int) -> Callable[[Message], None]:
        def on_message(msg: Message) -> None:
            taken[i][msg.metadata.sequence.stream] += 1
            task = asyncio.create_task(msg.ack())
            acks.add(task)
            task.add_done_callback(acks.discard)
            if sum(sum(c.values()) for c in taken) >= total:
                done.set()

        return on_message

    pullers = [
        bus.puller(stream=n.tasks_stream, consumer=consumer, on_message=taker(i), credit=lambda: 2)
        for i, bus in enumerate(buses)
    ]
    for puller in pullers:
        await puller.start()
    try:
        for i in range(total):
            await buses[i % 2].publish_raw(n.task_subject("shared"), str(i).encode(), msg_id())
        async with asyncio.timeout(WAIT_S):
            await done.wait()
        await asyncio.gather(*acks)
    finally:
        for puller in pullers:
            await puller.stop()
    both = taken[0] + taken[1]
    assert len(both) == total
    assert set(both.values()) == {1}  # each message once, to one process
    state = (await second.stream_info(n.tasks_stream))["state"]
    assert state["messages"] == 0  # every ack removed its message (work queue)


async def test_a_killed_workers_delivery_goes_to_another_after_ack_wait(
    settings: Settings,
) -> None:
    spec = ConsumerSpec(
        name="task_crash",
        filter_subjects=(settings.names.task_subject("crash"),),
        ack_wait_s=ACK_WAIT_S,
        max_deliver=5,
    )
    survivor = await Bus.connect(settings, name="survivor")
    doomed = await Bus.connect(settings, name="doomed")
    try:
        await survivor.ensure_topology()
        stream = settings.names.tasks_stream
        seq, _ = await survivor.publish_raw(settings.names.task_subject("crash"), b"t", msg_id())
        taken = await (await doomed.fetcher(stream, spec)).fetch(1, timeout=WAIT_S)
        delivered = time.monotonic()
        assert [m.metadata.sequence.stream for m in taken] == [seq]
        await doomed.close()  # dies holding the delivery, unacknowledged
        fetcher = await survivor.fetcher(stream, spec)
        (again,) = await fetcher.fetch(1, timeout=WAIT_S)
        assert time.monotonic() - delivered >= ACK_WAIT_S * 0.9  # after ack_wait, not at once
        assert (again.metadata.sequence.stream, again.metadata.num_delivered) == (seq, 2)
        await again.ack()
        assert await survivor.get_stored(stream, seq) is None
    finally:
        await doomed.close()
        await survivor.close()


async def test_keys_and_messages_are_namespaced_by_prefix(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> None:
    mine = contract_settings("redis", request)
    theirs = mine.model_copy(update={"prefix": f"{mine.prefix}b"})
    a = await Bus.connect(mine, name="a")
    b = await Bus.connect(theirs, name="b")
    raw: Any = aioredis.Redis.from_url(redis_server.url)
    try:
        for bus in (a, b):
            await bus.ensure_topology()
        await a.publish_raw(mine.names.task_subject("q"), b"a's", msg_id())
        kv = await a.kv(mine.names.workflows_bucket)
        await kv.put("k", b"v")
        assert await (await b.kv(theirs.names.workflows_bucket)).keys() == []
        keys = [k.decode() async for k in raw.scan_iter(match=f"*{mine.prefix}*")]
        assert keys
        namespaces = {f"af:{{{mine.prefix}}}:", f"af:{{{theirs.prefix}}}:"}
        assert all(any(k.startswith(ns) for ns in namespaces) for k in keys)
        assert [k for k in keys if k.startswith(f"af:{{{mine.prefix}}}:")]
        tasks = await b.stream_info(theirs.names.tasks_stream)
        assert tasks["state"]["messages"] == 0  # the other deployment's stream is its own
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{closed}/0", "redis://127.0.0.1:notaport/0"])
async def test_an_unreachable_url_is_a_transport_error_at_once(url: str) -> None:
    url = url.format(closed=_closed_port())  # chosen here: every xdist worker collects the same
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"127\.0\.0\.1"):
        await Bus.connect(Settings(backend="redis", url=url), name="nobody")
    assert time.monotonic() - started < 3.0


async def test_reads_by_wildcard_over_many_subjects(buses: list[Bus]) -> None:
    bus = buses[0]
    n, total = bus.names, 80  # more subjects than a read merges: it scans the stream
    published = [
        (await bus.publish_raw(n.event_subject(f"wf{i}", "step"), str(i).encode(), msg_id()))[0]
        for i in range(total)
    ]
    every = await bus.read_stored(n.events_stream, n.event_subjects)
    assert [int(m.data) for m in every] == list(range(total))
    later = await bus.read_stored(n.events_stream, n.event_subjects, start_seq=published[70])
    assert [int(m.data) for m in later] == list(range(70, total))
    some = await bus.read_stored(n.events_stream, n.stored_events_of_type("step"), limit=5)
    assert [int(m.data) for m in some] == list(range(5))
    assert await bus.count_stored(n.events_stream, n.event_subjects, start_seq=1) == total
    one = await bus.read_stored(n.events_stream, n.workflow_events("wf42"))
    assert [m.data for m in one] == [b"42"]
    last = await bus.last_stored(n.events_stream, n.event_subjects)
    assert last is not None
    assert last[0] == published[-1]
