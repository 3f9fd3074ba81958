"""Continuous pulling from a durable JetStream consumer.

nats-py's ``fetch(n)`` sends one pull request and waits until ``n`` messages
came or the request timed out: a caller that asks for 64 and gets 1 waits the
whole timeout (seen here as multi-second stalls in p99). :class:`Puller`
instead keeps pull requests open and hands over every message as it arrives:

- it asks only for what its owner can take (``credit()``), so no message
  waits in a local queue while its ``ack_wait`` runs;
- each request has its own reply subscription, so what a request still owes
  is known exactly: a message or the end of a request (status 408 expired,
  409 refused, ...) is attributed to the request it answers;
- with ``max_open=1`` one request is open at a time and messages are handed
  over in stream order (the coordinator needs that); workers allow several;
- requests carry an idle heartbeat; a request that goes silent (its server
  or connection went away) is dropped after a few missed heartbeats, and all
  requests are dropped on reconnect, so pulling resumes at once.

The owner calls :meth:`kick` whenever its credit may have grown (a task
finished, a batch was consumed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from nats.aio.msg import Msg

from agenticflow.shared.bus.base import Message

if TYPE_CHECKING:
    from agenticflow.shared.bus.nats_backend import NatsBus

log = structlog.get_logger("agenticflow.puller")

_STATUS = "Status"
_HEARTBEAT = "100"
_EXPIRED = "408"
_MISSED_BEATS = 3
_ERROR_BACKOFF_S = 0.5


@dataclass(slots=True, eq=False)
class _Request:
    owed: int
    deadline: float
    """monotonic time after which a silent request is considered lost"""
    sub: Any = None


class Puller:
    """Keeps pull requests open on ``stream``/``consumer`` and calls
    ``on_message`` with every delivered message, in delivery order.

    ``credit()`` says how many more messages the owner can take now (messages
    it holds do not count as credit); at most ``max_batch`` are owed at any
    time. A new request goes out when nothing is owed, or when at least half
    a batch can be asked for.
    """

    def __init__(
        self,
        bus: NatsBus,
        *,
        stream: str,
        consumer: str,
        on_message: Callable[[Message], None],
        credit: Callable[[], int],
        max_batch: int = 64,
        max_open: int = 8,
        expires_s: float = 5.0,
        heartbeat_s: float = 1.0,
        on_end: Callable[[str], None] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """``on_end(reason)`` is told how each request ended: ``"done"`` (all its
        messages came), ``"lost"`` (silent, or dropped on reconnect or stop) or
        the server's status code (``"408"`` expired, ``"409"`` refused, ...).
        ``max_bytes`` bounds what one request may deliver (the server ends it
        short of that)."""
        if max_batch < 1 or max_open < 1:
            raise ValueError("max_batch and max_open must be at least 1")
        if not 0 < heartbeat_s < expires_s:
            raise ValueError("heartbeat_s must be positive and shorter than expires_s")
        self._bus = bus
        self._next = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_message = on_message
        self._credit = credit
        self._max_batch = max_batch
        self._max_open = max_open
        self._expires_s = expires_s
        self._heartbeat_s = heartbeat_s
        self._requests: list[_Request] = []
        self._ended: list[_Request] = []
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff_until = 0.0
        self._on_end = on_end
        self._max_bytes = max_bytes
        self.what = f"{stream}/{consumer}"

    @property
    def owed(self) -> int:
        """Messages requested and not delivered yet."""
        return sum(r.owed for r in self._requests)

    async def start(self) -> None:
        """Start requesting; returns once the first request is out (if there is
        credit and the connection is up)."""
        self._bus.on_reconnect(self.reset)
        with contextlib.suppress(Exception):  # the run loop retries
            await self._request()
        self._task = asyncio.create_task(self._run(), name=f"pull-{self.what}")

    async def stop(self) -> None:
        """Stop requesting and receiving (idempotent). Messages delivered to
        requests still open are not handled: JetStream redelivers them after
        ``ack_wait``."""
        self._stopped.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for request in list(self._requests):
            self._end(request, "lost")
        await self._unsubscribe_ended()
        self._bus.forget_reconnect(self.reset)

    def kick(self) -> None:
        """The owner's credit may have grown: consider a new request."""
        self._wake.set()

    def reset(self) -> None:
        """Forget every open request (after a reconnect they are gone)."""
        for request in list(self._requests):
            self._end(request, "lost")

    async def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            now = time.monotonic()
            for request in [r for r in self._requests if r.deadline < now]:
                self._end(request, "lost")
            await self._unsubscribe_ended()
            if now >= self._backoff_until:
                try:
                    await self._request()
                except Exception as exc:  # the connection is down: retry after a pause
                    log.debug("pull request not sent", consumer=self.what, error=str(exc))
                    self._backoff_until = time.monotonic() + _ERROR_BACKOFF_S
            wait = self._heartbeat_s
            if self._backoff_until > now:
                wait = min(wait, max(self._backoff_until - now, 0.01))
            # Wake on a kick, or periodically to drop lost requests: not a wait on an effect.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _request(self) -> None:
        if len(self._requests) >= self._max_open:
            return
        owed = self.owed
        # Never more than max_batch owed in all: several pullers sharing one
        # owner's credit each keep to their share.
        batch = min(self._credit() - owed, self._max_batch - owed)
        if batch <= 0 or (owed and batch < max(1, self._max_batch // 2)):
            return
        request = _Request(owed=batch, deadline=self._deadline())
        nc = self._bus.nc
        inbox = nc.new_inbox()
        request.sub = await nc.subscribe(inbox, cb=functools.partial(self._on_reply, request))
        self._requests.append(request)
        fields = {
            "batch": batch,
            "expires": int(self._expires_s * 1e9),
            "idle_heartbeat": int(self._heartbeat_s * 1e9),
        }
        if self._max_bytes is not None:
            fields["max_bytes"] = self._max_bytes
        body = json.dumps(fields).encode()
        try:
            await nc.publish(self._next, body, reply=inbox)
        except Exception:
            self._end(request, "lost")
            raise

    def _deadline(self) -> float:
        return time.monotonic() + self._heartbeat_s * _MISSED_BEATS

    def _end(self, request: _Request, reason: str) -> None:
        """The request delivers nothing more: unsubscribe it (from the run loop,
        not from inside its own callback) and consider the next one."""
        if request not in self._requests:
            return
        self._requests.remove(request)
        self._ended.append(request)
        self._wake.set()
        if self._on_end is not None:
            self._on_end(reason)

    async def _unsubscribe_ended(self) -> None:
        ended, self._ended = self._ended, []
        for request in ended:
            with contextlib.suppress(Exception):
                await request.sub.unsubscribe()

    async def _on_reply(self, request: _Request, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers and not msg.data else None
        if status is None:
            request.owed -= 1
            request.deadline = self._deadline()
            if request.owed <= 0:
                self._end(request, "done")
            self._on_message(msg)
            return
        if status == _HEARTBEAT:
            request.deadline = self._deadline()
            return
        # The request is over: expired (408) or refused (409 max waiting, consumer
        # deleted, leadership change; 503 no responders...).
        if status != _EXPIRED:
            description = (msg.headers or {}).get("Description", "")
            log.debug("pull request ended", consumer=self.what, status=status, reason=description)
            self._backoff_until = time.monotonic() + _ERROR_BACKOFF_S
        self._end(request, status)


__all__ = ["Puller"]
