"""The OpenAPI 3.1 document the gateway publishes at ``GET /openapi.json``:
every route, its parameters, its request body's JSON schema (from the same
pydantic models that validate it) and its error answers."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

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

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "Malformed JSON",
    "401": "No token, or an unknown one",
    "403": "The policy does not grant it",
    "404": "Unknown workflow",
    "409": "The coordinator refused the intervention",
    "413": "Body too large",
    "422": "Invalid input",
    "503": "The cluster cannot be reached",
    "504": "No coordinator answered in time",
}
_WORKFLOW_ID = {
    "name": "workflow_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
_WAIT = {
    "name": "wait",
    "in": "query",
    "description": "Seconds to wait for the end.",
    "schema": {"type": "number", "minimum": 0},
}
_AFTER = {
    "name": "after",
    "in": "query",
    "description": "Resume after this frame id (SSE clients send Last-Event-ID instead).",
    "schema": {"type": "string"},
}
_STREAM_FILTER = [
    {
        "name": "task",
        "in": "query",
        "description": "Only this task's chunks.",
        "schema": {"type": "string"},
    },
    {
        "name": "kinds",
        "in": "query",
        "description": "Comma-separated: token, progress, log, artifact, dropped.",
        "schema": {"type": "string"},
    },
]
_INTERVENTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("cancel", Reason, "Cancel cooperatively (workflow:cancel)."),
    ("terminate", Reason, "End now, as aborted (workflow:terminate)."),
    ("pause", Empty, "Dispatch nothing new until resumed (workflow:pause)."),
    ("resume", Resume, "Resume a paused workflow, or re-run a failed one (workflow:resume)."),
    ("feedback", Feedback, "Send feedback to running and later tasks (workflow:feedback)."),
    ("modify", Modify, "Change tasks not yet started (workflow:modify)."),
    ("approve", Decision, "Approve the task waiting for approval (workflow:approve)."),
    ("reject", Decision, "Reject the task waiting for approval (workflow:reject)."),
]


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or {"type": "object"}}},
    }


def _errors(*codes: str) -> dict[str, Any]:
    error = {"$ref": _REF.format(model="Error")}
    return {code: _json(_ERRORS[code], error) for code in ("401", *codes)}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "required": model not in (Empty, Resume),
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }


def _sse(summary: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [_WORKFLOW_ID, _AFTER, *extra],
            "responses": {
                "200": {
                    "description": "text/event-stream: frames (id: resume position, event: "
                    "event|chunk, data: JSON), then one end, overflow or error frame",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors("404", "422"),
            },
        }
    }


def _signal_path() -> dict[str, Any]:
    workflow = [_WORKFLOW_ID]
    return {
        "post": {
            "summary": "Send a signal to its wait: {signal: NAME} nodes (workflow:signal).",
            "parameters": [
                *workflow,
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "requestBody": _body(Signal),
            "responses": {
                "200": _json("Applied"),
                **_errors("400", "403", "404", "409", "413", "422", "504"),
            },
        }
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    from agenticflow import __version__

    models: list[type[BaseModel]] = [
        StartRequest,
        Reason,
        Empty,
        Feedback,
        Decision,
        Modify,
        Signal,
    ]
    _, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {},
                },
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    }
    workflow = [_WORKFLOW_ID]
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "Liveness (no token).",
                "security": [],
                "responses": {"200": _json("ok")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document (no token).",
                "security": [],
                "responses": {"200": _json("OpenAPI 3.1")},
            }
        },
        "/whoami": {
            "get": {
                "summary": "The principal of your token.",
                "responses": {"200": _json("principal"), **_errors()},
            }
        },
        "/workflows": {
            "post": {
                "summary": "Start a workflow (workflow:submit:<capability> for each capability); "
                "with ?wait=SECONDS also wait for its result (state, output) in the answer.",
                "parameters": [_WAIT],
                "requestBody": _body(StartRequest),
                "responses": {
                    "201": _json("Started: its id and links"),
                    **_errors("400", "403", "404", "413", "422", "503"),
                },
            },
            "get": {
                "summary": "List workflows, newest first.",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "description": "Comma-separated states.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "name",
                        "in": "query",
                        "description": "A glob on the name.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "description": "Seconds ago, or an ISO 8601 time.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {"200": _json("{workflows: [...]}"), **_errors("422")},
            },
        },
        "/workflows/{workflow_id}": {
            "get": {
                "summary": "Its state, its tasks and its model usage (llm_usage).",
                "parameters": workflow,
                "responses": {"200": _json("state"), **_errors("404")},
            }
        },
        "/workflows/{workflow_id}/result": {
            "get": {
                "summary": "Its output once ended (202 while running).",
                "parameters": [
                    *workflow,
                    _WAIT,
                ],
                "responses": {
                    "200": _json("{state, output} or {state, reason}"),
                    "202": _json("{state}: not ended yet"),
                    **_errors("404", "422"),
                },
            }
        },
        "/workflows/{workflow_id}/events": {
            "get": {
                "summary": "Its stored events, in stream order.",
                "parameters": [*workflow, _AFTER],
                "responses": {"200": _json("{events: [...]}"), **_errors("404")},
            }
        },
        "/workflows/{workflow_id}/events/sse": _sse(
            "Its events, from the start then live (SSE).", []
        ),
        "/workflows/{workflow_id}/stream/sse": _sse(
            "What its tasks stream, from the start then live (SSE).", _STREAM_FILTER
        ),
    }
    for action, model, summary in _INTERVENTIONS:
        paths[f"/workflows/{{workflow_id}}/{action}"] = {
            "post": {
                "summary": summary,
                "parameters": workflow,
                "requestBody": _body(model),
                "responses": {
                    "200": _json("Applied"),
                    **_errors("400", "403", "404", "409", "413", "422", "504"),
                },
            }
        }
    paths["/workflows/{workflow_id}/signals/{name}"] = _signal_path()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AgenticFlow gateway",
            "version": __version__,
            "description": "REST, Server-Sent Events and WebSocket access to an AgenticFlow "
            "cluster. WebSockets (not described by OpenAPI): /workflows/{id}/events/ws and "
            "/workflows/{id}/stream/ws send the SSE routes' frames as JSON text messages "
            '{"type", "id", "data"}.',
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


__all__ = ["openapi_document"]
