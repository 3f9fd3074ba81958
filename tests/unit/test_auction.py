"""Auction allocation in the reducer (pure): the call, the bids, the award, the fallbacks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticflow.coordinator.auction import AuctionState, Bid, accepts, best
from agenticflow.coordinator.causality import causality_violations
from agenticflow.coordinator.reducer import (
    COORDINATOR_NODE,
    ArmTimer,
    Command,
    Dispatch,
    Emit,
    fold,
    pending_timers,
    reduce,
)
from agenticflow.coordinator.replay import BOOKKEEPING
from agenticflow.coordinator.state import TaskStatus, WorkflowState, WorkflowStatus
from agenticflow.shared.errors import MalformedMessageError, WorkflowDefinitionError
from agenticflow.shared.graph.workflow import parse_workflow
from agenticflow.shared.wire.codec import TaskMessage, decode_task, encode_task
from agenticflow.shared.wire.events import (
    Event,
    EventType,
    Payload,
    TaskAuctionClosed,
    TaskAuctionOpened,
    TaskAwarded,
    TaskBid,
    TaskClaimExpired,
    TaskCompleted,
    TaskStarted,
    WorkflowSubmitted,
)
from agenticflow.shared.wire.ids import task_key, workflow_key
from agenticflow.shared.wire.names import Names
from agenticflow.shared.wire.vclock import VectorClock

WF = "wf-auction"
T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
WORKERS = ("w-a", "w-b", "w-c", "w-d")


def definition(**auction: Any) -> Any:
    task: dict[str, Any] = {"id": "t", "capability": "pick", "allocation": "auction"}
    if auction:
        task["auction"] = auction
    return parse_workflow({"name": "auction", "tasks": [task]})


class Run:
    """Folds events like the coordinator: its own emitted events go back into the
    stream (and are folded) after the event that caused them."""

    def __init__(self, **auction: Any) -> None:
        self.state: WorkflowState | None = None
        self.stream: list[Event] = []
        self.commands: list[Command] = []
        self.clocks: dict[str, VectorClock] = {}
        self.fold(
            Event(
                id=workflow_key(WF, "submitted"),
                type=EventType.WORKFLOW_SUBMITTED,
                workflow_id=WF,
                source="client",
                timestamp=T0,
                vclock=VectorClock({"client": 1}),
                data=WorkflowSubmitted(definition=definition(**auction)),
            )
        )

    def fold(self, event: Event) -> list[Command]:
        event = event.model_copy(update={"seq": len(self.stream) + 1})
        self.stream.append(event)
        self.state, commands = reduce(self.state, event)
        self.commands.extend(commands)
        for command in commands:
            if isinstance(command, Emit):
                self.fold(command.event)
        return commands

    def send(
        self,
        event_type: EventType,
        data: Payload,
        *,
        source: str,
        at: float,
        attempt: int = 1,
        what: str | None = None,
    ) -> list[Command]:
        """An event from a worker or the shell, ``at`` seconds after the start: each
        node's clock follows what it saw of the task (its own entry ticked)."""
        seen = self.task_clock(attempt)
        clock = self.clocks.get(source, VectorClock()).merge(seen).increment(source)
        self.clocks[source] = clock
        return self.fold(
            Event(
                id=task_key(WF, "t", attempt, what or f"{event_type.value}:{source}"),
                type=event_type,
                workflow_id=WF,
                source=source,
                timestamp=T0 + int(at * S),
                vclock=clock,
                data=data,
                task_id="t",
                attempt=attempt,
            )
        )

    def task_clock(self, attempt: int) -> VectorClock:
        clocks = [
            e.vclock
            for e in self.stream
            if e.task_id == "t" and (e.attempt or 0) <= attempt and e.source == COORDINATOR_NODE
        ]
        merged = VectorClock()
        for clock in clocks:
            merged = merged.merge(clock)
        return merged

    def bid(self, worker: str, value: float, *, at: float = 0.1, attempt: int = 1) -> None:
        self.send(
            EventType.TASK_BID,
            TaskBid(worker=worker, agent="picker", value=value),
            source=worker,
            at=at,
            attempt=attempt,
        )

    def close(self, *, at: float = 0.5) -> list[Command]:
        assert self.state is not None
        auction = self.state.tasks["t"].auction
        assert auction is not None
        return self.send(
            EventType.TASK_AUCTION_CLOSED,
            TaskAuctionClosed(due_ns=auction.due_ns),
            source="coord-1",
            at=at,
        )

    @property
    def live(self) -> WorkflowState:
        assert self.state is not None
        return self.state

    @property
    def task(self) -> Any:
        assert self.state is not None
        return self.state.tasks["t"]

    def of_type(self, event_type: EventType) -> list[Event]:
        return [e for e in self.stream if e.type == event_type]

    def dispatches(self) -> list[TaskMessage]:
        return [c.task for c in self.commands if isinstance(c, Dispatch)]

    def replays_to_the_same_state(self) -> bool:
        replayed = fold(self.stream)
        assert replayed is not None
        assert self.state is not None
        return bool(
            replayed.model_dump(exclude=BOOKKEEPING) == self.state.model_dump(exclude=BOOKKEEPING)
        )


# The call -------------------------------------------------------------------


def test_an_auctioned_task_is_announced_not_dispatched() -> None:
    run = Run(window_s=0.25, claim_timeout_s=4)
    (opened,) = run.of_type(EventType.TASK_AUCTION_OPENED)
    assert isinstance(opened.data, TaskAuctionOpened)
    assert opened.data.capability == opened.data.queue == "pick"
    assert opened.data.due_ns == T0 + S // 4
    assert opened.data.claim_timeout_s == 4
    assert opened.id == task_key(WF, "t", 1, "auction_opened")
    assert run.dispatches() == []
    assert ArmTimer("auction", WF, "t", 1, T0 + S // 4) in run.commands
    assert run.task.status == TaskStatus.AUCTION
    assert pending_timers(run.live) == [ArmTimer("auction", WF, "t", 1, T0 + S // 4)]


def test_the_lowest_bid_wins_and_the_task_goes_to_it_alone() -> None:
    run = Run(claim_timeout_s=4)
    run.bid("w-a", 1.0)
    run.bid("w-b", 0.5)
    run.bid("w-c", 0.0)
    run.close()
    (awarded,) = run.of_type(EventType.TASK_AWARDED)
    assert awarded.data == TaskAwarded(winner="w-c", agent="picker", value=0.0, bids=3)
    (message,) = run.dispatches()
    assert message.direct == "w-c"
    assert message.attempt == 1
    assert message.heartbeat_s == pytest.approx(4 / 3), "the winner heartbeats by default"
    claim_due = T0 + S // 2 + 4 * S
    assert ArmTimer("claim", WF, "t", 1, claim_due) in run.commands
    assert pending_timers(run.live) == [ArmTimer("claim", WF, "t", 1, claim_due)]
    # The winner starts it: the claim timer, firing anyway, changes nothing.
    run.send(
        EventType.TASK_STARTED,
        TaskStarted(worker="w-c", agent="picker", instance="w-c.picker.0"),
        source="w-c",
        at=0.6,
        what="started",
    )
    assert run.task.status == TaskStatus.RUNNING
    assert (
        run.send(
            EventType.TASK_CLAIM_EXPIRED,
            TaskClaimExpired(winner="w-c", claim_timeout_s=4, due_ns=claim_due),
            source="coord-1",
            at=4.5,
        )
        == []
    )
    assert run.task.status == TaskStatus.RUNNING
    assert run.replays_to_the_same_state()


def test_ties_go_to_the_lowest_worker_id() -> None:
    run = Run()
    run.bid("w-b", 0.0)
    run.bid("w-a", 0.0)
    run.close()
    assert run.dispatches()[0].direct == "w-a"


def test_late_stale_repeated_and_nonsense_bids_do_not_count() -> None:
    run = Run()
    run.bid("w-a", 0.5)
    run.bid("w-a", 0.0)  # a second bid of the same worker: the first counts
    run.bid("w-b", 0.1, attempt=2)  # for another attempt
    run.bid("w-c", float("nan"))
    run.close()
    run.bid("w-d", 0.0, at=0.6)  # after the close
    (awarded,) = run.of_type(EventType.TASK_AWARDED)
    assert awarded.data == TaskAwarded(winner="w-a", agent="picker", value=0.5, bids=1)
    assert [b.worker for b in run.task.auction.bids] == ["w-a"]
    assert run.replays_to_the_same_state()


def test_without_a_bid_the_task_goes_to_the_shared_queue() -> None:
    run = Run()
    run.close()
    (awarded,) = run.of_type(EventType.TASK_AWARDED)
    assert awarded.data == TaskAwarded(winner=None, bids=0)
    (message,) = run.dispatches()
    assert message.direct is None
    assert not [c for c in run.commands if isinstance(c, ArmTimer) and c.kind == "claim"]
    assert run.task.status == TaskStatus.SCHEDULED
    assert pending_timers(run.live) == []


def test_a_winner_that_does_not_claim_loses_the_task_to_the_shared_queue() -> None:
    run = Run(claim_timeout_s=2)
    run.bid("w-a", 0.0)
    run.close()
    due = run.task.auction.claim_due_ns
    expired = run.send(
        EventType.TASK_CLAIM_EXPIRED,
        TaskClaimExpired(winner="w-a", claim_timeout_s=2, due_ns=due),
        source="coord-1",
        at=2.6,
    )
    (fallback,) = [c.task for c in expired if isinstance(c, Dispatch)]
    assert fallback.direct is None
    assert fallback.attempt == 1, "the same attempt: whichever starts first runs it"
    assert run.task.status == TaskStatus.SCHEDULED
    assert run.task.auction.fell_back
    assert pending_timers(run.live) == []
    # A repeated expiry changes nothing.
    assert (
        run.send(
            EventType.TASK_CLAIM_EXPIRED,
            TaskClaimExpired(winner="w-a", claim_timeout_s=2, due_ns=due),
            source="coord-1",
            at=2.7,
        )
        == []
    )
    # Both the shared queue's worker and the revived winner run it: applied once.
    for worker, at in (("w-z", 3.0), ("w-a", 3.1)):
        run.send(
            EventType.TASK_STARTED,
            TaskStarted(worker=worker, agent="picker", instance=f"{worker}.picker.0"),
            source=worker,
            at=at,
            what="started",
        )
    for worker, at in (("w-z", 3.5), ("w-a", 3.6)):
        run.send(
            EventType.TASK_COMPLETED,
            TaskCompleted(result=worker, worker=worker, agent="picker"),
            source=worker,
            at=at,
            what="completed",
        )
    assert run.state is not None
    assert run.state.status == WorkflowStatus.COMPLETED
    assert run.state.completed == 1
    assert run.task.result == "w-z"
    assert len(run.of_type(EventType.WORKFLOW_COMPLETED)) == 1
    assert run.replays_to_the_same_state()
    assert causality_violations(run.stream) == []


def test_a_paused_workflow_holds_the_award_and_auctions_again_on_resume() -> None:
    run = Run()
    assert run.state is not None
    run.state.paused = True
    run.bid("w-a", 0.0)
    run.close()
    assert run.task.status == TaskStatus.PENDING
    assert run.of_type(EventType.TASK_AWARDED) == []
    assert run.dispatches() == []


# Invariants -----------------------------------------------------------------

bids = st.lists(
    st.tuples(st.sampled_from(WORKERS), st.floats(min_value=0, max_value=4, allow_nan=False)),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(bids=bids, late=bids)
def test_the_award_is_the_best_first_bid_of_each_worker_whatever_the_order(
    bids: list[tuple[str, float]], late: list[tuple[str, float]]
) -> None:
    run = Run()
    for worker, value in bids:
        run.bid(worker, value)
    run.close()
    for worker, value in late:
        run.bid(worker, value, at=0.7)
    first: dict[str, float] = {}
    for worker, value in bids:
        first.setdefault(worker, value)
    (awarded,) = run.of_type(EventType.TASK_AWARDED)
    assert isinstance(awarded.data, TaskAwarded)
    assert awarded.data.bids == len(first)
    if first:
        expected = min(first.items(), key=lambda item: (item[1], item[0]))
        assert (awarded.data.winner, awarded.data.value) == expected
        assert run.dispatches()[0].direct == expected[0]
    else:
        assert awarded.data.winner is None
        assert run.dispatches()[0].direct is None
    assert run.replays_to_the_same_state()
    assert causality_violations(run.stream) == []


@given(st.permutations([("w-a", 0.3), ("w-b", 0.1), ("w-c", 0.1), ("w-d", 2.0)]))
def test_best_does_not_depend_on_order(order: list[tuple[str, float]]) -> None:
    winner = best([Bid(worker=w, agent="x", value=v) for w, v in order])
    assert winner is not None
    assert (winner.worker, winner.value) == ("w-b", 0.1)


def test_accepts() -> None:
    auction = AuctionState(attempt=2, opened_at=0, due_ns=1, claim_timeout_s=1)
    bid = Bid(worker="w", agent="a", value=1.0)
    assert accepts(auction, 2, bid)
    assert not accepts(None, 2, bid)
    assert not accepts(auction, 1, bid)
    assert not accepts(auction, 2, bid.model_copy(update={"value": float("inf")}))
    auction.bids.append(bid)
    assert not accepts(auction, 2, bid.model_copy(update={"value": 0.0}))
    auction.bids.clear()
    auction.closed = True
    assert not accepts(auction, 2, bid)


# Definitions and messages ---------------------------------------------------


def test_auction_settings_in_a_workflow_file() -> None:
    spec = definition(window_s=0.2, claim_timeout_s=9).tasks[0]
    assert spec.allocation == "auction"
    assert spec.auction_policy.window_s == 0.2
    assert spec.heartbeat_timeout_s == 9, "defaults to the claim timeout"
    plain = parse_workflow({"tasks": [{"id": "t", "capability": "x"}]}).tasks[0]
    assert plain.allocation == "queue"
    assert plain.heartbeat_timeout_s is None
    with pytest.raises(WorkflowDefinitionError, match="need 'allocation: auction'"):
        parse_workflow({"tasks": [{"id": "t", "capability": "x", "auction": {"window_s": 1}}]})
    with pytest.raises(WorkflowDefinitionError, match="window_s"):
        definition(window_s=0)
    with pytest.raises(WorkflowDefinitionError, match="allocation"):
        parse_workflow({"tasks": [{"id": "t", "capability": "x", "allocation": "lottery"}]})


def test_a_direct_task_travels_on_its_workers_subject_only() -> None:
    names = Names("af")
    task = TaskMessage(workflow_id=WF, task_id="t", attempt=1, capability="pick", direct="w-1")
    subject, headers, body = encode_task(task, names)
    assert subject == "af.direct.pick.w-1"
    assert decode_task(subject, headers, body).direct == "w-1"
    for wrong in ("af.direct.pick.w-2", "af.task.pick", "af.direct.other.w-1"):
        with pytest.raises(MalformedMessageError):
            decode_task(wrong, headers, body)
    shared = task.model_copy(update={"direct": None})
    subject, headers, body = encode_task(shared, names)
    assert subject == "af.task.pick"
    assert decode_task(subject, headers, body).direct is None
