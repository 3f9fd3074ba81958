"""Auction allocation across three real worker processes (``allocation: auction``).

The workers serve ``pick`` (tests/support/app.py ``bidding``: two instances each,
bidding their load). Load is real: the test keeps instances busy with tasks
that hold until it releases them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.causality import causality_violations
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.reducer import fold
from agenticflow.coordinator.replay import BOOKKEEPING, verify
from agenticflow.coordinator.state import WorkflowState, WorkflowStatus
from agenticflow.shared.bus.nats_backend import NatsBus as Bus
from agenticflow.shared.wire.codec import unpack
from agenticflow.shared.wire.events import Event, EventType, TaskAwarded, TaskBid, TaskStarted
from tests.chaos.helpers import Observer
from tests.conftest import unique_prefix
from tests.integration.helpers import of_type, wf

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def auction_cluster(nats_server: NatsServer, log_dir: Path) -> AsyncIterator[DevCluster]:
    """A coordinator and three workers serving the bidding app."""
    dev = DevCluster(
        app="tests.support.app:bidding",
        workers=3,
        concurrency=4,
        nats_url=nats_server.url,
        prefix=unique_prefix("au"),
        log_dir=log_dir / "auction",
    )
    async with dev:
        yield dev


@pytest.fixture(scope="module")
async def auction_bus(auction_cluster: DevCluster) -> AsyncIterator[Bus]:
    bus = await Bus.connect(auction_cluster.settings, name="tests-auction")
    yield bus
    await bus.close()


@pytest.fixture(scope="module")
async def observer(auction_bus: Bus) -> Observer:
    seen = Observer(auction_bus)
    await seen.start()
    return seen


@pytest.fixture(scope="module")
async def workers(auction_bus: Bus) -> dict[str, int]:
    """The worker processes' node ids (sorted) and their pids, from the registry."""
    store = await auction_bus.kv(auction_bus.names.agents_bucket)
    found: dict[str, int] = {}
    for key in await store.keys():
        entry = await store.get(key)
        info = unpack(entry.value) if entry.value else {}
        if isinstance(info, dict) and info.get("role") == "worker":
            found[str(info["worker"])] = int(info["pid"])
    assert len(found) == 3, found
    return dict(sorted(found.items()))


def auctioned(**params: Any) -> Any:
    window = params.pop("window_s", 1.5)
    claim = params.pop("claim_timeout_s", 10)
    return wf(
        {
            "id": "t",
            "capability": "pick",
            "params": params,
            "allocation": "auction",
            "auction": {"window_s": window, "claim_timeout_s": claim},
        }
    )


def of(observer: Observer, workflow_id: str, event_type: EventType) -> list[Event]:
    return [e for _, e in observer.seen if e.workflow_id == workflow_id and e.type == event_type]


async def wait_for(
    observer: Observer, workflow_id: str, event_type: EventType, count: int = 1
) -> list[Event]:
    await observer.until(lambda o: len(of(o, workflow_id, event_type)) >= count, timeout=60)
    return of(observer, workflow_id, event_type)


async def assert_replays_clean(client: Client, state: WorkflowState) -> list[Event]:
    events = await client.events(state.workflow_id)
    replayed = fold(events)
    assert replayed is not None
    assert replayed.model_dump(exclude=BOOKKEEPING) == state.model_dump(exclude=BOOKKEEPING)
    assert causality_violations(events) == []
    assert verify(events, state) == [], "what `agenticflow replay --verify` checks"
    return events


async def test_the_least_loaded_of_three_bidders_wins(
    auction_bus: Bus, observer: Observer, workers: dict[str, int]
) -> None:
    client = Client(bus=auction_bus, node_id="tests-auction-client")
    busiest, half, idle = workers  # the idle one has the highest id: no tie-break helps it
    holds = []
    for on in (busiest, busiest, half):  # real load: 2 of 2 instances, 1 of 2, none
        held = await client.submit(auctioned(on=on, hold=True, window_s=0.3))
        holds.append(held)
        (started,) = await wait_for(observer, held, EventType.TASK_STARTED)
        assert isinstance(started.data, TaskStarted)
        assert started.data.worker == on

    workflow_id = await client.submit(auctioned())
    state = await client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert state.tasks["t"].result == {"worker": idle}

    events = await assert_replays_clean(client, state)
    (opened,) = of_type(events, EventType.TASK_AUCTION_OPENED)
    bids = {
        e.data.worker: e.data.value
        for e in of_type(events, EventType.TASK_BID)
        if isinstance(e.data, TaskBid)
    }
    assert bids == {busiest: 1.0, half: 0.5, idle: 0.0}
    (awarded,) = of_type(events, EventType.TASK_AWARDED)
    assert awarded.data == TaskAwarded(winner=idle, agent="picker", value=0.0, bids=3)
    (started,) = of_type(events, EventType.TASK_STARTED)
    assert isinstance(started.data, TaskStarted)
    assert started.data.worker == idle
    assert of_type(events, EventType.TASK_CLAIM_EXPIRED) == []
    seq = {e.id: e.seq or 0 for e in events}
    assert seq[opened.id] < seq[awarded.id] < seq[started.id]
    for bid in of_type(events, EventType.TASK_BID):
        assert bid.vclock.get(bid.source) > 0
        assert seq[opened.id] < seq[bid.id] < seq[awarded.id]

    for held in holds:  # release the held instances
        await client.feedback(held, "release")
    for held in holds:
        done = await client.wait(held, timeout=60)
        assert done.status == WorkflowStatus.COMPLETED, done.reason
        await assert_replays_clean(client, done)


async def test_without_a_bid_the_task_falls_back_to_the_shared_queue(
    auction_bus: Bus, workers: dict[str, int]
) -> None:
    client = Client(bus=auction_bus, node_id="tests-auction-client")
    workflow_id = await client.submit(auctioned(decline=True, window_s=0.3))
    state = await client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    assert state.tasks["t"].result["worker"] in workers
    events = await assert_replays_clean(client, state)
    assert of_type(events, EventType.TASK_BID) == []
    (awarded,) = of_type(events, EventType.TASK_AWARDED)
    assert awarded.data == TaskAwarded(winner=None, bids=0)


async def test_a_winner_killed_before_claiming_loses_the_task_to_the_shared_queue(
    auction_cluster: DevCluster,
    auction_bus: Bus,
    observer: Observer,
    workers: dict[str, int],
) -> None:
    client = Client(bus=auction_bus, node_id="tests-auction-client")
    doomed = next(iter(workers))
    workflow_id = await client.submit(auctioned(on=doomed, window_s=3, claim_timeout_s=2))
    (bid,) = await wait_for(observer, workflow_id, EventType.TASK_BID)
    assert bid.source == doomed
    (proc,) = [p for p in auction_cluster.worker_procs if p.pid == workers[doomed]]
    auction_cluster.kill(proc)  # after bidding, before the award

    state = await client.wait(workflow_id, timeout=60)
    assert state.status == WorkflowStatus.COMPLETED, state.reason
    survivor = state.tasks["t"].result["worker"]
    assert survivor in workers
    assert survivor != doomed
    events = await assert_replays_clean(client, state)
    (awarded,) = of_type(events, EventType.TASK_AWARDED)
    assert isinstance(awarded.data, TaskAwarded)
    assert awarded.data.winner == doomed
    (expired,) = of_type(events, EventType.TASK_CLAIM_EXPIRED)
    assert expired.data.model_dump()["winner"] == doomed
    assert [e.attempt for e in of_type(events, EventType.TASK_SCHEDULED)] == [1]
    direct = await auction_bus.js.stream_info(auction_bus.names.direct_stream)
    assert direct.state.messages == 0, "the dead winner's direct message was purged"
