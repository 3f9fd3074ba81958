"""The HTTP gateway against a real cluster: REST, SSE and WebSocket with real
clients (httpx, websockets), the gateway served by uvicorn on a free port.

Every route; auth failures and RBAC refusals (at the gateway and, with its
own check off, at the coordinator); bad input; live and late readers; a slow
client (disconnected with an overflow notice, then resuming without a loss)
and a disconnecting one (its subscription released).
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.gateway import GatewayServer, GatewaySettings
from agenticflow.gateway.app import SIGNAL_NAME
from agenticflow.gateway.auth import Access, Tokens
from agenticflow.gateway.service import Gateway
from agenticflow.shared.graph.workflow import parse_workflow
from agenticflow.shared.security.rbac import Policy
from tests.conftest import unique_prefix
from tests.integration.gateway_support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    TOKENS,
    Env,
    auth,
    read_sse,
    sse_frames,
    start_env,
    wait_for,
    workflow,
)

pytestmark = pytest.mark.timeout(120)

ECHO = {"id": "e", "capability": "echo", "params": {"say": "hi"}}


@pytest.fixture(scope="module")
async def env(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    started = await start_env(
        nats_server.url, unique_prefix("gw"), tmp_path_factory.mktemp("gw"), max_body_bytes=4096
    )
    async with started.stack:
        yield started


async def start(http: httpx.AsyncClient, *tasks: dict[str, Any], **more: Any) -> str:
    response = await http.post("/workflows", json={"workflow": workflow(*tasks), **more})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# REST ---------------------------------------------------------------------------
async def test_start_result_describe_list_and_events(env: Env) -> None:
    async with env.http() as http:
        response = await http.post(
            "/workflows", json={"workflow": workflow(ECHO, name="gw-rest"), "input": {"n": 1}}
        )
        assert response.status_code == 201
        created = response.json()
        workflow_id = created["id"]
        assert response.headers["location"] == f"/workflows/{workflow_id}"
        assert created["links"]["result"] == f"/workflows/{workflow_id}/result"

        result = await http.get(f"/workflows/{workflow_id}/result", params={"wait": 30})
        assert result.status_code == 200
        body = result.json()
        assert body["state"] == "completed"
        assert body["output"]["params"] == {"say": "hi"}

        described = (await http.get(f"/workflows/{workflow_id}")).json()
        assert described["state"] == "completed"
        assert described["tasks"]["e"]["state"] == "completed"
        assert described["llm_usage"]["calls"] == 0  # echo calls no model

        listed = await http.get("/workflows", params={"name": "gw-rest", "state": "completed"})
        assert [w["id"] for w in listed.json()["workflows"]] == [workflow_id]

        events = (await http.get(f"/workflows/{workflow_id}/events")).json()["events"]
        types = [e["type"] for e in events]
        assert types[0] == "workflow.submitted"
        assert types[-1] == "workflow.completed"
        after = events[0]["seq"]
        later = (await http.get(f"/workflows/{workflow_id}/events", params={"after": after})).json()
        assert [e["seq"] for e in later["events"]] == [e["seq"] for e in events[1:]]

        again = await http.post("/workflows", json={"workflow": workflow(ECHO), "id": workflow_id})
        assert again.json()["id"] == workflow_id  # idempotent by id

        assert (await http.get("/whoami")).json() == {"principal": "alice"}

        run = await http.post(
            "/workflows", params={"wait": 30}, json={"workflow": workflow(ECHO, name="gw-run")}
        )
        assert run.status_code == 201
        assert run.json()["state"] == "completed"
        assert run.json()["output"]["params"] == {"say": "hi"}
        assert run.json()["links"]["self"] == f"/workflows/{run.json()['id']}"


async def test_result_while_running_is_202_and_failure_is_reported(env: Env) -> None:
    async with env.http() as http:
        running = await start(http, {"id": "l", "capability": "listen", "params": {"timeout": 60}})
        pending = await http.get(f"/workflows/{running}/result")
        assert pending.status_code == 202
        assert pending.json()["state"] in ("submitted", "running")
        waited = await http.get(f"/workflows/{running}/result", params={"wait": 0.2})
        assert waited.status_code == 202
        await http.post(f"/workflows/{running}/terminate", json={"reason": "done"})

        failed = await start(http, {"id": "f", "capability": "fatal"})
        result = (await http.get(f"/workflows/{failed}/result", params={"wait": 30})).json()
        assert result["state"] == "failed"
        assert result["failed_task"] == "f"
        assert result["reason"]


async def test_a_template_starts_by_name_and_a_file_path_never_does(env: Env) -> None:
    async with env.http() as http:
        unknown = await http.post("/workflows", json={"template": "no-such-template"})
        assert unknown.status_code == 404
        assert "no template 'no-such-template'" in unknown.json()["error"]["message"]
        path = await http.post("/workflows", json={"template": "/etc/passwd.yaml"})
        assert path.status_code == 422  # a name, not a path: nothing on the host is read
        both = await http.post("/workflows", json={"template": "x", "workflow": workflow(ECHO)})
        assert both.status_code == 422


async def test_interventions_steer_a_running_workflow(env: Env) -> None:
    async with env.http() as http:
        workflow_id = await start(
            http,
            {"id": "l", "capability": "listen", "params": {"timeout": 60}},
            {"id": "after", "capability": "echo", "depends_on": ["l"], "params": {"v": 1}},
        )
        await env.client.wait_for(
            workflow_id, lambda s: s.tasks["l"].status.value == "running", timeout=30
        )
        paused = await http.post(f"/workflows/{workflow_id}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["action"] == "pause"
        assert paused.json()["by"] == "alice"
        refused = await http.post(f"/workflows/{workflow_id}/pause")
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "already_paused"
        modified = await http.post(
            f"/workflows/{workflow_id}/modify", json={"changes": {"params": {"after": {"v": 2}}}}
        )
        assert modified.status_code == 200, modified.text
        assert (await http.post(f"/workflows/{workflow_id}/resume", json={})).status_code == 200
        feedback = await http.post(f"/workflows/{workflow_id}/feedback", json={"text": "go on"})
        assert feedback.status_code == 200
        result = (await http.get(f"/workflows/{workflow_id}/result", params={"wait": 30})).json()
        assert result["output"]["params"] == {"v": 2}


async def test_approve_reject_cancel_and_terminate(env: Env) -> None:
    async with env.http() as http:
        approved = await start(http, {"id": "a", "capability": "ask"})
        await env.client.waiting_for_approval(approved, timeout=30)
        response = await http.post(
            f"/workflows/{approved}/approve", json={"task": "a", "comment": "fine"}
        )
        assert response.status_code == 200, response.text
        output = (await http.get(f"/workflows/{approved}/result", params={"wait": 30})).json()
        assert output["output"]["decisions"][0]["approved"] is True

        rejected = await start(http, {"id": "a", "capability": "ask"})
        await env.client.waiting_for_approval(rejected, timeout=30)
        response = await http.post(f"/workflows/{rejected}/reject", json={"task": "a"})
        assert response.status_code == 200
        output = (await http.get(f"/workflows/{rejected}/result", params={"wait": 30})).json()
        assert output["output"]["decisions"][0]["approved"] is False

        cancelled = await start(http, {"id": "c", "capability": "cancellable"})
        await env.client.wait_for(
            cancelled, lambda s: s.tasks["c"].status.value == "running", timeout=30
        )
        assert (await http.post(f"/workflows/{cancelled}/cancel", json={"reason": "r"})).is_success
        output = (await http.get(f"/workflows/{cancelled}/result", params={"wait": 30})).json()
        assert output["state"] == "cancelled"

        ended = await start(http, {"id": "l", "capability": "listen", "params": {"timeout": 60}})
        assert (await http.post(f"/workflows/{ended}/terminate")).is_success
        output = (await http.get(f"/workflows/{ended}/result", params={"wait": 30})).json()
        assert output["state"] == "aborted"
        late = await http.post(f"/workflows/{ended}/cancel")
        assert late.status_code == 409


async def test_resume_re_runs_a_failed_or_finished_workflow(env: Env) -> None:
    async with env.http() as http:
        failed = await start(http, {"id": "f", "capability": "fatal"})
        assert (await http.get(f"/workflows/{failed}/result", params={"wait": 30})).json()[
            "state"
        ] == "failed"
        again = await http.post(f"/workflows/{failed}/resume")
        assert again.status_code == 200, again.text
        assert again.json()["by"] == "alice"
        state = await env.client.wait_for_resume(failed, 1, timeout=30)
        assert state.status.value == "failed"  # fatal fails again: it did run again

        done = await start(http, ECHO)
        await http.get(f"/workflows/{done}/result", params={"wait": 30})
        refused = await http.post(f"/workflows/{done}/resume", json={})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "not_resumable"
        unknown = await http.post(f"/workflows/{done}/resume", json={"from_task": "nope"})
        assert unknown.status_code == 404
        rerun = await http.post(f"/workflows/{done}/resume", json={"from_task": "e"})
        assert rerun.status_code == 200, rerun.text
        state = await env.client.wait_for_resume(done, 1, timeout=30)
        assert state.status.value == "completed"
        assert state.tasks["e"].attempts >= 2


async def test_a_signal_completes_a_wait_node(env: Env) -> None:
    async with env.http() as http:
        workflow_id = await start(
            http,
            {"id": "w", "wait": {"signal": "go"}},
            {"id": "e", "capability": "echo", "depends_on": ["w"]},
        )
        sent = await http.post(f"/workflows/{workflow_id}/signals/go", json={"data": {"x": 1}})
        assert sent.status_code == 200, sent.text
        result = (await http.get(f"/workflows/{workflow_id}/result", params={"wait": 30})).json()
        assert result["output"]["inputs"] == {"w": {"x": 1}}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_gateway_serves_the_other_backends(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    prefix = unique_prefix("gwb")
    if backend == "memory":
        url = f"memory://{prefix}"
    else:
        url = request.getfixturevalue("redis_server").url
    env = await start_env(url, prefix, tmp_path, backend=backend)
    try:
        async with env.stack, env.http() as http:
            narrate = {"id": "n", "capability": "narrate", "params": {"words": ["a", "b"]}}
            run = await http.post(
                "/workflows", params={"wait": 30}, json={"workflow": workflow(narrate)}
            )
            assert run.json()["state"] == "completed", run.text
            workflow_id = run.json()["id"]
            path = f"/workflows/{workflow_id}"
            tokens = await read_sse(http, f"{path}/stream/sse", params={"kinds": "token"})
            assert [f["data"]["data"] for f in tokens[:-1]] == ["a", "b"]
            events = await read_sse(http, f"{path}/events/sse")
            assert events[-2]["data"]["type"] == "workflow.completed"
            assert (await http.get("/workflows/nope")).status_code == 404
            assert (await http.get(path)).json()["state"] == "completed"
    finally:
        if backend == "memory":
            from agenticflow.shared.bus.memory_backend import MemoryServer

            MemoryServer.discard(url)


# Auth and RBAC -----------------------------------------------------------------
async def test_no_token_or_an_unknown_one_is_401_open_routes_need_none(env: Env) -> None:
    async with env.http(token=None) as http:
        for method, path in [("GET", "/workflows"), ("POST", "/workflows"), ("GET", "/whoami")]:
            response = await http.request(method, path)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.get("/workflows", headers=auth("not-" + ALICE))
        assert wrong.status_code == 401
        basic = await http.get("/workflows", headers={"Authorization": f"Basic {ALICE}"})
        assert basic.status_code == 401
        twice = await http.get(  # review #11: the first one won
            "/whoami", headers=[("Authorization", f"Bearer {ALICE}"), ("Authorization", "x")]
        )
        assert twice.status_code == 401
        assert twice.json()["error"]["message"] == "send one Authorization header"
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/openapi.json")).status_code == 200


async def test_the_policy_decides_who_starts_and_steers_what(env: Env) -> None:
    async with env.http(BOB) as bob, env.http(ALICE) as alice, env.http(CAROL) as carol:
        refused = await bob.post(
            "/workflows", json={"workflow": workflow({"id": "a", "capability": "add"})}
        )
        assert refused.status_code == 403
        assert "bob may not submit capability 'add'" in refused.json()["error"]["message"]
        mine = await start(bob, ECHO)
        assert (await bob.get(f"/workflows/{mine}/result", params={"wait": 30})).json()[
            "state"
        ] == "completed"
        nothing = await carol.post("/workflows", json={"workflow": workflow(ECHO)})
        assert nothing.status_code == 403
        assert (await carol.get(f"/workflows/{mine}")).status_code == 200  # reads need a token only

        running = await start(alice, {"id": "l", "capability": "listen", "params": {"timeout": 60}})
        stop = await bob.post(f"/workflows/{running}/terminate", json={"reason": "mine now"})
        assert stop.status_code == 403
        assert (
            stop.json()["error"]["message"]
            == "bob lacks permission workflow:terminate or workflow:abort"
        )
        async with env.http(DAVE) as dave:  # review #2: modify ran what it may not submit
            adding = await dave.post(
                f"/workflows/{running}/modify",
                json={"changes": {"add": [{"id": "a2", "capability": "add"}]}},
            )
            assert adding.status_code == 403
            assert "dave may not submit capability 'add'" in adding.json()["error"]["message"]
            echo = await dave.post(
                f"/workflows/{running}/modify",
                json={"changes": {"add": [{"id": "e2", "capability": "echo"}]}},
            )
            assert echo.status_code == 200, echo.text
        assert (await alice.post(f"/workflows/{running}/terminate")).status_code == 200


async def test_the_coordinator_checks_the_principal_the_gateway_names(env: Env) -> None:
    """With the gateway's own check off, the coordinator still refuses bob:
    requests carry the token's principal, checked by the cluster's RBAC."""
    policy = Policy.load(Path(str(env.settings.policy_file)))
    assert policy.context("bob").roles  # the same policy file
    gateway = Gateway(
        settings=env.settings,
        config=GatewaySettings(port=0, tokens=TOKENS),
        tokens=Tokens.load(None, TOKENS),
        access=Access(None),
    )
    server = GatewayServer(env.settings, gateway.config, gateway=gateway, grace_s=1)
    async with server:  # noqa: SIM117 - the client needs the server's URL
        async with httpx.AsyncClient(base_url=server.url, headers=auth(BOB), timeout=60) as bob:
            adds = await start(bob, {"id": "a", "capability": "add"})
            result = (await bob.get(f"/workflows/{adds}/result", params={"wait": 30})).json()
            assert result["state"] == "rejected"
            assert "bob may not submit capability 'add'" in result["reason"]
            async with env.http(ALICE) as alice:
                running = await start(
                    alice, {"id": "l", "capability": "listen", "params": {"timeout": 60}}
                )
                stop = await bob.post(f"/workflows/{running}/terminate")
                assert stop.status_code == 403
                assert stop.json()["error"]["code"] == "forbidden"
                async with httpx.AsyncClient(
                    base_url=server.url, headers=auth(DAVE), timeout=60
                ) as dave:
                    adding = await dave.post(
                        f"/workflows/{running}/modify",
                        json={"changes": {"add": [{"id": "a2", "capability": "add"}]}},
                    )
                assert adding.status_code == 403, adding.text  # the coordinator's refusal
                assert "dave may not submit capability 'add'" in adding.json()["error"]["message"]
                await alice.post(f"/workflows/{running}/terminate")


async def test_cross_origin_pages_only_from_the_configured_origins(env: Env) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with env.http(token=None) as http:  # no CORS configured: no page may call it
        refused = await http.options("/workflows", headers={"Origin": "https://app.example"})
        assert "access-control-allow-origin" not in refused.headers
    config = env.gateway.config.model_copy(update={"cors_origins": ["https://app.example"]})
    async with GatewayServer(env.settings, config, grace_s=1) as server:  # noqa: SIM117 - the URL
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            allowed = await http.options(
                "/workflows", headers={"Origin": "https://app.example", **preflight}
            )
            assert allowed.status_code == 200
            assert allowed.headers["access-control-allow-origin"] == "https://app.example"
            assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
            other = await http.options(
                "/workflows", headers={"Origin": "https://evil.example", **preflight}
            )
            assert "access-control-allow-origin" not in other.headers
            listed = await http.get(
                "/workflows", headers={"Origin": "https://app.example", **auth(ALICE)}
            )
            assert listed.status_code == 200
            assert listed.headers["access-control-allow-origin"] == "https://app.example"


# Bad input -------------------------------------------------------------------------
async def test_bad_input_gets_a_clear_json_error(env: Env) -> None:
    async with env.http() as http:
        cases = [
            (await http.post("/workflows", content=b"{not json"), 400, "malformed_json"),
            (await http.post("/workflows", content=b"\xff\xfe"), 400, "malformed_json"),
            (
                await http.post("/workflows", json={"workflow": workflow(ECHO), "typo": 1}),
                422,
                "invalid_request",
            ),
            (
                await http.post(
                    "/workflows",
                    json={
                        "workflow": {
                            "name": "x",
                            "tasks": [
                                {"id": "a", "capability": "echo", "depends_on": ["b"]},
                                {"id": "b", "capability": "echo", "depends_on": ["a"]},
                            ],
                        }
                    },
                ),
                422,
                "invalid_workflow",
            ),
            (
                await http.post("/workflows", json={"workflow": workflow(ECHO), "id": "bad id!"}),
                422,
                "invalid_request",  # the published pattern, checked first
            ),
            (await http.post("/workflows", content=b"x" * 5000), 413, "too_large"),
            (await http.get("/workflows/nope"), 404, "not_found"),
            (await http.get("/workflows/nope/result"), 404, "not_found"),
            (await http.get("/workflows/nope/events"), 404, "not_found"),
            (await http.get("/workflows/nope/events/sse"), 404, "not_found"),
            (await http.get("/workflows/nope/stream/sse"), 404, "not_found"),
            (await http.post("/workflows/nope/cancel"), 404, "not_found"),
            (await http.post("/workflows/no%20pe/approve", json={"task": "t"}), 404, "not_found"),
            (await http.get("/no/such/route"), 404, "not_found"),
            (await http.delete("/workflows"), 405, "method_not_allowed"),
            (await http.get("/workflows", params={"state": "sleeping"}), 422, "invalid_request"),
            (await http.get("/workflows", params={"limit": "0"}), 422, "invalid_request"),
            (await http.get("/workflows", params={"since": "yesterday"}), 422, "invalid_request"),
            # Review #9: these were 500s.
            (await http.get("/workflows", params={"since": "1e20"}), 422, "invalid_request"),
        ]
        body = json.dumps({"workflow": workflow(ECHO)})[:-1]
        for number in ["NaN", "Infinity", "-Infinity", "1e999", str(1 << 64), str(-(1 << 63) - 1)]:
            # Review #9 and #10: not JSON, or more than the bus carries.
            refused = await http.post("/workflows", content=f'{body},"input":{{"n":{number}}}}}')
            cases.append((refused, 422, "invalid_request"))
        largest = await http.post("/workflows", content=f'{body},"input":{{"n":{(1 << 64) - 1}}}}}')
        assert largest.status_code == 201, largest.text
        for response, status, code in cases:
            assert response.status_code == status, (response.request.url, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["code"] == code, response.text

        deep = await http.post("/workflows", content=b"[" * 4000 + b"]" * 4000)
        assert deep.status_code == 413  # over this gateway's 4 KiB first
        nested: Any = {"x": 1}
        for _ in range(60):
            nested = {"x": nested}
        too_deep = await http.post("/workflows", json={"workflow": workflow(ECHO), "input": nested})
        assert too_deep.status_code == 422
        assert "deeper than" in too_deep.json()["error"]["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            for _ in range(10):
                yield b" " * 1000

        streamed = await http.post("/workflows", content=chunked())
        assert streamed.status_code == 413
        running = await start(http, {"id": "l", "capability": "listen", "params": {"timeout": 60}})
        unknown_kind = await http.get(f"/workflows/{running}/stream/sse", params={"kinds": "video"})
        assert unknown_kind.status_code == 422
        bad_after = await http.get(f"/workflows/{running}/events/sse", params={"after": "x"})
        assert bad_after.status_code == 422
        no_task = await http.post(f"/workflows/{running}/approve", json={})
        assert no_task.status_code == 422
        long_signal = await http.post(f"/workflows/{running}/signals/{'s' * 65}")
        assert long_signal.status_code == 422  # review #9: a 500
        assert long_signal.json()["error"]["message"] == SIGNAL_NAME
        await http.post(f"/workflows/{running}/terminate")


async def test_a_stored_nan_is_answered_as_null_in_strict_json(env: Env) -> None:
    """Review #10: a NaN in a workflow's output (the Python client may start
    one with it) came back as a bare NaN, which is not JSON."""
    definition = parse_workflow(
        workflow({"id": "e", "capability": "echo", "params": {"x": math.nan, "y": [math.inf]}}),
        source="test",
    )
    handle = await env.gateway.clients["alice"].start(definition)  # allowed to submit
    await handle.result(timeout=30)
    async with env.http() as http:
        answer = await http.get(f"/workflows/{handle.id}/result")

    def strict(text: str) -> float:
        raise AssertionError(f"not JSON: {text}")

    output = json.loads(answer.text, parse_constant=strict)["output"]
    assert output["params"] == {"x": None, "y": [None]}


async def test_user_strings_come_back_as_json_data_never_html(env: Env) -> None:
    script = "<script>alert(1)</script>"
    async with env.http() as http:
        response = await http.post(
            "/workflows",
            json={"workflow": workflow(ECHO | {"params": {"say": script}}, name=script)},
        )
        workflow_id = response.json()["id"]
        result = await http.get(f"/workflows/{workflow_id}/result", params={"wait": 30})
        missing = await http.get("/workflows/<img src=x onerror=alert(1)>")
        for answer in (result, missing, await http.get(f"/workflows/{workflow_id}")):
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert "<script>" not in answer.text
            assert "<img" not in answer.text
        assert result.json()["output"]["params"]["say"] == script  # the data, intact
        assert "<img src=x onerror=alert(1)>" in missing.json()["error"]["message"]


# SSE ----------------------------------------------------------------------------------
async def test_sse_streams_live_then_a_late_reader_and_a_resumed_one_see_the_same(env: Env) -> None:
    async with env.http() as http:
        workflow_id = await start(
            http,
            {
                "id": "n",
                "capability": "narrate",
                "params": {"words": ["Hello", " world"], "wait": True},
            },
        )
        path = f"/workflows/{workflow_id}/stream/sse"
        live: list[dict[str, Any]] = []
        async with http.stream("GET", path, params={"kinds": "token"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            frames = sse_frames(response)
            first = await anext(frames)
            assert first["data"]["data"] == "Hello"  # read while the task waits
            live.append(first)
            sent = await http.post(f"/workflows/{workflow_id}/feedback", json={"text": "dear"})
            assert sent.status_code == 200
            live.extend([frame async for frame in frames])
        assert [f["data"]["data"] for f in live[:-1]] == ["Hello", "dear", " world"]
        assert live[-1]["event"] == "end"

        late = await read_sse(http, path, params={"kinds": "token"})
        assert [f["data"] for f in late] == [f["data"] for f in live]
        resumed = await read_sse(
            http, path, params={"kinds": "token"}, headers={"Last-Event-ID": live[0]["id"]}
        )
        assert [f["data"]["data"] for f in resumed[:-1]] == ["dear", " world"]

        events = await read_sse(http, f"/workflows/{workflow_id}/events/sse")
        assert events[0]["data"]["type"] == "workflow.submitted"
        assert events[-2]["data"]["type"] == "workflow.completed"
        assert events[-1]["event"] == "end"
        chunks = [f for f in await read_sse(http, path) if f["event"] == "chunk"]
        raw = next(f["data"] for f in chunks if f["data"]["kind"] == "artifact")
        assert raw == raw | {"data": "AHJhdw==", "encoding": "base64"}  # b"\x00raw"


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_a_disconnecting_client_releases_its_subscription(
    env: Env, nats_server: NatsServer, transport: str
) -> None:
    """Closed while the workflow is quiet (nothing to send): the gateway
    notices anyway, stops the reader and deletes its consumer."""
    async with env.http() as http:
        workflow_id = await start(
            http, {"id": "l", "capability": "listen", "params": {"timeout": 60}}
        )
        gateway = env.gateway
        # Earlier tests' feeds may still be closing: count from none.
        await wait_for(gateway, lambda: gateway.open_feeds == gateway.readers == 0)
        path = f"/workflows/{workflow_id}/events/{transport}"
        if transport == "sse":
            async with http.stream("GET", path) as response:
                frames = sse_frames(response)  # held: collected, it would close the stream
                first = await anext(frames)
                assert first["data"]["type"] == "workflow.submitted"
                assert gateway.open_feeds == gateway.readers == 1
                assert await _tail_consumers(env, nats_server) == 1
        else:
            async with ws_connect(env.ws_url(path), additional_headers=auth(ALICE)) as ws:
                assert json.loads(await ws.recv())["data"]["type"] == "workflow.submitted"
                assert gateway.open_feeds == gateway.readers == 1
                assert await _tail_consumers(env, nats_server) == 1
        await wait_for(gateway, lambda: gateway.open_feeds == gateway.readers == 0)
        assert await _tail_consumers(env, nats_server) == 0  # its consumer is deleted
        await http.post(f"/workflows/{workflow_id}/terminate")


async def _tail_consumers(env: Env, nats_server: NatsServer) -> int:
    """Readers' consumers on the events stream (the gateway's tails)."""
    import nats

    connection = await nats.connect(nats_server.url)
    try:
        infos = await connection.jetstream().consumers_info(env.settings.names.events_stream)
    finally:
        await connection.close()
    return sum(1 for info in infos if (info.name or "").startswith("tail_"))


# WebSocket ---------------------------------------------------------------------------
async def test_websockets_carry_events_and_stream_and_refuse_without_a_token(env: Env) -> None:
    async with env.http() as http:
        workflow_id = await start(
            http,
            {"id": "n", "capability": "narrate", "params": {"words": ["a", "b"], "wait": True}},
        )
        url = env.ws_url(f"/workflows/{workflow_id}/stream/ws?kinds=token")
        async with ws_connect(url, additional_headers=auth(ALICE)) as ws:
            first = json.loads(await ws.recv())
            assert (first["type"], first["data"]["data"]) == ("chunk", "a")
            await http.post(f"/workflows/{workflow_id}/feedback", json={"text": "-"})
            rest = [json.loads(m) async for m in ws]
        assert [m["data"]["data"] for m in rest[:-1]] == ["-", "b"]
        assert rest[-1]["type"] == "end"

        events_url = env.ws_url(f"/workflows/{workflow_id}/events/ws?after={first['data']['seq']}")
        async with ws_connect(events_url, additional_headers=auth(CAROL)) as ws:
            events = [json.loads(m) async for m in ws]
        assert all(int(m["id"]) > first["data"]["seq"] for m in events[:-1])
        assert events[-2]["data"]["type"] == "workflow.completed"

    for headers, status in [({}, 401), (auth("wrong-token-0123456789"), 401)]:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with ws_connect(
                env.ws_url(f"/workflows/{workflow_id}/events/ws"), additional_headers=headers
            ):
                pass
        assert refused.value.response.status_code == status
        assert json.loads(refused.value.response.body)["error"]["code"] == "unauthenticated"
    with pytest.raises(websockets.InvalidStatus) as missing:
        async with ws_connect(
            env.ws_url("/workflows/nope/events/ws"), additional_headers=auth(ALICE)
        ):
            pass
    assert missing.value.response.status_code == 404


@pytest.mark.parametrize("transport", ["ws", "sse"])
async def test_a_slow_client_is_disconnected_with_a_notice_and_resumes_without_a_loss(
    nats_server: NatsServer, tmp_path: Path, transport: str
) -> None:
    """A client with a tiny receive buffer (and the server's send buffer tiny
    too) that stops reading after its request: the gateway holds at most its
    queue (4 frames), waits 0.2 s for room, then drops the client with an
    overflow notice and releases its subscription; the client reads what it
    was sent, reconnects after the last frame it got, and has every chunk
    exactly once, in order."""
    n = 2000
    env = await start_env(
        nats_server.url, unique_prefix("gws"), tmp_path, client_queue=4, client_block_s=0.2
    )
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # inherited by connections
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    listening.setblocking(False)
    async with (
        env.stack,
        GatewayServer(env.settings, env.gateway.config, sock=listening, grace_s=1) as server,
    ):
        gateway = server.gateway
        async with env.http() as http:
            workflow_id = await start(
                http, {"id": "f", "capability": "flood", "params": {"n": n, "size": 500}}
            )
        path = f"/workflows/{workflow_id}/stream/{transport}"
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
        host, port = server.url.removeprefix("http://").split(":")
        loop = asyncio.get_running_loop()
        slow.setblocking(False)
        await loop.sock_connect(slow, (host, int(port)))
        upgrade = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{upgrade if transport == 'ws' else ''}"
            f"Authorization: Bearer {ALICE}\r\n\r\n"
        )
        await loop.sock_sendall(slow, request.encode())
        await wait_for(gateway, lambda: gateway.overflows > 0, timeout=60)
        assert await _tail_consumers(env, nats_server) == 0  # its reader stopped at once

        data = b""
        parse = _ws_messages if transport == "ws" else _sse_messages
        with slow:
            while (messages := parse(data)) is None:
                part = await loop.sock_recv(slow, 1 << 16)
                assert part, "closed before the last frame"
                data += part
        notice = messages[-1]
        assert notice["type"] == "overflow"
        chunks = [m for m in messages if m["type"] == "chunk"]
        assert 0 < len(chunks) < n
        assert notice["data"]["resume_after"] == chunks[-1]["id"]
        await wait_for(gateway, lambda: gateway.open_feeds == 0)

        async with env.http() as http:
            after = {"after": notice["data"]["resume_after"]}
            frames = await read_sse(http, f"/workflows/{workflow_id}/stream/sse", params=after)
        rest = [{"type": f["event"], "id": f.get("id"), "data": f["data"]} for f in frames]
        assert rest[-1]["type"] == "end"
        got = [int(m["data"]["data"][:6]) for m in chunks + rest[:-1]]
        assert got == list(range(n))
        assert await env.client.handle(workflow_id).result(timeout=60) == n


def _ws_messages(data: bytes) -> list[dict[str, Any]] | None:
    """The JSON messages of a WebSocket answer once its close frame (1013) is in."""
    head = data.find(b"\r\n\r\n")
    if head < 0:
        return None
    assert data.startswith(b"HTTP/1.1 101")
    frames, i = [], head + 4
    while i + 2 <= len(data):
        opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if i + size > len(data):
                break
            length, i = int.from_bytes(data[i : i + size], "big"), i + size
        if i + length > len(data):
            break
        frames.append((opcode, data[i : i + length]))
        i += length
    if not frames or frames[-1][0] != 0x8:
        return None
    assert int.from_bytes(frames[-1][1][:2], "big") == 1013  # try again later
    return [json.loads(payload) for opcode, payload in frames if opcode == 0x1]


def _sse_messages(data: bytes) -> list[dict[str, Any]] | None:
    """The frames of a chunked SSE answer once its last chunk is in."""
    head = data.find(b"\r\n\r\n")
    if head < 0 or not data.endswith(b"\r\n0\r\n\r\n"):
        return None
    assert data.startswith(b"HTTP/1.1 200")
    body, i = b"", head + 4
    while (size := int(data[i : data.index(b"\r\n", i)], 16)) > 0:
        start = data.index(b"\r\n", i) + 2
        body, i = body + data[start : start + size], start + size + 2
    messages = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields:
            data_ = json.loads(fields["data"])
            messages.append({"type": fields["event"], "id": fields.get("id"), "data": data_})
    return messages
