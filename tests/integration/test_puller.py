"""The continuous puller against a real JetStream consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from nats.js.api import StreamConfig

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.shared.bus.base import ConsumerSpec, Message
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.bus.nats_puller import Puller
from agenticflow.shared.ops.config import Settings
from tests.conftest import unique_prefix


@dataclass
class Owner:
    """Holds delivered messages until told to ack them; records what it saw."""

    capacity: int
    held: list[Message] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    most_held: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    ends: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def credit(self) -> int:
        return self.capacity - len(self.held)

    def on_message(self, msg: Message) -> None:
        self.held.append(msg)
        self.seen.append(int(msg.data))
        self.most_held = max(self.most_held, len(self.held))
        self.arrived.set()

    def on_end(self, reason: str) -> None:
        self.ends.append(reason)
        self.ended.set()

    async def until(self, count: int, release: Callable[[], bool] | None = None) -> None:
        """Ack what arrives until ``count`` messages were seen in all."""
        async with asyncio.timeout(20):
            while True:
                self.arrived.clear()
                if self.held and (release is None or release()):
                    held, self.held = self.held, []
                    for msg in held:
                        await msg.ack()
                    continue
                if len(self.seen) >= count:
                    return
                await self.arrived.wait()

    async def ended_with(self, reason: str) -> None:
        async with asyncio.timeout(20):
            while reason not in self.ends:
                self.ended.clear()
                await self.ended.wait()


@pytest.fixture
async def setup(nats_server: NatsServer) -> AsyncIterator[tuple[Bus, str]]:
    prefix = unique_prefix("pull")
    bus = await Bus.connect(Settings(nats_url=nats_server.url, prefix=prefix), name="puller")
    stream = prefix.upper()
    await bus.js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"]))
    await bus.ensure_consumer(stream, ConsumerSpec(name="c", ack_wait_s=30))
    yield bus, stream
    await bus.js.delete_stream(stream)
    await bus.close()


async def publish(bus: Bus, stream: str, numbers: range) -> None:
    await bus.publish_many([(f"{stream.lower()}.x", {}, str(n).encode()) for n in numbers])


def puller(bus: Bus, stream: str, owner: Owner, **kwargs: float) -> Puller:
    return Puller(
        bus,
        stream=stream,
        consumer="c",
        on_message=owner.on_message,
        credit=owner.credit,
        on_end=owner.on_end,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_every_message_once_in_order_never_more_than_the_credit(
    setup: tuple[Bus, str],
) -> None:
    bus, stream = setup
    owner = Owner(capacity=5)
    pull = puller(bus, stream, owner, max_batch=4, max_open=1)
    await pull.start()
    await publish(bus, stream, range(200))
    await owner.until(200, release=lambda: len(owner.held) >= 3 or len(owner.seen) >= 198)
    await pull.stop()
    assert owner.seen == list(range(200))
    assert owner.most_held <= 5


async def test_expired_requests_are_renewed_and_later_messages_arrive(
    setup: tuple[Bus, str],
) -> None:
    bus, stream = setup
    owner = Owner(capacity=8)
    pull = puller(bus, stream, owner, expires_s=0.3, heartbeat_s=0.1)
    await pull.start()
    await owner.ended_with("408")  # the first request expired with nothing to deliver
    await publish(bus, stream, range(3))
    await owner.until(3)
    await pull.stop()
    assert owner.seen == [0, 1, 2]
    assert owner.ends[-1] == "lost", "requests still open at stop are dropped"


async def test_pullers_sharing_credit_keep_to_their_share(setup: tuple[Bus, str]) -> None:
    bus, stream = setup
    other = f"{stream.lower()}.other"
    await bus.ensure_consumer(
        stream,
        ConsumerSpec(name="idle", filter_subjects=(other,)),
    )
    owner = Owner(capacity=4)
    pulls: list[Puller] = []

    def shared_credit() -> int:  # the idle puller's open request counts against the busy one
        return owner.credit() - sum(p.owed for p in pulls[1:])

    busy = Puller(
        bus,
        stream=stream,
        consumer="c",
        on_message=owner.on_message,
        credit=shared_credit,
        max_batch=2,
    )
    idle = Puller(
        bus, stream=stream, consumer="idle", on_message=owner.on_message, credit=owner.credit,
        max_batch=2,
    )  # fmt: skip
    pulls += [busy, idle]
    await idle.start()
    assert idle.owed == 2, "start() returns with the first request out"
    await busy.start()
    await publish(bus, stream, range(50))
    await owner.until(50)
    await busy.stop()
    await idle.stop()
    assert sorted(owner.seen) == list(range(50))
    assert owner.most_held <= 2, "the idle capability's share was never taken"


async def test_a_deleted_consumer_is_survived_and_pulling_resumes_when_it_is_back(
    setup: tuple[Bus, str],
) -> None:
    bus, stream = setup
    owner = Owner(capacity=8)
    pull = puller(bus, stream, owner, expires_s=2.0, heartbeat_s=0.2)
    await pull.start()
    await publish(bus, stream, range(3))
    await owner.until(3)
    await bus.js.delete_consumer(stream, "c")
    await owner.ended_with("409")  # "Consumer Deleted" ends the open request
    await bus.ensure_consumer(
        stream,
        ConsumerSpec(name="c", deliver_new=True),
    )
    await publish(bus, stream, range(3, 6))
    await owner.until(6)
    await pull.stop()
    assert owner.seen[3:] == [3, 4, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch and max_open"),
        ({"max_open": 0}, "max_batch and max_open"),
        ({"expires_s": 1.0, "heartbeat_s": 1.0}, "heartbeat_s"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    owner = Owner(capacity=1)
    with pytest.raises(ValueError, match=message):
        Puller(
            None,  # type: ignore[arg-type]
            stream="S",
            consumer="c",
            on_message=owner.on_message,
            credit=owner.credit,
            **kwargs,  # type: ignore[arg-type]
        )
