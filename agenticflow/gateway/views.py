"""Read-only views of a workflow and of the cluster, drawn by the web console
and open to any gateway client: a workflow's DAG now or as of an event
(``/graph?until=SEQ``, what ``replay --until`` shows), its attempts on a
timeline, how it differs from another run, a fork from an event, and the
cluster as ``agenticflow top`` sees it with the breakers, rate limits,
partitions and dead letters beside it (``/cluster``), and the audit chain's
verdict on demand.

Every route names its principal like the others (a token, or the console's
session); forks are submissions, checked by the same policy as a start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agenticflow.client import Client
from agenticflow.coordinator.exports import attempt_spans
from agenticflow.coordinator.forks import first_divergence
from agenticflow.coordinator.replay import state_until
from agenticflow.coordinator.state import TaskStatus, WorkflowState
from agenticflow.gateway.feeds import event_frame
from agenticflow.gateway.models import Empty, Fork
from agenticflow.gateway.responses import JSON, ApiError
from agenticflow.gateway.service import Gateway
from agenticflow.shared.errors import AgenticFlowError, NotFoundError, TransportError
from agenticflow.shared.wire.events import Event
from agenticflow.shared.wire.ids import ID_RE

log = structlog.get_logger("agenticflow.gateway")

Handler = Callable[[Request], Awaitable[Response]]

DEAD_LETTERS_SHOWN = 50
"""The newest dead letters ``/cluster`` lists."""
AUDIT_VERIFY_TIMEOUT_S = 120.0
"""Longest an audit verification requested from the console may run."""


def node_view(state: WorkflowState, task_id: str) -> dict[str, Any]:
    """One task as the console draws it: its definition (dependencies, gate,
    wait, child) and its state."""
    task = state.tasks[task_id]
    spec = state.spec(task_id) if state.definition is not None else None
    wait = spec.wait if spec is not None else None
    return {
        "id": task_id,
        "capability": task.capability,
        "state": task.status.value,
        "depends_on": list(spec.depends_on) if spec is not None else [],
        "gate": spec is not None and spec.approval is not None,
        "waiting_approval": task.status == TaskStatus.WAITING_APPROVAL,
        "wait": None
        if wait is None
        else {
            "kind": "signal" if wait.signal else "until" if wait.until else "duration",
            "signal": wait.signal,
        },
        "child": task.child,
        "attempts": task.attempts,
        "worker": task.worker,
        "agent": task.agent,
        "input": spec.params if spec is not None else {},
        "description": spec.description if spec is not None else "",
        "result": task.result,
        "error": task.error.model_dump() if task.error else None,
        "note": task.note,
        "scheduled_at": task.scheduled_at,
        "started_at": task.started_at,
        "finished_at": task.finished_at,
    }


def graph_view(state: WorkflowState, *, until: int | None = None) -> dict[str, Any]:
    """A workflow's DAG with each task's state (``/workflows/ID/graph``)."""
    return {
        "workflow_id": state.workflow_id,
        "name": state.name,
        "state": state.status.value,
        "paused": state.paused,
        "last_seq": state.last_seq,
        "until": until,
        "reason": state.reason,
        "output": state.output,
        "created_at": state.created_at,
        "finished_at": state.finished_at,
        "nodes": [node_view(state, task_id) for task_id in state.tasks],
    }


def timeline_view(events: list[Event]) -> dict[str, Any]:
    """Each task attempt from its start to its outcome (``/workflows/ID/timeline``)."""
    spans = attempt_spans(events)
    times = [e.timestamp for e in events]
    return {
        "spans": [span.to_dict() for span in spans],
        "start_ns": min(times) if times else None,
        "end_ns": max(times) if times else None,
    }


def _seq(text: str | None, name: str) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 19:
        raise ApiError(422, "invalid_request", f"{name} must be a stream sequence (1 or more)")
    return int(text)


def _workflow_id(request: Request) -> str:
    workflow_id = str(request.path_params["workflow_id"])
    if not ID_RE.match(workflow_id):
        raise ApiError(404, "not_found", f"no workflow {workflow_id!r}")
    return workflow_id


async def _events(client: Client, workflow_id: str) -> list[Event]:
    found = await client.events(workflow_id)
    if not found:
        raise ApiError(404, "not_found", f"no events of workflow {workflow_id!r}")
    return found


def view_routes(gw: Gateway, guarded: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """The view routes, each wrapped by ``guarded`` (errors as JSON)."""

    async def graph(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = _workflow_id(request)
        until = _seq(request.query_params.get("until"), "until")
        if until is None:
            recorded = await gw.recorded(client, workflow_id)
            if recorded is None:  # submitted; no coordinator has recorded it yet
                return JSON({"workflow_id": workflow_id, "state": "submitted", "nodes": []})
            state = recorded
        else:
            found = state_until(await _events(client, workflow_id), seq=until)
            if found is None:
                raise ApiError(
                    404, "not_found", f"{workflow_id!r} was not submitted by seq {until}"
                )
            state = found
        return JSON(graph_view(state, until=until))

    async def timeline(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        workflow_id = _workflow_id(request)
        return JSON(timeline_view(await _events(client, workflow_id)))

    async def diff(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        first = _workflow_id(request)
        second = request.query_params.get("other") or ""
        if not ID_RE.match(second):
            raise ApiError(422, "invalid_request", "other must be a workflow id")
        left, right = await _events(client, first), await _events(client, second)
        found = first_divergence(left, right)
        return JSON(
            {
                "same": found is None,
                "why": found.why if found else None,
                "first": event_frame(found.left).data if found and found.left else None,
                "second": event_frame(found.right).data if found and found.right else None,
                "events": [len(left), len(right)],
            }
        )

    async def fork(request: Request) -> Response:
        principal = gw.principal(request)
        client = gw.client(principal)
        workflow_id = _workflow_id(request)
        body = await gw.body(request, Fork)
        source = state_until(await _events(client, workflow_id), seq=body.at)
        if source is None or source.definition is None:
            raise ApiError(404, "not_found", f"{workflow_id!r} has no submission by seq {body.at}")
        denial = gw.access.submit_denial(principal, source.definition)
        if denial is not None:
            raise ApiError(403, "forbidden", denial)
        new_id = await client.fork(workflow_id, at_seq=body.at)
        log.info("gateway forked a workflow", principal=principal, source=workflow_id, id=new_id)
        return JSON(
            {
                "id": new_id,
                "source": workflow_id,
                "at": body.at,
                "links": {"self": f"/workflows/{new_id}"},
            },
            201,
            {"Location": f"/workflows/{new_id}"},
        )

    async def cluster(request: Request) -> Response:
        client = gw.client(gw.principal(request))
        return JSON(await cluster_view(client, gw))

    async def audit(request: Request) -> Response:
        principal = gw.principal(request)
        await gw.body(request, Empty)
        client = gw.client(principal)
        if gw.auditing.locked():  # one full read of the audit stream at a time
            raise ApiError(
                429,
                "busy",
                "an audit verification is already running: try again when it ends",
                headers={"Retry-After": "5"},
            )
        async with gw.auditing:
            return JSON(await audit_view(client))

    return [
        Route("/workflows/{workflow_id}/graph", guarded(graph), methods=["GET"]),
        Route("/workflows/{workflow_id}/timeline", guarded(timeline), methods=["GET"]),
        Route("/workflows/{workflow_id}/diff", guarded(diff), methods=["GET"]),
        Route("/workflows/{workflow_id}/fork", guarded(fork), methods=["POST"]),
        Route("/cluster", guarded(cluster), methods=["GET"]),
        Route("/cluster/audit/verify", guarded(audit), methods=["POST"]),
    ]


async def cluster_view(client: Client, gw: Gateway) -> dict[str, Any]:
    """What ``agenticflow top --once --json`` shows, with the registry's
    workers and coordinators (versions, partitions), the tools' breakers and
    rate limits, and the newest dead letters."""
    from agenticflow.top import build_view, read_cluster
    from agenticflow.worker.tools.cluster import read_states

    bus = client.bus
    readings = await read_cluster(bus)  # the registry read once, for the view and below
    view = build_view(readings, bus.names, gw.cluster_previous)
    gw.cluster_previous = view
    registry = sorted(readings.registry, key=lambda entry: str(entry.get("instance", "")))
    tools: list[dict[str, Any]] = []
    with contextlib.suppress(AgenticFlowError):
        tools = await read_states(bus)
    letters = (await client.dead_letters())[-DEAD_LETTERS_SHOWN:]
    return {
        "view": view.to_dict(),
        "workers": [entry for entry in registry if entry.get("role") != "coordinator"],
        "coordinators": [entry for entry in registry if entry.get("role") == "coordinator"],
        "partitions": [
            {
                "partition": entry.get("partition", 0),
                "partitions": entry.get("partitions", 1),
                "owner": entry.get("instance"),
                "state": entry.get("state"),
                "heartbeat": entry.get("heartbeat"),
            }
            for entry in registry
            if entry.get("role") == "coordinator"
        ],
        "tools": tools,
        "dead_letters": [
            {
                "seq": event.seq,
                "workflow_id": event.workflow_id,
                "task_id": event.task_id,
                "attempt": event.attempt,
                "timestamp": event.timestamp,
                **event.data.model_dump(mode="json"),
            }
            for event in reversed(letters)
        ],
    }


async def audit_view(client: Client) -> dict[str, Any]:
    """The audit chain's verdict (``agenticflow audit verify --json``), with
    the gateway's trust store; raises ApiError 504 when it takes too long."""
    from agenticflow.shared.security.audit import reader_seal, verify_audit

    settings = client.bus.settings
    seal = reader_seal(settings.security_dir, window_s=settings.dedupe_window_s)
    try:
        report = await asyncio.wait_for(verify_audit(client.bus, seal), AUDIT_VERIFY_TIMEOUT_S)
    except NotFoundError:
        return {
            "ok": True,
            "records": 0,
            "chains": {},
            "problems": [],
            "notes": ["no audit trail yet"],
        }
    except TimeoutError:
        raise ApiError(504, "timeout", "the audit trail took too long to verify") from None
    except TransportError as exc:
        raise ApiError(503, "unavailable", f"cannot read the audit trail: {exc}") from None
    return report.to_json()


__all__ = ["audit_view", "cluster_view", "graph_view", "node_view", "timeline_view", "view_routes"]
