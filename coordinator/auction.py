"""Auction allocation (contract net): the pure decisions.

A task with ``allocation: auction`` is not put on its capability's shared
queue at once. The reducer records ``task.auction_opened`` (the call) and arms
a timer; workers serving the capability answer with ``task.bid`` events (lower
is better; by default the bidder's current load); when the window ends the
shell records ``task.auction_closed`` and the reducer records ``task.awarded``
and dispatches the task to the winner's direct subject, or to the shared queue
when nobody bid. A winner that does not start the task within the claim
timeout loses it to the shared queue (``task.claim_expired``).

Everything here is a function of the events folded, in stream order: which
bids count (those of the current attempt folded before the close, one per
worker) and who wins (the lowest bid; ties go to the lowest worker id), so
replay reaches the same award.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class Bid(BaseModel):
    """One worker's bid, as the auction recorded it."""

    model_config = ConfigDict(extra="ignore")

    worker: str
    agent: str
    value: float
    at: int = 0
    """When it was folded (the bid event's timestamp)."""


class AuctionState(BaseModel):
    """The auction of one attempt of one task
    (on :class:`~agenticflow.coordinator.state.TaskState`)."""

    model_config = ConfigDict(extra="ignore")

    attempt: int
    opened_at: int
    due_ns: int
    """When bidding ends."""
    claim_timeout_s: float
    bids: list[Bid] = Field(default_factory=list)
    closed: bool = False
    winner: Bid | None = None
    claim_due_ns: int | None = None
    """When the winner must have started the task by (None: no winner, or no claim pending)."""
    fell_back: bool = False
    """The winner's claim expired: the task went to the shared queue."""

    @property
    def direct_to(self) -> str | None:
        """The worker the task message goes to directly (None: the shared queue)."""
        if self.winner is None or self.fell_back:
            return None
        return self.winner.worker


def accepts(auction: AuctionState | None, attempt: int | None, bid: Bid) -> bool:
    """Whether ``bid`` for ``attempt`` counts: the auction of that attempt is still
    open, the worker has not bid already and the value is a finite number."""
    return (
        auction is not None
        and not auction.closed
        and attempt == auction.attempt
        and math.isfinite(bid.value)
        and all(other.worker != bid.worker for other in auction.bids)
    )


def best(bids: list[Bid]) -> Bid | None:
    """The winning bid: the lowest value, ties to the lowest worker id; None without bids."""
    return min(bids, key=lambda bid: (bid.value, bid.worker), default=None)


__all__ = ["AuctionState", "Bid", "accepts", "best"]
