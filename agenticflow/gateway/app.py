"""The gateway's HTTP and WebSocket routes (a Starlette app) over the
:class:`~agenticflow.gateway.service.Gateway`'s clients.

Errors are JSON (``{"error": {"code", "message"}}``): 400 malformed JSON,
401 no or unknown token, 403 the policy refuses, 404 unknown workflow or
route, 409 the coordinator refused an intervention, 413 body too large, 422
invalid input or workflow, 429 too many waits or feeds open (see
:class:`~agenticflow.gateway.settings.GatewaySettings`), 503 the cluster
cannot be reached, 504 no coordinator answered in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import structlog
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from agenticflow.client import WorkflowHandle
from agenticflow.console.app import PageHeaders
from agenticflow.gateway.feeds import Frame, chunks_after, event_frame, events_after
from agenticflow.gateway.live import (
    TRANSPORT,
    EventStream,
    first_of,
    position,
    stream_filter,
    websocket,
)
from agenticflow.gateway.models import (
    Decision,
    Empty,
    Feedback,
    Modify,
    Reason,
    Resume,
    Signal,
    StartRequest,
)
from agenticflow.gateway.openapi import openapi_document
from agenticflow.gateway.responses import JSON, ApiError, error_handlers, mapped
from agenticflow.gateway.service import Gateway
from agenticflow.gateway.views import view_routes
from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    NotFoundError,
    WorkflowCancelledError,
    WorkflowFailedError,
)
from agenticflow.shared.graph.workflow import WorkflowDefinition, parse_workflow
from agenticflow.shared.wire.events import InterventionApplied
from agenticflow.shared.wire.ids import ID_RE

log = structlog.get_logger("agenticflow.gateway")

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

MAX_LIST = 1000
"""Most workflows one list request returns."""
MAX_OFFSET = 10_000_000
"""Furthest a list request pages."""
MAX_QUERY = 200
"""Longest text search (``q``)."""
MAX_SINCE_S = 100 * 365 * 86400
"""Furthest back ``since`` (seconds ago) reaches."""
SIGNAL_NAME = "a signal name is 1-64 letters, digits, '_' or '-'"


def application(gw: Gateway) -> Starlette:
    """The ASGI application of ``gw``."""
    middleware = []
    if gw.config.cors_origins:
        # Tokens travel in a header, never in cookies: no credentials mode.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=gw.config.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                expose_headers=["Location"],
                max_age=600,
            )
        )
    routes = _routes(gw)
    if gw.config.console:
        from agenticflow.console.app import console_routes

        routes.extend(console_routes(gw))
    middleware.append(Middleware(PageHeaders))
    return _App(routes=routes, middleware=middleware, exception_handlers=error_handlers())


class _App(Starlette):
    """Starlette, noting the connection's transport in the scope (uvicorn keeps
    it on the object whose ``send`` it passes the app) so that a stalled SSE
    client can be aborted (:data:`~agenticflow.gateway.live.TRANSPORT`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is not None:
            scope[TRANSPORT] = transport
        await super().__call__(scope, receive, send)


class ClientGoneError(Exception):
    """The client disconnected while its request waited."""


async def _unless_gone(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, unless the client disconnects first: then ``work`` is
    cancelled (releasing what it holds, its bus subscription included) and
    ClientGoneError raised."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    outcome, _ = await first_of(work, gone())
    if isinstance(outcome, asyncio.CancelledError):
        raise ClientGoneError
    if isinstance(outcome, BaseException):
        raise outcome
    return cast(T, outcome)


def _guarded(handler: Handler) -> Handler:
    """``handler`` with our errors answered as JSON."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientGoneError:  # nobody to answer: 499, as nginx logs it
            return Response(status_code=499)
        except (AgenticFlowError, TimeoutError, ValueError) as exc:
            if isinstance(exc, ValidationError):
                raise
            return mapped(exc).response()

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
        wait = _float(request.query_params.get("wait"), "wait", high=gw.config.max_wait_s)
        body = await gw.body(request, StartRequest)
        definition = _definition(body)
        denial = gw.access.submit_denial(principal, definition)
        if denial is not None:
            raise ApiError(403, "forbidden", denial)
        # The wait's slot is taken first: a 429 must not follow a started workflow.
        with gw.waiting(principal) if wait > 0 else contextlib.nullcontext():
            handle = await client.start(definition, input=body.input, id=body.id, route=body.route)
            log.info("gateway started a workflow", principal=principal, workflow_id=handle.id)
            answer = _links(handle.id)
            if wait > 0:  # start and wait: one round trip for a caller that wants the result
                answer.update((await _unless_gone(request, _outcome(handle, wait)))[1])
        return JSON(answer, 201, {"Location": f"/workflows/{handle.id}"})

    async def listing(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        query = request.query_params
        states = [s for s in query.get("state", "").split(",") if s] or None
        text = query.get("q") or None
        if text is not None and len(text) > MAX_QUERY:
            raise ApiError(422, "invalid_request", f"q is at most {MAX_QUERY} characters")
        if len(query.get("name") or "") > MAX_QUERY:  # each glob is compiled and cached
            raise ApiError(422, "invalid_request", f"name is at most {MAX_QUERY} characters")
        limit = _int(query.get("limit"), "limit", default=100, low=1, high=MAX_LIST)
        offset = _int(query.get("offset"), "offset", default=0, low=0, high=MAX_OFFSET)
        found = await client.list(
            state=states,
            name=query.get("name") or None,
            since=_since(query.get("since")),
            until=_since(query.get("until"), "until"),
            text=text,
            limit=None,
        )
        rows = []
        for summary in found[offset : offset + limit]:
            row = summary.model_dump()
            row["created_at"] = int(summary.created_at.timestamp() * 1e9)
            row["updated_at"] = int(summary.updated_at.timestamp() * 1e9)
            rows.append(row)
        return JSON({"workflows": rows, "total": len(found), "offset": offset, "limit": limit})

    async def describe(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        state = await gw.recorded(client, workflow_id)
        if state is None:  # submitted; no coordinator has recorded it yet
            return JSON({"workflow_id": workflow_id, "state": "submitted"})
        usage = await client.usage(workflow_id)
        return JSON({**state.public_view(), "llm_usage": usage.to_dict()})

    async def result(request: Request) -> Response:
        principal = gw.principal(request)
        client = gw.client(principal)
        workflow_id = request.path_params["workflow_id"]
        wait = _float(request.query_params.get("wait"), "wait", high=gw.config.max_wait_s)
        await gw.known(client, workflow_id)
        handle = client.handle(workflow_id)
        asked = wait > 0
        if not asked:
            try:
                state = await client.status(workflow_id)
            except NotFoundError:
                return JSON({"workflow_id": workflow_id, "state": "submitted"}, 202)
            if not state.is_terminal:
                return JSON({"workflow_id": workflow_id, "state": state.status.value}, 202)
            wait = gw.config.max_wait_s  # it has ended: the output is one read away
        with gw.waiting(principal) if asked else contextlib.nullcontext():
            status, body = await _unless_gone(request, _outcome(handle, wait))
        return JSON(body, status)

    async def events(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        after = position(request)
        stored = await client.handle(workflow_id).events()
        frames = [
            frame.data
            for event in stored
            if event.seq is not None and not after.passed(event.seq)
            for frame in [_event(event)]
        ]
        return JSON({"events": frames})

    async def events_sse(request: Request) -> Response:
        principal = gw.principal(request)
        client = gw.client(principal)
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        source = events_after(client, workflow_id, position(request))
        return EventStream(gw, principal, source, name="events")

    async def stream_sse(request: Request) -> Response:
        principal = gw.principal(request)
        client = gw.client(principal)
        workflow_id = request.path_params["workflow_id"]
        await gw.known(client, workflow_id)
        task, kinds = stream_filter(request)
        source = chunks_after(client, workflow_id, position(request), task=task, kinds=kinds)
        return EventStream(gw, principal, source, name="stream")

    async def events_ws(ws: WebSocket) -> None:
        await websocket(gw, ws, "events")

    async def stream_ws(ws: WebSocket) -> None:
        await websocket(gw, ws, "stream")

    def steer(
        action: str, model: type[M], call: Callable[[WorkflowHandle, M, str], Awaitable[Any]]
    ) -> Handler:
        async def intervene(request: Request) -> Response:
            principal = gw.principal(request)
            client = gw.client(principal)
            workflow_id = request.path_params["workflow_id"]
            body = await gw.body(request, model)
            denial = gw.access.intervention_denial(principal, action)
            if denial is None and isinstance(body, Modify):
                denial = gw.access.modification_denial(principal, body.changes)
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

    async def resume(h: WorkflowHandle, b: Resume, by: str) -> Any:
        if b.from_task is None and (await h.client.status(h.id)).status.value == "running":
            return await h.client.intervene(h.id, "resume", by=by, timeout=timeout)
        try:  # a re-run: requested as the principal (the client's node id)
            await h.client.resume(h.id, from_task=b.from_task)
        except ConfigError as exc:
            raise ApiError(409, "not_resumable", str(exc)) from None
        again = f"from {b.from_task!r}" if b.from_task else "its unfinished tasks"
        return {"action": "resume", "by": by, "summary": f"re-running {again}"}

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
        ("resume", steer("resume", Resume, resume)),
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
    routes.append(
        Route(
            "/workflows/{workflow_id}/signals/{name}", _guarded(_signal_route(gw)), methods=["POST"]
        )
    )
    routes.extend(view_routes(gw, _guarded))
    return routes


def _signal_route(gw: Gateway) -> Handler:
    async def signal(request: Request) -> Response:
        """Send a signal to the workflow's ``wait: {signal: NAME}`` nodes."""
        principal = gw.principal(request)
        client = gw.client(principal)
        workflow_id = request.path_params["workflow_id"]
        name = request.path_params["name"]
        if not ID_RE.match(name):
            raise ApiError(422, "invalid_request", SIGNAL_NAME)
        body = await gw.body(request, Signal)
        denial = gw.access.intervention_denial(principal, "signal")
        if denial is not None:
            raise ApiError(403, "forbidden", denial)
        await gw.known(client, workflow_id)
        applied = await client.signal(
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


def _applied(workflow_id: str, applied: InterventionApplied | dict[str, Any]) -> dict[str, Any]:
    done = applied.model_dump() if isinstance(applied, InterventionApplied) else applied
    return {"workflow_id": workflow_id, **done}


def _event(event: Any) -> Frame:
    return event_frame(event)


async def _outcome(handle: WorkflowHandle, wait: float) -> tuple[int, dict[str, Any]]:
    """The workflow's output once it ended: 200 and ``{state, output}`` (or
    ``{state, reason, failed_task}``), else 202 and ``{state}`` if it did not
    end within ``wait`` seconds."""
    try:
        output = await handle.result(timeout=wait)
    except TimeoutError:
        try:
            running = (await handle.status()).status.value
        except NotFoundError:
            running = "submitted"
        return 202, {"workflow_id": handle.id, "state": running}
    except (WorkflowFailedError, WorkflowCancelledError) as exc:
        state = exc.status
        return 200, {
            "workflow_id": handle.id,
            "state": state.status.value if state is not None else "failed",
            "reason": state.reason if state is not None else str(exc),
            "failed_task": state.failed_task if state is not None else None,
        }
    return 200, {"workflow_id": handle.id, "state": "completed", "output": output}


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


def _since(text: str | None, name: str = "since") -> datetime | timedelta | None:
    """``since`` (or ``until``): seconds ago, or an ISO 8601 time."""
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not 0 <= seconds <= MAX_SINCE_S:
            raise ApiError(
                422, "invalid_request", f"{name} must be from 0 to {MAX_SINCE_S} seconds ago"
            )
        return timedelta(seconds=seconds)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, "invalid_request", f"{name} must be seconds ago or an ISO 8601 time"
        ) from None


__all__ = ["Gateway", "application"]
