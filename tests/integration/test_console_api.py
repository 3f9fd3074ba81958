"""The web console's server side on a real cluster: the login that swaps a
gateway token for a session cookie, CSRF and origin checks on everything that
changes state, the page's security headers, and the views the page draws
(DAG now and as of an event, timeline, diff, fork, cluster, audit, the
workflow list's search and paging). The page itself is driven in a real
browser by tests/browser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from agenticflow.cluster.nats_server import NatsServer
from agenticflow.gateway.sessions import COOKIE, LOGIN_FAILURES
from tests.conftest import unique_prefix
from tests.integration.gateway_support import ALICE, CAROL, Env, start_env, workflow
from tests.integration.gateway_support import console_login as login

pytestmark = pytest.mark.timeout(120)

EVIL = "https://evil.test"
TWO = [
    {"id": "a", "capability": "echo", "params": {"say": "first"}},
    {"id": "b", "capability": "echo", "params": {"say": "second"}, "depends_on": ["a"]},
]


@pytest.fixture(scope="module")
async def env(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    started = await start_env(nats_server.url, unique_prefix("con"), tmp_path_factory.mktemp("con"))
    async with started.stack:
        yield started


async def run(env: Env, tasks: list[dict[str, Any]], **more: Any) -> str:
    async with env.http() as http:
        response = await http.post(
            "/workflows", params={"wait": 30}, json={"workflow": workflow(*tasks), **more}
        )
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "completed", response.text
        return str(response.json()["id"])


# Login --------------------------------------------------------------------------
async def test_a_token_is_exchanged_for_an_http_only_strict_session_cookie(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        refused = await http.post("/console/api/login", json={"token": "not-a-token-at-all"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        assert COOKIE not in refused.cookies
        assert (await http.get("/console/api/session")).status_code == 401

        response = await http.post("/console/api/login", json={"token": ALICE})
        assert response.status_code == 200
        assert response.json()["principal"] == "alice"
        cookie = response.headers["set-cookie"]
        assert f"{COOKIE}=" in cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower()
        assert ALICE not in cookie  # the token itself is never the cookie
        session = (await http.get("/console/api/session")).json()
        assert session == response.json()
        # The cookie names the principal on the gateway's own routes.
        assert (await http.get("/whoami")).json() == {"principal": "alice"}

        out = await http.post("/console/api/logout", headers={"X-CSRF-Token": session["csrf"]})
        assert out.status_code == 200
        assert (await http.get("/whoami")).status_code == 401


async def test_a_login_must_be_json_from_the_gateways_own_origin(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        form = await http.post("/console/api/login", data={"token": ALICE})
        assert form.status_code == 415
        foreign = await http.post(
            "/console/api/login", json={"token": ALICE}, headers={"Origin": EVIL}
        )
        assert foreign.status_code == 403
        assert COOKIE not in foreign.cookies
        own = await http.post(
            "/console/api/login", json={"token": ALICE}, headers={"Origin": env.url}
        )
        assert own.status_code == 200


async def test_failed_logins_are_limited_per_address(env: Env) -> None:
    env.gateway.sessions._failures.clear()
    async with httpx.AsyncClient(base_url=env.url) as http:
        for _ in range(LOGIN_FAILURES):
            assert (
                await http.post("/console/api/login", json={"token": "x" * 20})
            ).status_code == 401
        limited = await http.post("/console/api/login", json={"token": ALICE})
        assert limited.status_code == 429  # even the right token, until the window passes
        assert limited.headers["retry-after"] == "60"
    env.gateway.sessions._failures.clear()


# CSRF and origin ----------------------------------------------------------------
async def test_a_state_change_needs_the_csrf_token_and_the_same_origin(env: Env) -> None:
    async with env.http() as api:
        response = await api.post(
            "/workflows",
            json={
                "workflow": workflow({"id": "s", "capability": "slow", "params": {"seconds": 60}})
            },
        )
        workflow_id = response.json()["id"]
    async with login(env, ALICE) as (http, csrf):
        bare = await http.post(f"/workflows/{workflow_id}/pause", json={})
        assert bare.status_code == 403
        assert bare.json()["error"]["code"] == "csrf"
        wrong = await http.post(
            f"/workflows/{workflow_id}/pause", json={}, headers={"X-CSRF-Token": "0" * 64}
        )
        assert wrong.status_code == 403
        foreign = await http.post(
            f"/workflows/{workflow_id}/pause",
            json={},
            headers={"X-CSRF-Token": csrf, "Origin": EVIL},
        )
        assert foreign.status_code == 403
        state = (await http.get(f"/workflows/{workflow_id}")).json()
        assert state.get("paused") is not True  # nothing refused took effect
        ok = await http.post(
            f"/workflows/{workflow_id}/terminate",
            json={"reason": "test over"},
            headers={"X-CSRF-Token": csrf, "Origin": env.url},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["by"] == "alice"


async def test_a_websocket_with_the_cookie_needs_the_gateways_origin(env: Env) -> None:
    workflow_id = await run(env, TWO[:1])
    async with login(env, ALICE) as (http, _):
        cookie = f"{COOKIE}={http.cookies[COOKIE]}"
    url = "ws" + env.url.removeprefix("http") + f"/workflows/{workflow_id}/events/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(url, additional_headers={"Cookie": cookie}, origin=Origin(EVIL)):
            pass
    assert refused.value.response.status_code == 403
    async with ws_connect(url, additional_headers={"Cookie": cookie}, origin=Origin(env.url)) as ws:
        first = await asyncio.wait_for(ws.recv(), 30)
        assert "workflow.submitted" in str(first)


async def test_a_principal_is_refused_what_its_role_does_not_allow(env: Env) -> None:
    workflow_id = await run(env, TWO)
    async with login(env, CAROL) as (http, csrf):  # reads only
        assert (await http.get(f"/workflows/{workflow_id}/graph")).status_code == 200
        fork = await http.post(
            f"/workflows/{workflow_id}/fork", json={}, headers={"X-CSRF-Token": csrf}
        )
        assert fork.status_code == 403
        assert fork.json()["error"]["code"] == "forbidden"
        resume = await http.post(
            f"/workflows/{workflow_id}/resume",
            json={"from_task": "b"},
            headers={"X-CSRF-Token": csrf},
        )
        assert resume.status_code == 403


# The page -----------------------------------------------------------------------
async def test_the_page_and_its_assets_carry_a_strict_policy(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        assert (await http.get("/")).headers["location"] == "/console/"
        page = await http.get("/console/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text  # only <script src=...> from the gateway itself
        script = await http.get("/console/static/console.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert script.headers["content-security-policy"] == policy


# Views ----------------------------------------------------------------------------
async def test_the_graph_now_and_as_of_an_event(env: Env) -> None:
    workflow_id = await run(env, TWO)
    async with env.http() as http:
        graph = (await http.get(f"/workflows/{workflow_id}/graph")).json()
        nodes = {node["id"]: node for node in graph["nodes"]}
        assert graph["state"] == "completed"
        assert nodes["b"]["depends_on"] == ["a"]
        assert nodes["a"]["state"] == nodes["b"]["state"] == "completed"
        assert nodes["a"]["input"] == {"say": "first"}
        events = (await http.get(f"/workflows/{workflow_id}/events")).json()["events"]
        a_done = next(
            e["seq"] for e in events if e["type"] == "task.completed" and e["task_id"] == "a"
        )
        earlier = (
            await http.get(f"/workflows/{workflow_id}/graph", params={"until": a_done})
        ).json()
        assert earlier["until"] == a_done
        states = {node["id"]: node["state"] for node in earlier["nodes"]}
        assert states["a"] == "completed"
        assert states["b"] != "completed"
        assert earlier["state"] == "running"
        bad = await http.get(f"/workflows/{workflow_id}/graph", params={"until": "-1"})
        assert bad.status_code == 422
        missing = await http.get("/workflows/no-such-workflow/graph")
        assert missing.status_code == 404


async def test_timeline_diff_and_fork(env: Env) -> None:
    workflow_id = await run(env, TWO)
    async with env.http() as http:
        spans = (await http.get(f"/workflows/{workflow_id}/timeline")).json()["spans"]
        assert [s["task"] for s in spans] == ["a", "b"]
        assert all(s["outcome"] == "completed" and s["worker"] for s in spans)
        assert spans[0]["end_ns"] <= spans[1]["start_ns"]

        fork = await http.post(f"/workflows/{workflow_id}/fork", json={})
        assert fork.status_code == 201, fork.text
        forked = fork.json()["id"]
        result = (await http.get(f"/workflows/{forked}/result", params={"wait": 30})).json()
        assert result["state"] == "completed"
        other = await run(env, [{**TWO[0], "params": {"say": "different"}}])
        diff = (await http.get(f"/workflows/{workflow_id}/diff", params={"other": other})).json()
        assert diff["same"] is False
        assert diff["why"]
        bad = await http.get(f"/workflows/{workflow_id}/diff", params={"other": "../x"})
        assert bad.status_code == 422


async def test_the_list_searches_ids_and_inputs_and_pages(env: Env) -> None:
    marker = unique_prefix("needle")
    ids = [await run(env, TWO[:1], input={"topic": f"{marker}-{i}"}) for i in range(3)]
    async with env.http() as http:
        found = (await http.get("/workflows", params={"q": marker.upper()})).json()
        assert found["total"] == 3
        assert sorted(row["id"] for row in found["workflows"]) == sorted(ids)
        assert all(marker in row["input_preview"] for row in found["workflows"])
        page = (await http.get("/workflows", params={"q": marker, "limit": 2, "offset": 2})).json()
        assert page["total"] == 3
        assert len(page["workflows"]) == 1
        by_id = (await http.get("/workflows", params={"q": ids[0][-8:]})).json()
        assert ids[0] in [row["id"] for row in by_id["workflows"]]
        none = (await http.get("/workflows", params={"q": marker, "until": 3600})).json()
        assert none["total"] == 0  # created within the hour: none before an hour ago
        assert (await http.get("/workflows", params={"offset": "-1"})).status_code == 422


async def test_the_cluster_view_and_the_audit_verdict(env: Env) -> None:
    await run(env, TWO[:1])
    async with login(env, ALICE) as (http, csrf):
        cluster = (await http.get("/cluster")).json()
        assert any(w.get("worker") == "gw-worker" for w in cluster["workers"])
        assert any(q["queue"] == "echo" for q in cluster["view"]["queues"])
        assert cluster["partitions"]
        assert cluster["partitions"][0]["owner"]
        assert isinstance(cluster["dead_letters"], list)
        audit = await http.post("/cluster/audit/verify", json={}, headers={"X-CSRF-Token": csrf})
        assert audit.status_code == 200, audit.text
        assert audit.json()["ok"] is True
