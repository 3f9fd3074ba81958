"""The gateway's HTTP and WebSocket routes (a Starlette app) over one
:class:`~agenticflow.client.Client` per principal.

Errors are JSON (``{"error": {"code", "message"}}``): 400 malformed JSON,
401 no or unknown token, 403 the policy refuses, 404 unknown workflow or
route, 409 the coordinator refused an intervention, 413 body too large, 422
invalid input or workflow, 503 the cluster cannot be reached, 504 no
coordinator answered in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

import agenticflow
from agenticflow.client import Client, WorkflowHandle
from agenticflow.gateway.auth import Access, Tokens
from agenticflow.gateway.feeds import Feed, Frame, Position, chunks_after, events_after
from agenticflow.gateway.models import (
    Decision,
    Empty,
    Feedback,
    Modify,
    Reason,
    Signal,
    StartRequest,
)
from agenticflow.gateway.openapi import openapi_document
from agenticflow.gateway.responses import JSON, SAFE_HEADERS, ApiError, dumps
from agenticflow.gateway.settings import GatewaySettings
from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    InterventionRefusedError,
    MalformedMessageError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    TransportError,
    WorkflowCancelledError,
    WorkflowDefinitionError,
    WorkflowFailedError,
)
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.events import EventType, InterventionApplied
from agenticflow.shared.wire.ids import ID_RE

log = structlog.get_logger("agenticflow.gateway")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]

MAX_LIST = 1000
"""Most workflows one list request returns."""


class Gateway:
    """The cluster side: the tokens, the policy and one client per principal
    (with keys, each signs as its principal). ``async with`` connects them."""

    def __init__(
        self, *, settings: Settings, config: GatewaySettings, tokens: Tokens, access: Access
    ) -> None:
        self.settings = settings
        self.config = config
        self.tokens = tokens
        self.access = access
        self.clients: dict[str, Client] = {}
        self.open_feeds = 0
        """SSE and WebSocket clients being fed now."""
        self.overflows = 0
        """Clients disconnected for reading too slowly."""
        self.feeds_changed = asyncio.Event()
        """Set whenever :attr:`open_feeds` or :attr:`overflows` changes (for tests)."""

    async def start(self) -> None:
        """Connect a client per principal; raises ConfigError (e.g. no key for
        a principal in a keyed cluster), TransportError."""
        try:
            for principal in self.tokens.principals:
                settings = self.settings.model_copy(update={"principal": principal})
                # Without keys a request names its principal: the node id is it.
                self.clients[principal] = await agenticflow.connect(
                    settings=settings, name=f"agenticflow-gateway-{principal}", node_id=principal
                )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every client (idempotent)."""
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(
            routes=_routes(self),
            exception_handlers={
                ApiError: _api_error,
                HTTPException: _http_error,
                Exception: _server_error,
            },
        )

    # Per request -------------------------------------------------------
    def principal(self, conn: HTTPConnection) -> str:
        """The principal of the request's bearer token; raises ApiError 401."""
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthenticated",
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="agenticflow"'},
            )
        principal = self.tokens.principal(token.strip())
        if principal is None:
            raise ApiError(
                401,
                "unauthenticated",
                "unknown token",
                headers={"WWW-Authenticate": 'Bearer realm="agenticflow", error="invalid_token"'},
            )
        return principal

    def client(self, principal: str) -> Client:
        """The client acting as ``principal``; raises ApiError 503 once closed."""
        client = self.clients.get(principal)
        if client is None:
            raise ApiError(503, "unavailable", "the gateway is not connected to the cluster")
        return client

    async def known(self, client: Client, workflow_id: str) -> None:
        """Raise ApiError 404 unless the workflow was submitted: a coordinator
        recorded it, or its submission is stored (not recorded yet)."""
        if not ID_RE.match(workflow_id):
            raise ApiError(404, "not_found", f"no workflow {workflow_id!r}")
        try:
            await client.status(workflow_id)
        except NotFoundError:
            pass
        except MalformedMessageError:
            return  # a snapshot that was refused: the workflow exists
        else:
            return
        names = client.bus.names
        submitted = names.stored_events_of_type(EventType.WORKFLOW_SUBMITTED.value, workflow_id)
        if await client.bus.last_stored(names.events_stream, submitted) is None:
            raise ApiError(404, "not_found", f"no workflow {workflow_id!r}")

    async def body(self, request: Request, model: type[M]) -> M:
        """The request's JSON body as ``model``; an empty body is ``{}``.
        Raises ApiError 413, 400 or 422."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise _too_large(limit)
        try:
            parsed = json.loads(data) if data.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        try:
            return model.model_validate(parsed)
        except ValidationError as exc:
            details = exc.errors(include_url=False, include_context=False, include_input=False)
            raise ApiError(
                422, "invalid_request", f"invalid {model.__name__} body", details=details
            ) from None

    def feed(self, source: AsyncGenerator[Frame, None], name: str) -> Feed:
        """A client's bounded feed of ``source`` (see :mod:`agenticflow.gateway.feeds`)."""
        return Feed(
            source,
            room=self.config.client_queue,
            block_s=self.config.client_block_s,
            name=name,
            on_overflow=self._overflowed,
        )

    def _overflowed(self) -> None:
        self.overflows += 1
        self.feeds_changed.set()

    def feed_opened(self) -> None:
        self.open_feeds += 1
        self.feeds_changed.set()

    def feed_closed(self) -> None:
        self.open_feeds -= 1
        self.feeds_changed.set()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {limit} bytes")


# Error answers -------------------------------------------------------------
async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(
        exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
    ).response()


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.error("gateway request failed", error_type=type(exc).__name__, error=str(exc))
    return ApiError(500, "internal", "the gateway failed; see its log").response()


def _mapped(exc: AgenticFlowError | TimeoutError | ValueError) -> ApiError:
    """Our errors as HTTP answers."""
    message = str(exc)
    if isinstance(exc, InterventionRefusedError):
        status = {"forbidden": 403, "unknown_workflow": 404}.get(exc.code, 409)
        return ApiError(status, exc.code, message)
    table: list[tuple[type[BaseException], int, str]] = [
        (NotFoundError, 404, "not_found"),
        (PermissionDeniedError, 403, "forbidden"),
        (PayloadTooLargeError, 413, "too_large"),
        (WorkflowDefinitionError, 422, "invalid_workflow"),
        (ConfigError, 422, "invalid_request"),
        (ValueError, 422, "invalid_request"),
        (TransportError, 503, "unavailable"),
        (TimeoutError, 504, "timeout"),
    ]
    for kind, status, code in table:
        if isinstance(exc, kind):
            return ApiError(status, code, message)
    return ApiError(500, getattr(exc, "code", "internal"), message)


def _guarded(handler: Handler) -> Handler:
    """``handler`` with our errors answered as JSON."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except (AgenticFlowError, TimeoutError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                raise
            return _mapped(exc).response()

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


# Routes ----------------------------------------------------------------------
def _routes(gw: Gateway) -> list[BaseRoute]:  # noqa: C901, PLR0915 - one closure per route reads best
    async def health(_request: Request) -> Response:
        return JSON({"status": "ok", "principals": len(gw.clients)})

    async def openapi(_request: Request) -> Response:
        return JSON(openapi_document())

    async def whoami(request: Request) -> Response:
        return JSON({"principal": gw.principal(request)})

    async def start(request: Request) -> Response:
        principal = gw.principal(request)
        client = gw.client(principal)
        body = await gw.body(request, StartRequest)
        definition = _definition(body)
        denial = gw.access.submit_denial(principal, definition)
        if denial is not None:
            raise ApiError(403, "forbidden", denial)
        handle = await client.start(definition, input=body.input, id=body.id, route=body.route)
        log.info("gateway started a workflow", principal=principal, workflow_id=handle.id)
        return JSON(_links(handle.id), 201, {"Location": f"/workflows/{handle.id}"})

    async def listing(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        query = request.query_params
        states = [s for s in query.get("state", "").split(",") if s] or None
        found = await client.list(
            state=states,
            name=query.get("name") or None,
            since=_since(query.get("since")),
            limit=_int(query.get("limit"), "limit", default=100, low=1, high=MAX_LIST),
        )
        rows = []
        for summary in found:
            row = summary.model_dump()
            row["created_at"] = int(summary.created_at.timestamp() * 1e9)
            row["updated_at"] = int(summary.updated_at.timestamp() * 1e9)
            rows.append(row)
        return JSON({"workflows": rows})

    async def describe(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        try:
            state = await client.status(workflow_id)
        except NotFoundError:  # submitted; no coordinator has recorded it yet
            return JSON({"workflow_id": workflow_id, "state": "submitted"})
        return JSON(state.public_view())

    async def result(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        wait = _float(request.query_params.get("wait"), "wait", high=gw.config.max_wait_s)
        await gw.known(client, workflow_id)
        handle = client.handle(workflow_id)
        if wait <= 0:
            try:
                state = await client.status(workflow_id)
            except NotFoundError:
                return JSON({"workflow_id": workflow_id, "state": "submitted"}, 202)
            if not state.is_terminal:
                return JSON({"workflow_id": workflow_id, "state": state.status.value}, 202)
            wait = gw.config.max_wait_s  # it has ended: the output is one read away
        return await _result(handle, wait)

    async def events(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        after = _position(request)
        stored = await client.handle(workflow_id).events()
        frames = [
            frame.data
            for event in stored
            if event.seq is not None and not after.passed(event.seq)
            for frame in [_event(event)]
        ]
        return JSON({"events": frames})

    async def events_sse(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        source = events_after(client, workflow_id, _position(request))
        return EventStream(gw, source, name="events")

    async def stream_sse(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        task, kinds = _stream_filter(request)
        source = chunks_after(client, workflow_id, _position(request), task=task, kinds=kinds)
        return EventStream(gw, source, name="stream")

    async def events_ws(ws: WebSocket) -> None:
        await _websocket(gw, ws, "events")

    async def stream_ws(ws: WebSocket) -> None:
        await _websocket(gw, ws, "stream")

    def steer(
        action: str, model: type[M], call: Callable[[WorkflowHandle, M, str], Awaitable[Any]]
    ) -> Handler:
        async def intervene(request: Request) -> Response:
            principal = gw.principal(request)
            client = gw.client(principal)
            workflow_id = request.path_params["workflow_id"]
            body = await gw.body(request, model)
            denial = gw.access.intervention_denial(principal, action)
            if denial is not None:
                raise ApiError(403, "forbidden", denial)
            await gw.known(client, workflow_id)
            applied = await call(client.handle(workflow_id), body, principal)
            log.info(
                "gateway intervention applied",
                principal=principal,
                workflow_id=workflow_id,
                action=action,
            )
            return JSON(_applied(workflow_id, applied))

        intervene.__name__ = action
        intervene.__doc__ = f"{action.capitalize()} a workflow."
        return intervene

    timeout = gw.config.intervention_timeout_s

    async def cancel(h: WorkflowHandle, b: Reason, by: str) -> Any:
        return await h.client.cancel(h.id, b.reason, by=by, timeout=timeout)

    async def terminate(h: WorkflowHandle, b: Reason, by: str) -> Any:
        return await h.client.terminate(h.id, b.reason, by=by, timeout=timeout)

    async def pause(h: WorkflowHandle, _b: Empty, by: str) -> Any:
        return await h.client.pause(h.id, by=by, timeout=timeout)

    async def resume(h: WorkflowHandle, _b: Empty, by: str) -> Any:
        return await h.client.intervene(h.id, "resume", by=by, timeout=timeout)

    async def feedback(h: WorkflowHandle, b: Feedback, by: str) -> Any:
        return await h.client.feedback(h.id, b.text, by=by, timeout=timeout)

    async def modify(h: WorkflowHandle, b: Modify, by: str) -> Any:
        return await h.client.modify(h.id, b.changes, by=by, timeout=timeout)

    async def approve(h: WorkflowHandle, b: Decision, by: str) -> Any:
        return await h.client.approve(h.id, b.task, b.comment, by=by, timeout=timeout)

    async def reject(h: WorkflowHandle, b: Decision, by: str) -> Any:
        return await h.client.reject(h.id, b.task, b.comment, by=by, timeout=timeout)

    steering: list[tuple[str, Handler]] = [
        ("cancel", steer("cancel", Reason, cancel)),
        ("terminate", steer("terminate", Reason, terminate)),
        ("pause", steer("pause", Empty, pause)),
        ("resume", steer("resume", Empty, resume)),
        ("feedback", steer("feedback", Feedback, feedback)),
        ("modify", steer("modify", Modify, modify)),
        ("approve", steer("approve", Decision, approve)),
        ("reject", steer("reject", Decision, reject)),
    ]
    routes: list[BaseRoute] = [
        Route("/healthz", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/whoami", _guarded(whoami), methods=["GET"]),
        Route("/workflows", _guarded(start), methods=["POST"]),
        Route("/workflows", _guarded(listing), methods=["GET"]),
        Route("/workflows/{workflow_id}", _guarded(describe), methods=["GET"]),
        Route("/workflows/{workflow_id}/result", _guarded(result), methods=["GET"]),
        Route("/workflows/{workflow_id}/events", _guarded(events), methods=["GET"]),
        Route("/workflows/{workflow_id}/events/sse", _guarded(events_sse), methods=["GET"]),
        Route("/workflows/{workflow_id}/stream/sse", _guarded(stream_sse), methods=["GET"]),
        WebSocketRoute("/workflows/{workflow_id}/events/ws", events_ws),
        WebSocketRoute("/workflows/{workflow_id}/stream/ws", stream_ws),
    ]
    routes.extend(
        Route(f"/workflows/{{workflow_id}}/{action}", _guarded(handler), methods=["POST"])
        for action, handler in steering
    )
    if hasattr(Client, "signal"):  # signals (issue 24) where the client has them
        routes.append(
            Route(
                "/workflows/{workflow_id}/signals/{name}",
                _guarded(_signal_route(gw)),
                methods=["POST"],
            )
        )
    return routes


def _signal_route(gw: Gateway) -> Handler:
    async def signal(request: Request) -> Response:
        """Send a signal to the workflow's ``wait: {signal: NAME}`` nodes."""
        principal = gw.principal(request)
        client = gw.client(principal)
        workflow_id = request.path_params["workflow_id"]
        name = request.path_params["name"]
        body = await gw.body(request, Signal)
        denial = gw.access.intervention_denial(principal, "signal")
        if denial is not None:
            raise ApiError(403, "forbidden", denial)
        await gw.known(client, workflow_id)
        # Looked up, not named: the client gains signals in a change of its own.
        send: Callable[..., Awaitable[InterventionApplied]] = getattr(client, "signal")  # noqa: B009
        applied = await send(
            workflow_id, name, body.data, by=principal, timeout=gw.config.intervention_timeout_s
        )
        return JSON(_applied(workflow_id, applied))

    return signal


# Helpers -------------------------------------------------------------------------
def _definition(body: StartRequest) -> WorkflowDefinition:
    """The definition to start: given, or a template rendered with the input
    (never a file on the gateway's host)."""
    if body.workflow is not None:
        return parse_workflow(body.workflow, source="request")
    from agenticflow.coordinator.supervisor.templates import Templates

    assert body.template is not None
    return Templates.load().get(body.template).render(body.input)


def _links(workflow_id: str) -> dict[str, Any]:
    base = f"/workflows/{workflow_id}"
    return {
        "id": workflow_id,
        "links": {
            "self": base,
            "result": f"{base}/result",
            "events": f"{base}/events",
            "events_sse": f"{base}/events/sse",
            "stream_sse": f"{base}/stream/sse",
        },
    }


def _applied(workflow_id: str, applied: InterventionApplied) -> dict[str, Any]:
    return {"workflow_id": workflow_id, **applied.model_dump()}


def _event(event: Any) -> Frame:
    from agenticflow.gateway.feeds import event_frame

    return event_frame(event)


async def _result(handle: WorkflowHandle, wait: float) -> Response:
    """The workflow's output once it ended (202 if it did not within ``wait`` s)."""
    try:
        output = await handle.result(timeout=wait)
    except TimeoutError:
        state = await handle.client._readable(handle.id)
        running = state.status.value if state is not None else "submitted"
        return JSON({"workflow_id": handle.id, "state": running}, 202)
    except (WorkflowFailedError, WorkflowCancelledError) as exc:
        state = exc.status
        return JSON(
            {
                "workflow_id": handle.id,
                "state": state.status.value if state is not None else "failed",
                "reason": state.reason if state is not None else str(exc),
                "failed_task": state.failed_task if state is not None else None,
            }
        )
    return JSON({"workflow_id": handle.id, "state": "completed", "output": output})


def _int(text: str | None, name: str, *, default: int, low: int, high: int) -> int:
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(422, "invalid_request", f"{name} must be an integer from {low} to {high}")
    return int(text)


def _float(text: str | None, name: str, *, high: float) -> float:
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:
        raise ApiError(422, "invalid_request", f"{name} must be seconds from 0 to {high:g}")
    return value


def _since(text: str | None) -> datetime | timedelta | None:
    """``since``: seconds ago, or an ISO 8601 time."""
    if not text:
        return None
    try:
        return timedelta(seconds=float(text))
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, "invalid_request", "since must be seconds ago or an ISO 8601 time"
        ) from None


def _position(conn: HTTPConnection) -> Position:
    """Where a feed resumes: ``Last-Event-ID`` (what an SSE client sends back
    by itself) or ``?after=``."""
    text = conn.headers.get("last-event-id") or conn.query_params.get("after")
    try:
        return Position(text)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def _stream_filter(conn: HTTPConnection) -> tuple[str | None, list[str] | None]:
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


class EventStream(Response):
    """A ``text/event-stream`` answer fed by a :class:`Feed`; it ends with an
    ``end``, ``overflow`` or ``error`` event. A comment line every
    ``keepalive_s`` keeps a quiet stream open; a client that goes away cancels
    its feed (checked while waiting, not only when writing)."""

    media_type = "text/event-stream"

    def __init__(self, gw: Gateway, source: AsyncGenerator[Frame, None], *, name: str) -> None:
        # Not Response.__init__: that would declare a body of length 0.
        self.status_code = 200
        self.background = None
        self.init_headers({**SAFE_HEADERS, "X-Accel-Buffering": "no"})
        self._gw = gw
        self._source = source
        self._name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def pump() -> None:
            async for chunk in _framed(self._gw, self._source, self._name):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(gone())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for running in tasks:
                running.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, Exception) and not isinstance(outcome, OSError):
                raise outcome


async def _framed(
    gw: Gateway, source: AsyncGenerator[Frame, None], name: str
) -> AsyncIterator[bytes]:
    """The feed's frames as SSE text, with keep-alive comments when quiet."""
    gw.feed_opened()
    try:
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
                if pending is not None:
                    pending.cancel()
                await frames.aclose()
    finally:
        gw.feed_closed()


# WebSocket --------------------------------------------------------------------------
WS_OVERFLOW = 1013
"""Close code when a client was too slow ("try again later"): it resumes with ``?after=``."""
WS_POLICY = 1008
"""Close code for a refused connection, when the server cannot answer with an HTTP status."""


async def _websocket(gw: Gateway, ws: WebSocket, what: str) -> None:
    """Feed a WebSocket: each frame a JSON text message ``{"type", "id", "data"}``."""
    try:
        principal = gw.principal(ws)
        client = gw.client(principal)
        workflow_id = ws.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        after = _position(ws)
        if what == "events":
            source = events_after(client, workflow_id, after)
        else:
            task, kinds = _stream_filter(ws)
            source = chunks_after(client, workflow_id, after, task=task, kinds=kinds)
    except ApiError as refused:
        await _deny(ws, refused)
        return
    except (AgenticFlowError, TimeoutError) as exc:
        await _deny(ws, _mapped(exc))
        return
    await ws.accept()
    gw.feed_opened()
    try:
        sender = asyncio.ensure_future(_send_frames(gw, ws, source, what))
        listener = asyncio.ensure_future(_until_closed(ws))
        try:
            await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for running in (sender, listener):
                running.cancel()
            await asyncio.gather(sender, listener, return_exceptions=True)
    finally:
        gw.feed_closed()


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


__all__ = ["WS_OVERFLOW", "WS_POLICY", "EventStream", "Gateway", "sse"]
