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
    Fork,
    Login,
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
    "408": "The body took longer than AGENTICFLOW_GATEWAY_BODY_TIMEOUT_S to arrive",
    "409": "The coordinator refused the intervention",
    "413": "Body too large",
    "422": "Invalid input",
    "429": "Too many waits or feeds open (Retry-After)",
    "500": "The gateway failed (see its log)",
    "503": "The cluster cannot be reached, or the gateway is closing",
    "504": "No coordinator answered in time",
}
_BODY_ERRORS = ("400", "408", "413", "422")
"""What any route with a body may answer besides its own."""
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
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "description": "Resume after this frame id (what an SSE client sends back by itself).",
    "schema": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "maxLength": 40},
}
_SIGNAL_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The signal's name, as in the workflow's wait: {signal: NAME}.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "maxLength": 64},
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
    """Error answers: 401 and 500 everywhere, 503 wherever the cluster is used."""
    error = {"$ref": _REF.format(model="Error")}
    return {code: _json(_ERRORS[code], error) for code in sorted({"401", "500", *codes})}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "required": model not in (Empty, Resume),
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}},
    }


def _sse(summary: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [_WORKFLOW_ID, _AFTER, _LAST_EVENT_ID, *extra],
            "responses": {
                "200": {
                    "description": "text/event-stream: frames (id: resume position, event: "
                    "event|chunk, data: JSON), then one end, overflow or error frame",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors("404", "422", "429", "503"),
            },
        }
    }


def _ws(summary: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": "A WebSocket (GET with Upgrade: websocket; OpenAPI cannot describe "
            "its messages): the SSE route's frames, each a JSON text message "
            '{"type", "id", "data"}; the last is end, overflow (then close code 1013: '
            "resume with ?after=) or error. A refused handshake is answered with the status "
            "and JSON error below (or, where the server cannot, accepted and closed with "
            "code 1008).",
            "parameters": [_WORKFLOW_ID, _AFTER, *extra],
            "responses": {
                "101": {"description": "Switching Protocols: the WebSocket is open"},
                **_errors("404", "422", "429", "503"),
            },
        }
    }


def _signal_path() -> dict[str, Any]:
    return {
        "post": {
            "summary": "Send a signal to its wait: {signal: NAME} nodes (workflow:signal).",
            "parameters": [_WORKFLOW_ID, _SIGNAL_NAME],
            "requestBody": _body(Signal),
            "responses": {
                "200": _json("Applied"),
                **_errors(*_BODY_ERRORS, "403", "404", "409", "503", "504"),
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
        Fork,
        Login,
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
                "responses": {"200": _json("principal"), **_errors("503")},
            }
        },
        "/workflows": {
            "post": {
                "summary": "Start a workflow (workflow:submit:<capability> for each capability); "
                "with ?wait=SECONDS also wait for its result (state, output) in the answer.",
                "parameters": [_WAIT],
                "requestBody": _body(StartRequest),
                "responses": {
                    "201": _json("Started: its id and links (with ?wait=, its result too)"),
                    **_errors(*_BODY_ERRORS, "403", "404", "429", "503", "504"),
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
                        "name": "until",
                        "in": "query",
                        "description": "Created before: seconds ago, or an ISO 8601 time.",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "description": "Text in the id or the input's first 200 characters "
                        "(case-insensitive).",
                        "schema": {"type": "string", "maxLength": 200},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "description": "Matches to skip (paging).",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                ],
                "responses": {
                    "200": _json("{workflows: [...], total, offset, limit}"),
                    **_errors("422", "503"),
                },
            },
        },
        "/workflows/{workflow_id}": {
            "get": {
                "summary": "Its state, its tasks and its model usage (llm_usage).",
                "parameters": workflow,
                "responses": {"200": _json("state"), **_errors("404", "503")},
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
                    **_errors("404", "422", "429", "503"),
                },
            }
        },
        "/workflows/{workflow_id}/events": {
            "get": {
                "summary": "Its stored events, in stream order.",
                "parameters": [*workflow, _AFTER],
                "responses": {"200": _json("{events: [...]}"), **_errors("404", "422", "503")},
            }
        },
        "/workflows/{workflow_id}/events/sse": _sse(
            "Its events, from the start then live (SSE).", []
        ),
        "/workflows/{workflow_id}/stream/sse": _sse(
            "What its tasks stream, from the start then live (SSE).", _STREAM_FILTER
        ),
        "/workflows/{workflow_id}/events/ws": _ws(
            "Its events, from the start then live (WebSocket).", []
        ),
        "/workflows/{workflow_id}/stream/ws": _ws(
            "What its tasks stream, from the start then live (WebSocket).", _STREAM_FILTER
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
                    **_errors(*_BODY_ERRORS, "403", "404", "409", "503", "504"),
                },
            }
        }
    paths["/workflows/{workflow_id}/signals/{name}"] = _signal_path()
    paths.update(_view_paths(workflow))
    paths.update(_console_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AgenticFlow gateway",
            "version": __version__,
            "description": "REST, Server-Sent Events and WebSocket access to an AgenticFlow "
            "cluster. The WebSocket routes (/workflows/{id}/events/ws and "
            "/workflows/{id}/stream/ws) are listed as GET: they send the SSE routes' frames "
            'as JSON text messages {"type", "id", "data"}.',
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _view_paths(workflow: list[dict[str, Any]]) -> dict[str, Any]:
    """The read-only views the console draws (:mod:`agenticflow.gateway.views`)."""
    until = {
        "name": "until",
        "in": "query",
        "description": "As of this stream sequence (time travel, replay --until).",
        "schema": {"type": "integer", "minimum": 1},
    }
    other = {
        "name": "other",
        "in": "query",
        "required": True,
        "description": "The run to compare with.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    }
    return {
        "/workflows/{workflow_id}/graph": {
            "get": {
                "summary": "Its DAG: each task's dependencies, gate, wait, child and state, "
                "now or as of a stream sequence.",
                "parameters": [*workflow, until],
                "responses": {"200": _json("{nodes: [...], ...}"), **_errors("404", "422", "503")},
            }
        },
        "/workflows/{workflow_id}/timeline": {
            "get": {
                "summary": "Each task attempt from its start to its outcome, with its worker.",
                "parameters": workflow,
                "responses": {"200": _json("{spans: [...]}"), **_errors("404", "503")},
            }
        },
        "/workflows/{workflow_id}/diff": {
            "get": {
                "summary": "The first event where it and another run diverge (agenticflow diff).",
                "parameters": [*workflow, other],
                "responses": {
                    "200": _json("{same, why, first, second}"),
                    **_errors("404", "422", "503"),
                },
            }
        },
        "/workflows/{workflow_id}/fork": {
            "post": {
                "summary": "Start a new workflow reusing every result completed up to `at` "
                "(workflow:submit:<capability> for each capability).",
                "parameters": workflow,
                "requestBody": _body(Fork),
                "responses": {
                    "201": _json("{id, source, at, links}"),
                    **_errors(*_BODY_ERRORS, "403", "404", "503"),
                },
            }
        },
        "/cluster": {
            "get": {
                "summary": "The cluster as agenticflow top sees it, with the registry's workers "
                "and coordinators, partitions, breakers, rate limits and dead letters.",
                "responses": {"200": _json("{view, workers, ...}"), **_errors("503")},
            }
        },
        "/cluster/audit/verify": {
            "post": {
                "summary": "Verify the audit trail's hash chains (agenticflow audit verify).",
                "requestBody": _body(Empty),
                "responses": {
                    "200": _json("{ok, records, chains, problems}"),
                    **_errors(*_BODY_ERRORS, "503", "504"),
                },
            }
        },
    }


def _console_paths() -> dict[str, Any]:
    """The web console's page and login (a session cookie; no bearer token)."""
    page = {"200": {"description": "HTML", "content": {"text/html": {}}}}
    return {
        "/": {
            "get": {
                "summary": "Redirects to /console/.",
                "security": [],
                "responses": {"307": {"description": "To the console"}},
            }
        },
        "/console": {
            "get": {
                "summary": "Redirects to /console/.",
                "security": [],
                "responses": {"307": {"description": "To the console"}},
            }
        },
        "/console/": {
            "get": {"summary": "The web console's page.", "security": [], "responses": page}
        },
        "/console/api/login": {
            "post": {
                "summary": "Exchange a gateway token for a session cookie (HttpOnly, "
                "SameSite=Strict) and its CSRF token, which every later POST sends in "
                "X-CSRF-Token.",
                "security": [],
                "requestBody": _body(Login),
                "responses": {
                    "200": _json("{principal, csrf}"),
                    **_errors(*_BODY_ERRORS, "401", "403", "429"),
                    "415": _json("Not JSON"),
                },
            }
        },
        "/console/api/session": {
            "get": {
                "summary": "The session's principal and CSRF token.",
                "security": [],
                "responses": {"200": _json("{principal, csrf}"), **_errors("401")},
            }
        },
        "/console/api/logout": {
            "post": {
                "summary": "End the session (with its CSRF token).",
                "security": [],
                "responses": {"200": _json("{}"), **_errors("401", "403")},
            }
        },
    }


__all__ = ["openapi_document"]
