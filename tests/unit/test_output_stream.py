"""ctx.stream's buffer: batching, backpressure with counted drops, limits."""

from __future__ import annotations

import asyncio

import pytest

from agenticflow.shared.errors import PayloadTooLargeError
from agenticflow.shared.wire.events import TaskOutput
from agenticflow.worker.context import TaskContext
from agenticflow.worker.streaming import BATCH_CHUNKS, MAX_CHUNK_BYTES, OutputStream


class Store:
    """Where the stream's events go; ``gate`` holds publications back (a slow bus)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[TaskOutput] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail
        self.failed = asyncio.Event()

    async def publish(self, output: TaskOutput) -> None:
        await self.gate.wait()
        if self.fail:
            self.failed.set()
            raise ConnectionError("the bus is down")
        self.events.append(output)


async def test_a_burst_is_one_event_and_the_last_says_so() -> None:
    store = Store()
    stream = OutputStream(store.publish, flush_s=30)  # only close() ends the window
    for i in range(10):
        assert await stream.put(f"t{i}")
    await stream.close()
    assert len(store.events) == 1
    (event,) = store.events
    assert [c.data for c in event.chunks] == [f"t{i}" for i in range(10)]
    assert (event.index, event.dropped, event.last) == (0, 0, True)
    assert stream.stored == 10


async def test_a_full_buffer_drops_after_the_block_time_and_reports_it() -> None:
    store = Store()
    store.gate.clear()  # the bus takes nothing for now
    stream = OutputStream(store.publish, buffer=2, block_s=0.05, flush_s=30)
    assert await stream.put("a")
    assert await stream.put("b")
    assert not await stream.put("c")  # no room within 50 ms: dropped, not blocked for ever
    assert stream.dropped == 1
    store.gate.set()
    await stream.close()
    chunks = [c.data for e in store.events for c in e.chunks]
    assert chunks == ["a", "b"]
    assert sum(e.dropped for e in store.events) == 1
    assert store.events[-1].last


async def test_a_put_waiting_for_room_goes_on_when_the_bus_takes_the_output() -> None:
    store = Store()
    store.gate.clear()
    stream = OutputStream(store.publish, buffer=1, block_s=30, flush_s=0.01)
    assert await stream.put("a")
    waiting = asyncio.ensure_future(stream.put("b"))
    store.gate.set()  # the writer stores "a", which frees the buffer
    assert await asyncio.wait_for(waiting, timeout=10)
    await stream.close()
    assert [c.data for e in store.events for c in e.chunks] == ["a", "b"]
    assert stream.dropped == 0


async def test_big_bursts_are_split_and_kept_in_order() -> None:
    store = Store()
    stream = OutputStream(store.publish, buffer=10_000, flush_s=30)
    count = 2 * BATCH_CHUNKS + 7
    for i in range(count):
        await stream.put(i, kind="progress")
    await stream.close()
    assert [e.index for e in store.events] == list(range(len(store.events)))
    assert len(store.events) >= 3
    assert all(len(e.chunks) <= BATCH_CHUNKS for e in store.events)
    assert [c.data for e in store.events for c in e.chunks] == list(range(count))


async def test_bad_chunks_are_clear_errors_and_nothing_is_stored() -> None:
    store = Store()
    stream = OutputStream(store.publish)
    with pytest.raises(ValueError, match="kind must be one of token, progress, log, artifact"):
        await stream.put("x", kind="shout")
    with pytest.raises(TypeError, match="not object"):
        await stream.put(object())
    with pytest.raises(PayloadTooLargeError, match="over the"):
        await stream.put(b"x" * (MAX_CHUNK_BYTES + 1), kind="artifact")
    await stream.close()
    assert store.events == []  # nothing streamed: no event at all
    with pytest.raises(RuntimeError, match="closed"):
        await stream.put("late")


async def test_a_failing_bus_costs_the_chunks_not_the_task() -> None:
    store = Store(fail=True)
    stream = OutputStream(store.publish, flush_s=30)
    assert await stream.put("lost")
    await stream.close()  # returns: streaming is best effort
    assert stream.dropped == 1
    assert stream.stored == 0


async def test_a_handler_called_without_a_worker_streams_into_nothing() -> None:
    ctx = TaskContext(
        workflow_id="w",
        task_id="t",
        attempt=1,
        capability="c",
        params={},
        inputs={},
        input={},
        agent="a",
        worker="none",
    )
    assert await ctx.stream("hello") is False


def test_the_timeline_sums_an_output_event_up_as_text() -> None:
    import io

    from rich.console import Console

    from agenticflow import render
    from agenticflow.shared.wire.events import Event, EventType, OutputChunk
    from agenticflow.shared.wire.vclock import VectorClock

    data = TaskOutput(
        index=0,
        chunks=[
            OutputChunk(kind="token", data="he\x1b[31mllo [/b]"),
            OutputChunk(kind="progress", data={"done": 1}),
        ],
        dropped=2,
        last=True,
    )
    assert render.output_note(data) == "1 progress 1 token 'he\\x1b[31mllo [/b]' 2 dropped (last)"
    event = Event(
        id="e",
        type=EventType.TASK_OUTPUT,
        workflow_id="w",
        source="w1",
        timestamp=1,
        vclock=VectorClock({"w1": 1}),
        data=data,
        task_id="t",
        attempt=1,
        seq=5,
    )
    out = io.StringIO()
    render.print_timeline(Console(file=out, width=200), [event])
    shown = out.getvalue()
    assert "[/b]" in shown  # markup shown as written
    assert "\x1b" not in shown  # no terminal escape gets through


async def test_a_chunk_is_taken_as_it_was_when_streamed() -> None:
    store = Store()
    stream = OutputStream(store.publish, flush_s=30)
    data: dict[str, list[str]] = {"items": ["small"]}
    await stream.put(data, kind="progress")
    data["items"].extend(["x" * 1000] * 2000)  # changed afterwards: not what was streamed
    await stream.close()
    assert [c.data for e in store.events for c in e.chunks] == [{"items": ["small"]}]


async def test_chunks_a_failed_publication_lost_are_reported_with_the_next_event() -> None:
    store = Store(fail=True)
    stream = OutputStream(store.publish, flush_s=0.01)
    for i in range(3):
        await stream.put(f"lost{i}")
    # The first event fails; once the bus is back, the next one says so.
    await asyncio.wait_for(store.failed.wait(), timeout=10)
    assert stream.dropped == 3  # counted in the same step as the failure
    store.fail = False
    await stream.put("kept")
    await stream.close()
    assert [c.data for e in store.events for c in e.chunks] == ["kept"]
    assert sum(e.dropped for e in store.events) == 3
