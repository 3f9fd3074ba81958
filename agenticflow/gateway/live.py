"""Live feeds over HTTP: Server-Sent Events and WebSockets for a workflow's
events and its streamed output (see :mod:`agenticflow.gateway.feeds` for the
bounded queue behind each client)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from agenticflow.gateway.feeds import Frame, Position, chunks_after, events_after
from agenticflow.gateway.responses import SAFE_HEADERS, ApiError, dumps, mapped
from agenticflow.shared.errors import AgenticFlowError

if TYPE_CHECKING:
    from agenticflow.gateway.service import Gateway


async def first_of(*work: Coroutine[Any, Any, Any]) -> list[Any]:
    """Run ``work`` until the first of it ends, then cancel the rest; every
    outcome, in order (a result, an exception, or CancelledError for what was
    cancelled). Cancelled itself, it cancels them all."""
    tasks = [asyncio.ensure_future(one) for one in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for running in tasks:
            running.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return list(outcomes)


def position(conn: HTTPConnection) -> Position:
    """Where a feed resumes: ``Last-Event-ID`` (what an SSE client sends back
    by itself) or ``?after=``."""
    text = conn.headers.get("last-event-id") or conn.query_params.get("after")
    try:
        return Position(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def stream_filter(conn: HTTPConnection) -> tuple[str | None, list[str] | None]:
    from agenticflow.coordinator.streams import DROPPED
    from agenticflow.shared.wire.events import OUTPUT_KINDS

    kinds = [k for k in conn.query_params.get("kinds", "").split(",") if k] or None
    unknown = sorted(set(kinds or ()) - {*OUTPUT_KINDS, DROPPED})
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown kind {unknown[0]!r}: one of {', '.join((*OUTPUT_KINDS, DROPPED))}",
        )
    return conn.query_params.get("task") or None, kinds


# Server-Sent Events ------------------------------------------------------------
def sse(frame: Frame) -> bytes:
    """One frame in the text/event-stream format (the JSON is one line)."""
    lines = [f"id: {frame.id}"] if frame.id is not None else []
    lines += [f"event: {frame.kind}", f"data: {dumps(frame.data)}", "", ""]
    return "\n".join(lines).encode()


TRANSPORT = "agenticflow.transport"
"""Scope key of the connection's transport, when the server exposes it (see
:func:`agenticflow.gateway.app.application`): a stalled client is aborted."""


class EventStream(Response):
    """A ``text/event-stream`` answer fed by a :class:`Feed`; it ends with an
    ``end``, ``overflow`` or ``error`` event. A comment line every
    ``keepalive_s`` keeps a quiet stream open; a client that goes away cancels
    its feed (checked while waiting, not only when writing). A send the client
    does not take within ``send_timeout_s`` (it stopped reading, its TCP
    window is full) drops it: the connection is aborted and its queue freed.
    Beyond the feed limits it answers 429 instead."""

    media_type = "text/event-stream"

    def __init__(
        self, gw: Gateway, principal: str, source: AsyncGenerator[Frame, None], *, name: str
    ) -> None:
        # Not Response.__init__: that would declare a body of length 0.
        self.status_code = 200
        self.background = None
        self.init_headers({**SAFE_HEADERS, "X-Accel-Buffering": "no"})
        self._gw = gw
        self._principal = principal
        self._source = source
        self._name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self._gw
        try:
            gw.feed_opened(self._principal)
        except ApiError as refused:
            await self._source.aclose()  # never started: holds nothing
            await refused.response()(scope, receive, send)
            return
        try:
            await self._serve(scope, receive, send)
        finally:
            gw.feed_closed(self._principal)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self._gw
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def pump() -> None:
            async with contextlib.aclosing(_framed(gw, self._source, self._name)) as chunks:
                async for chunk in chunks:
                    message = {"type": "http.response.body", "body": chunk, "more_body": True}
                    try:
                        async with asyncio.timeout(gw.config.send_timeout_s):
                            await send(message)
                    except TimeoutError:
                        _drop(scope)
                        gw.stalled_client()
                        return
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        results = await first_of(pump(), gone(), gw.session_over(HTTPConnection(scope)))
        if not isinstance(results[2], BaseException):  # the console session ended: end too
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        for outcome in results:
            if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                raise outcome


def _drop(scope: Scope) -> None:
    """Abort a stalled client's connection (its unsent bytes are discarded:
    a graceful close would wait for it to read them, maybe for ever); without
    the transport, returning unfinished makes the server close it."""
    transport = scope.get(TRANSPORT)
    if isinstance(transport, asyncio.Transport):
        transport.abort()


async def _framed(
    gw: Gateway, source: AsyncGenerator[Frame, None], name: str
) -> AsyncGenerator[bytes, None]:
    """The feed's frames as SSE text, with keep-alive comments when quiet."""
    async with gw.feed(source, name) as feed:
        frames = feed.frames()
        yield b": agenticflow\n\n"  # headers and a first byte out at once
        pending: asyncio.Future[Frame] | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(frames))
                done, _ = await asyncio.wait({pending}, timeout=gw.config.keepalive_s)
                if not done:
                    yield b": keepalive\n\n"
                    continue
                try:
                    frame = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield sse(frame)
        finally:
            if pending is not None:  # let it finish before closing its generator
                pending.cancel()
                await asyncio.wait({pending})
            await frames.aclose()


# WebSocket --------------------------------------------------------------------------
WS_OVERFLOW = 1013
"""Close code when a client was too slow ("try again later"): it resumes with ``?after=``."""
WS_POLICY = 1008
"""Close code for a refused connection, when the server cannot answer with an HTTP status."""


async def websocket(gw: Gateway, ws: WebSocket, what: str) -> None:
    """Feed a WebSocket: each frame a JSON text message ``{"type", "id", "data"}``."""
    try:
        principal = gw.principal(ws)
        client = gw.client(principal)
        workflow_id = ws.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        after = position(ws)
        if what == "events":
            source = events_after(client, workflow_id, after)
        else:
            task, kinds = stream_filter(ws)
            source = chunks_after(client, workflow_id, after, task=task, kinds=kinds)
    except ApiError as refused:
        await _deny(ws, refused)
        return
    except (AgenticFlowError, TimeoutError) as exc:
        await _deny(ws, mapped(exc))
        return
    try:
        gw.feed_opened(principal)
    except ApiError as refused:
        await source.aclose()  # never started: holds nothing
        await _deny(ws, refused)
        return
    try:
        await ws.accept()
        await first_of(_send_frames(gw, ws, source, what), _until_closed(ws), _session_over(gw, ws))
    finally:
        gw.feed_closed(principal)


async def _send_frames(
    gw: Gateway, ws: WebSocket, source: AsyncGenerator[Frame, None], what: str
) -> None:
    async with gw.feed(source, what) as feed:
        code = 1000
        async for frame in feed.frames():
            try:
                await ws.send_text(dumps({"type": frame.kind, "id": frame.id, "data": frame.data}))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if frame.kind == "overflow":
                code = WS_OVERFLOW
            elif frame.kind == "error":
                code = 1011
    with contextlib.suppress(Exception):
        await ws.close(code)


async def _session_over(gw: Gateway, ws: WebSocket) -> None:
    """Close the WebSocket (1008) once the console session it was opened with ends."""
    await gw.session_over(ws)
    with contextlib.suppress(Exception):
        await ws.close(WS_POLICY, "the session ended")


async def _until_closed(ws: WebSocket) -> None:
    """Return when the client closes (what it sends otherwise is ignored)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _deny(ws: WebSocket, refused: ApiError) -> None:
    """Refuse the handshake with the error's HTTP status and JSON body where the
    server can; else accept and close with code 1008 and the message."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(refused.response())
        return
    await ws.accept()
    await ws.close(WS_POLICY, refused.message[:120])


__all__ = [
    "TRANSPORT",
    "WS_OVERFLOW",
    "WS_POLICY",
    "EventStream",
    "first_of",
    "position",
    "sse",
    "stream_filter",
    "websocket",
]
