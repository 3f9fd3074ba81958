"""The gateway's pure parts: tokens, feed positions, SSE framing, JSON
escaping, request models and the OpenAPI document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from starlette.routing import Route, WebSocketRoute

from agenticflow.gateway import GatewaySettings
from agenticflow.gateway.auth import Access, Tokens, add_token, digest
from agenticflow.gateway.feeds import Frame, Position
from agenticflow.gateway.live import sse
from agenticflow.gateway.models import StartRequest
from agenticflow.gateway.openapi import openapi_document
from agenticflow.gateway.responses import ApiError, dumps
from agenticflow.gateway.service import Gateway
from agenticflow.shared.errors import ConfigError
from agenticflow.shared.graph.workflow import parse_workflow
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.rbac import Policy

TOKEN = "a-long-enough-token-0123"


def test_tokens_map_to_principals_from_the_environment_and_a_file(tmp_path: Path) -> None:
    file = tmp_path / "tokens.toml"
    add_token(file, "ci.bot", "file-token-0123456789")
    tokens = Tokens.load(file, f"alice={TOKEN}, bob={digest('bob-token-0123456789')}")
    assert tokens.principal(TOKEN) == "alice"
    assert tokens.principal("bob-token-0123456789") == "bob"
    assert tokens.principal("file-token-0123456789") == "ci.bot"
    assert tokens.principal(TOKEN + "x") is None
    assert tokens.principal("") is None
    assert tokens.principals == ["alice", "bob", "ci.bot"]
    assert all(TOKEN.encode() not in stored for stored, _ in tokens.entries)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("", "the gateway has no tokens"),
        ("alice", "needs principal=token"),
        ("alice=short", "shorter than 16 characters"),
        (f"bob smith={TOKEN}", "must be 1-128 letters"),
        (f"alice={TOKEN},bob={TOKEN}", "same token is given to principals 'alice' and 'bob'"),
        (f"coordinator={TOKEN}", "reserved for the cluster's own processes"),
    ],
)
def test_bad_token_settings_are_refused_without_showing_a_token(env: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Tokens.load(None, env)
    assert "short" not in str(refused.value).replace("shorter", "")


def test_a_token_file_must_hold_digests(tmp_path: Path) -> None:
    file = tmp_path / "tokens.toml"
    file.write_text('[tokens]\nalice = "in-clear-token-0123456789"\n')
    with pytest.raises(ConfigError, match="never the token itself") as refused:
        Tokens.load(file, None)
    assert "in-clear" not in str(refused.value)
    file.write_text("tokens = 3\n")
    with pytest.raises(ConfigError, match=r"a \[tokens\] table"):
        Tokens.load(file, None)
    with pytest.raises(ConfigError, match="cannot read"):
        Tokens.load(tmp_path / "missing.toml", None)


def test_access_asks_the_policy_as_the_coordinator_does() -> None:
    policy = Policy.from_dict(
        {
            "roles": {"r": {"permissions": ["workflow:submit:echo", "workflow:cancel"]}},
            "principals": {"bob": ["r"]},
        }
    )
    access = Access(policy)
    echo = parse_workflow({"name": "w", "tasks": [{"id": "a", "capability": "echo"}]})
    add = parse_workflow({"name": "w", "tasks": [{"id": "a", "capability": "add"}]})
    assert access.submit_denial("bob", echo) is None
    assert "bob may not submit capability 'add'" in (access.submit_denial("bob", add) or "")
    assert access.intervention_denial("bob", "cancel") is None
    assert access.intervention_denial("bob", "terminate") == (
        "bob lacks permission workflow:terminate or workflow:abort"
    )
    assert Access(None).submit_denial("anyone", add) is None


def test_positions_order_events_then_chunks_within_one() -> None:
    assert not Position(None).passed(1)
    after = Position("12.3")
    assert after.passed(11, 40)
    assert after.passed(12, 3)
    assert not after.passed(12, 4)
    assert not after.passed(13)
    assert Position("12").passed(12)
    assert not Position("12").passed(12, 0)
    for bad in ("x", "1.x", "-1", "1." + "9" * 50):
        with pytest.raises(ValueError, match="not a feed position"):
            Position(bad)


def test_sse_frames_are_one_json_line_and_markup_is_escaped() -> None:
    text = sse(Frame("chunk", {"data": "a\nb\r<script>&"}, "3.1")).decode()
    assert text.startswith("id: 3.1\nevent: chunk\ndata: ")
    assert text.endswith("\n\n")
    data_line = text.split("\n")[2]
    assert "<" not in data_line
    assert "&" not in data_line
    assert json.loads(data_line.removeprefix("data: ")) == {"data": "a\nb\r<script>&"}
    assert json.loads(dumps({"b": b"\x00\xff"})) == {"b": "AP8="}


def test_a_start_request_names_a_definition_or_a_template_not_a_path() -> None:
    StartRequest.model_validate({"template": "content-pipeline", "input": {"topic": "x"}})
    for bad in (
        {},
        {"template": "../../etc/passwd"},
        {"template": "a", "workflow": {"tasks": []}},
        {"workflow": {"tasks": []}, "extra": 1},
    ):
        with pytest.raises(ValidationError):
            StartRequest.model_validate(bad)


def test_the_openapi_document_describes_every_http_route() -> None:
    gateway = Gateway(
        settings=Settings(),
        config=GatewaySettings(tokens=f"alice={TOKEN}"),
        tokens=Tokens.load(None, f"alice={TOKEN}"),
        access=Access(None),
    )
    document = openapi_document()
    assert document["openapi"].startswith("3.1")
    http_routes = {
        (route.path, method.lower())
        for route in gateway.app().routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert http_routes <= described, http_routes - described
    # Review #13: the WebSocket routes (as GET), Last-Event-ID, the signal name,
    # the workflow id, and the statuses the routes answer.
    websockets = {
        (route.path, "get") for route in gateway.app().routes if isinstance(route, WebSocketRoute)
    }
    assert len(websockets) == 2
    assert websockets <= described, websockets - described
    paths = document["paths"]
    sse = paths["/workflows/{workflow_id}/events/sse"]["get"]
    assert {"Last-Event-ID", "after"} <= {p["name"] for p in sse["parameters"]}
    assert {"429", "503", "500"} <= set(sse["responses"])
    signal = paths["/workflows/{workflow_id}/signals/{name}"]["post"]
    name = next(p for p in signal["parameters"] if p["name"] == "name")
    assert name["schema"]["maxLength"] == 64
    assert {"409", "503", "504"} <= set(signal["responses"])
    assert {"408", "429", "504"} <= set(paths["/workflows"]["post"]["responses"])
    assert "429" in paths["/workflows/{workflow_id}/result"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert schemas["StartRequest"]["properties"]["id"]["anyOf"][0]["pattern"]
    start = document["paths"]["/workflows"]["post"]["requestBody"]["content"]
    ref = start["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "template" in document["components"]["schemas"][ref]["properties"]
    json.dumps(document)


async def test_a_body_nested_past_the_interpreters_limit_is_a_400() -> None:
    from starlette.requests import Request

    gateway = Gateway(
        settings=Settings(),
        config=GatewaySettings(tokens=f"alice={TOKEN}", max_body_bytes=1 << 20),
        tokens=Tokens.load(None, f"alice={TOKEN}"),
        access=Access(None),
    )
    body = b"[" * 100_000 + b"]" * 100_000
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(ApiError) as refused:
        await gateway.body(request, StartRequest)
    assert (refused.value.status, refused.value.code) == (400, "malformed_json")
