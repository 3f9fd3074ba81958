"""The worker's side of auction allocation
(contract net; see :mod:`agenticflow.coordinator.auction`).

A worker listens (core NATS) for ``task.auction_opened`` calls of the queues
it serves. For each, unless it is stopping or every instance of the agent is
suspended, it asks the agent's bid function (``@app.agent(..., bid=fn)``;
default :func:`default_bid`, its load) and publishes a ``task.bid`` event
(lower is better; None declines). Before its first bid on a queue it opens
its *direct* consumer: an ephemeral push consumer of
``<prefix>.direct.<queue>.<node>`` on the ``<PREFIX>_DIRECT`` WorkQueue
stream, delivering into the worker's inbox, through which the task arrives
if the bid wins. The server deletes that consumer once the worker has been
gone for a while; a task awarded to a dead worker is purged and re-sent to
the shared queue by the coordinator when its claim expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agenticflow.shared.bus.base import Bus, Message
from agenticflow.shared.errors import AgenticFlowError, MalformedMessageError
from agenticflow.shared.wire.events import Event, EventType, TaskAuctionOpened, TaskBid
from agenticflow.shared.wire.ids import task_key
from agenticflow.shared.wire.vclock import VectorClock

log = structlog.get_logger("agenticflow.bidding")


@dataclass(frozen=True, slots=True)
class AuctionCall:
    """What a bid function is asked to price: one attempt of one task."""

    workflow_id: str
    task_id: str
    attempt: int
    capability: str
    params: dict[str, Any] = field(default_factory=dict)
    window_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """An agent's load on this worker when the call came."""

    worker: str
    agent: str
    instances: int
    """Instances that may take a task (not suspended)."""
    busy: int
    """Tasks of the agent this worker holds now (running or about to)."""

    @property
    def ratio(self) -> float:
        """``busy / instances``: 0 when idle, 1 (or more) when every instance is busy."""
        return self.busy / max(self.instances, 1)


BidFunction = Callable[[AuctionCall, AgentLoad], float | Awaitable[float | None] | None]
"""``bid(call, load)``: a price for the task (lower is better), or None to decline;
plain or ``async``."""


def default_bid(call: AuctionCall, load: AgentLoad) -> float:
    """The agent's load: an idle worker bids 0, a fully busy one 1."""
    return load.ratio


class Bidder:
    """Answers auction calls for a worker's queues and receives the tasks it wins.

    ``queues`` maps each queue it serves to its capability; ``agent_of``
    names the agent serving a capability, ``bid_of`` its bid function (None:
    :func:`default_bid`), ``load_of`` its load; ``deliver(agent, msg)`` takes a
    task message won; ``stopping()`` says the worker no longer bids; ``tick``
    merges a clock into the workflow's and increments the worker's entry.
    """

    def __init__(
        self,
        *,
        bus: Bus,
        node_id: str,
        queues: dict[str, str],
        agent_of: Callable[[str], str],
        bid_of: Callable[[str], BidFunction | None],
        load_of: Callable[[str], AgentLoad],
        deliver: Callable[[str, Message], None],
        stopping: Callable[[], bool],
        tick: Callable[[str, VectorClock], VectorClock],
    ) -> None:
        self.bus = bus
        self.node_id = node_id
        self._queues = dict(queues)  # queue -> capability
        self._agent_of = agent_of
        self._bid_of = bid_of
        self._load_of = load_of
        self._deliver = deliver
        self._stopping = stopping
        self._tick = tick
        self._subs: list[Any] = []
        self._direct: dict[str, asyncio.Lock] = {}
        self._opened: set[str] = set()
        self.bids = 0

    async def start(self) -> None:
        """Listen for auction calls; returns once subscribed."""
        subject = self.bus.names.event_subject("*", EventType.TASK_AUCTION_OPENED.value)
        self._subs.append(await self.bus.subscribe(subject, self._on_call))

    async def stop(self) -> None:
        """Stop bidding and receiving direct tasks (idempotent): the direct
        consumers go once the server sees nobody listening."""
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_call(self, msg: Message) -> None:
        try:
            event = self.bus.decode_event(msg)
        except MalformedMessageError:
            return  # not ours to record: the coordinator rejects what it cannot read
        data = event.data
        if not isinstance(data, TaskAuctionOpened) or event.task_id is None:
            return
        capability = self._queues.get(data.queue)
        if capability is None or self._stopping() or event.attempt is None:
            return
        try:
            await self._bid(event, data, capability)
        except Exception:  # one failed bid must not stop the subscription
            log.exception("bid not sent", workflow_id=event.workflow_id, task_id=event.task_id)

    async def _bid(self, event: Event, data: TaskAuctionOpened, capability: str) -> None:
        assert event.task_id is not None
        assert event.attempt is not None
        agent = self._agent_of(capability)
        load = self._load_of(agent)
        if load.instances <= 0:
            return  # every instance is suspended
        call = AuctionCall(
            workflow_id=event.workflow_id,
            task_id=event.task_id,
            attempt=event.attempt,
            capability=data.capability,
            params=data.params,
            window_s=data.window_s,
        )
        value = (self._bid_of(agent) or default_bid)(call, load)
        if inspect.isawaitable(value):
            value = await value
        if value is None:
            return
        await self._open_direct(data.queue, agent, load)
        bid = Event(
            id=task_key(event.workflow_id, event.task_id, event.attempt, f"bid:{self.node_id}"),
            type=EventType.TASK_BID,
            workflow_id=event.workflow_id,
            source=self.node_id,
            timestamp=time.time_ns(),
            vclock=self._tick(event.workflow_id, event.vclock),
            data=TaskBid(worker=self.node_id, agent=agent, value=float(value)),
            task_id=event.task_id,
            attempt=event.attempt,
        )
        await (await self.bus.send_event(bid))
        self.bids += 1

    async def _open_direct(self, queue: str, agent: str, load: AgentLoad) -> None:
        """Open this worker's direct consumer of ``queue`` (once)."""
        if queue in self._opened:
            return
        async with self._direct.setdefault(queue, asyncio.Lock()):
            if queue in self._opened:
                return
            inbox = self.bus.new_inbox()
            sub = await self.bus.subscribe(inbox, self._receiver(agent))
            try:
                await self.bus.open_direct(
                    queue,
                    self.node_id,
                    deliver_subject=inbox,
                    max_ack_pending=max(load.instances, 1),
                )
            except AgenticFlowError:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                raise
            self._subs.append(sub)
            self._opened.add(queue)

    def _receiver(self, agent: str) -> Callable[[Message], Awaitable[None]]:
        async def receive(msg: Message) -> None:
            self._deliver(agent, msg)

        return receive


__all__ = ["AgentLoad", "AuctionCall", "BidFunction", "Bidder", "default_bid"]
