"""Attacks on the web console's server side (the gateway's session logins,
CSRF and origin checks, the page's headers, the static mount, the views), on
a real cluster behind a real gateway served by uvicorn.

Each test states what the console promises (agenticflow/gateway/sessions.py,
agenticflow/console/app.py, docs/guides/console.md) and attacks it the way a
hostile page, a hostile token holder or a hostile network client would: with
raw HTTP where a client library would normalise the attack away.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

import agenticflow.gateway.sessions as sessions_module
import agenticflow.shared.security.audit as audit_module
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.console.app import STATIC
from agenticflow.gateway.responses import ApiError
from agenticflow.gateway.sessions import COOKIE, LOGIN_FAILURES
from tests.conftest import unique_prefix
from tests.integration.gateway_support import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    Env,
    sse_frames,
    start_env,
    workflow,
)
from tests.integration.gateway_support import (
    console_login as login,
)

pytestmark = pytest.mark.timeout(120)

EVIL = "https://evil.test"
ECHO = [{"id": "a", "capability": "echo", "params": {"say": "hi"}}]
GATED = [
    {"id": "prepare", "capability": "echo", "params": {"say": "draft"}},
    {
        "id": "ship",
        "capability": "echo",
        "params": {"say": "go"},
        "depends_on": ["prepare"],
        "approval": {"reason": "Ship it?"},
    },
]
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
"""What the gateway's JSON answers (errors included) carry: stricter than the page's."""
SLOW = [{"id": "s", "capability": "slow", "params": {"seconds": 60}}]


@pytest.fixture(scope="module")
async def env(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    started = await start_env(
        nats_server.url, unique_prefix("conatk"), tmp_path_factory.mktemp("conatk")
    )
    async with started.stack:
        yield started


async def start(env: Env, tasks: list[dict[str, Any]], *, wait: bool = True) -> str:
    """A workflow started as alice with her bearer token (``wait``: until it ends)."""
    async with env.http() as http:
        response = await http.post(
            "/workflows",
            params={"wait": 30} if wait else None,
            json={"workflow": workflow(*tasks)},
        )
        assert response.status_code == 201, response.text
        if wait:
            assert response.json()["state"] == "completed", response.text
        return str(response.json()["id"])


async def raw(env: Env, request: bytes) -> tuple[int, bytes, bytes]:
    """Send ``request`` as is (no client normalising its path) and read the
    answer: its status, head and body."""
    where = urlsplit(env.url)
    assert where.hostname is not None
    assert where.port is not None
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head, body


def get_raw(env: Env, target: str, *headers: str) -> bytes:
    host = urlsplit(env.url).netloc
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def ws_url(env: Env, workflow_id: str, what: str = "events") -> str:
    return env.ws_url(f"/workflows/{workflow_id}/{what}/ws")


async def paused(env: Env, workflow_id: str) -> bool:
    async with env.http() as http:
        return bool((await http.get(f"/workflows/{workflow_id}")).json().get("paused"))


async def terminate(env: Env, workflow_id: str) -> None:
    async with env.http() as http:
        done = await http.post(f"/workflows/{workflow_id}/terminate", json={"reason": "test over"})
        assert done.status_code == 200, done.text


async def until_event(env: Env, workflow_id: str, kind: str) -> dict[str, Any]:
    """The first event of type ``kind`` of the workflow (read from its SSE feed)."""
    async with (
        asyncio.timeout(30),
        env.http() as http,
        http.stream("GET", f"/workflows/{workflow_id}/events/sse") as response,
    ):
        assert response.status_code == 200
        async for frame in sse_frames(response):
            if frame["event"] == "event" and frame["data"]["type"] == kind:
                return dict(frame["data"])
    raise AssertionError(f"the feed ended without {kind}")


# CSRF on every state-changing request ---------------------------------------------
async def test_logout_needs_the_csrf_token_and_leaves_the_session_when_refused(
    env: Env,
) -> None:
    async with login(env, ALICE) as (http, csrf), login(env, BOB) as (_, bobs_csrf):
        for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": bobs_csrf}):
            refused = await http.post("/console/api/logout", headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "csrf"
        assert (await http.get("/whoami")).json() == {"principal": "alice"}
        out = await http.post("/console/api/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200


async def test_the_csrf_token_is_bound_to_its_session(env: Env) -> None:
    workflow_id = await start(env, SLOW, wait=False)
    try:
        async with login(env, ALICE) as (http, _), login(env, BOB) as (_, bobs_csrf):
            # bob's (valid, his own) token with alice's cookie: refused.
            refused = await http.post(
                f"/workflows/{workflow_id}/pause", json={}, headers={"X-CSRF-Token": bobs_csrf}
            )
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "csrf"
        assert not await paused(env, workflow_id)
    finally:
        await terminate(env, workflow_id)


async def test_no_method_override_or_content_type_skips_the_csrf_check(env: Env) -> None:
    workflow_id = await start(env, SLOW, wait=False)
    try:
        async with login(env, ALICE) as (http, _):
            path = f"/workflows/{workflow_id}/pause"
            tricks: list[dict[str, Any]] = [
                {"headers": {"X-HTTP-Method-Override": "GET"}, "json": {}},
                {"headers": {"X-HTTP-Method": "GET"}, "json": {}},
                {"headers": {"X-Method-Override": "HEAD"}, "json": {}},
                {"params": {"_method": "GET"}, "json": {}},
                # what a cross-site <form> can send
                {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
                {"data": {"x": "1"}},
                {"files": {"f": ("a.json", b"{}", "application/json")}},
            ]
            for trick in tricks:
                refused = await http.post(path, **trick)
                assert refused.status_code == 403, (trick, refused.text)
                assert refused.json()["error"]["code"] == "csrf"
            for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
                other = await http.request(method, path)
                assert other.status_code == 405, (method, other.status_code)
        assert not await paused(env, workflow_id)
    finally:
        await terminate(env, workflow_id)


async def test_a_foreign_origin_is_refused_even_with_the_csrf_token(env: Env) -> None:
    host = urlsplit(env.url).netloc
    hostname, port = host.rsplit(":", 1)
    workflow_id = await start(env, SLOW, wait=False)
    try:
        async with login(env, ALICE) as (http, csrf):
            for origin in (
                EVIL,
                "null",
                "",
                f"http://{host}.evil.test",
                f"http://{hostname}:{int(port) + 1}",
                f"http://evil.test@{host}",
                f"file://{host}",
            ):
                refused = await http.post(
                    f"/workflows/{workflow_id}/pause",
                    json={},
                    headers={"X-CSRF-Token": csrf, "Origin": origin},
                )
                assert refused.status_code == 403, (origin, refused.text)
            assert not await paused(env, workflow_id)
            ok = await http.post(
                f"/workflows/{workflow_id}/pause",
                json={},
                headers={"X-CSRF-Token": csrf, "Origin": env.url},
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["by"] == "alice"
    finally:
        await terminate(env, workflow_id)


async def test_a_login_cannot_be_forged_by_another_site(env: Env) -> None:
    """Login CSRF: what a cross-site form or a no-cors fetch can send is refused."""
    async with httpx.AsyncClient(base_url=env.url) as http:
        body = b'{"token": "' + ALICE.encode() + b'"}'
        for content_type in (
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json-patch",
            "",
        ):
            forged = await http.post(
                "/console/api/login", content=body, headers={"Content-Type": content_type}
            )
            assert forged.status_code == 415, (content_type, forged.text)
            assert COOKIE not in forged.cookies
        for origin in (EVIL, "null"):
            foreign = await http.post(
                "/console/api/login", json={"token": ALICE}, headers={"Origin": origin}
            )
            assert foreign.status_code == 403
            assert COOKIE not in foreign.cookies


async def test_a_cross_site_websocket_with_the_cookie_is_refused(env: Env) -> None:
    workflow_id = await start(env, ECHO)
    async with login(env, ALICE) as (http, csrf):
        cookie = {"Cookie": f"{COOKIE}={http.cookies[COOKIE]}"}
        for what in ("events", "stream"):
            for origin in (None, Origin("null"), Origin(EVIL)):
                with pytest.raises(InvalidStatus) as refused:
                    async with ws_connect(
                        ws_url(env, workflow_id, what), additional_headers=cookie, origin=origin
                    ):
                        pass
                assert refused.value.response.status_code == 403, (what, origin)
        out = await http.post("/console/api/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200
    # The logged-out cookie opens nothing, even from the right origin.
    with pytest.raises(InvalidStatus) as ended:
        async with ws_connect(
            ws_url(env, workflow_id), additional_headers=cookie, origin=Origin(env.url)
        ):
            pass
    assert ended.value.response.status_code == 401


async def test_an_sse_feed_with_the_cookie_is_not_readable_cross_origin(env: Env) -> None:
    """EventSource with credentials from another origin: no CORS grant, so the
    browser never hands the page the answer."""
    workflow_id = await start(env, ECHO)
    async with login(env, ALICE) as (http, _):
        async with http.stream(
            "GET", f"/workflows/{workflow_id}/events/sse", headers={"Origin": EVIL}
        ) as response:
            assert response.status_code == 403  # a foreign Origin with the cookie: refused
            assert "access-control-allow-origin" not in response.headers
            assert "access-control-allow-credentials" not in response.headers
        async with http.stream("GET", f"/workflows/{workflow_id}/events/sse") as response:
            assert response.status_code == 200  # the control: the page's own feed
            assert "access-control-allow-origin" not in response.headers
        for path in ("/console/api/session", "/whoami", f"/workflows/{workflow_id}/graph"):
            answer = await http.get(path, headers={"Origin": EVIL})
            assert "access-control-allow-origin" not in answer.headers, path
        preflight = await http.options(
            "/console/api/logout",
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-csrf-token",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers


# Sessions ----------------------------------------------------------------------------
async def test_session_ids_are_random_unique_and_stored_only_as_digests(env: Env) -> None:
    ids, csrfs = set(), set()
    for _ in range(5):
        async with login(env, CAROL) as (http, csrf):
            session_id = http.cookies[COOKIE]
            assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", session_id)  # >= 256 bits
            assert re.fullmatch(r"[0-9a-f]{64}", csrf)
            ids.add(session_id)
            csrfs.add(csrf)
            stored = env.gateway.sessions._by_digest
            assert session_id.encode() not in stored
            assert all(session_id not in repr(session) for session in stored.values())
    assert len(ids) == len(csrfs) == 5


async def test_the_session_cookie_has_safe_flags(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        plain = await http.post("/console/api/login", json={"token": CAROL})
        cookie = plain.headers["set-cookie"].lower()
        for flag in ("httponly", "samesite=strict", "path=/"):
            assert flag in cookie
        assert f"max-age={int(env.gateway.sessions.ttl_s)}" in cookie
        assert "domain=" not in cookie  # never shared with sibling hosts
        behind_tls = await http.post(
            "/console/api/login", json={"token": CAROL}, headers={"X-Forwarded-Proto": "https"}
        )
        assert "secure" in behind_tls.headers["set-cookie"].lower()
        for answer in (plain, behind_tls):
            assert answer.headers["cache-control"] == "no-store"  # the CSRF token is in it


async def test_a_session_id_chosen_by_the_client_is_never_used(env: Env) -> None:
    """Session fixation: a planted cookie names no session, and a login
    answers with a fresh id, not the planted one."""
    planted = "A" * 43
    async with httpx.AsyncClient(base_url=env.url, cookies={COOKIE: planted}) as http:
        assert (await http.get("/whoami")).status_code == 401
        assert (await http.get("/console/api/session")).status_code == 401
        answer = await http.post("/console/api/login", json={"token": CAROL})
        assert answer.status_code == 200
        assert answer.cookies[COOKIE] != planted
    async with httpx.AsyncClient(base_url=env.url, cookies={COOKIE: planted}) as http:
        assert (await http.get("/whoami")).status_code == 401
    too_long = "B" * 5000
    async with httpx.AsyncClient(base_url=env.url, cookies={COOKIE: too_long}) as http:
        assert (await http.get("/whoami")).status_code == 401


async def test_logout_ends_the_session_for_every_copy_of_the_cookie(env: Env) -> None:
    async with login(env, ALICE) as (http, csrf):
        stolen = http.cookies[COOKIE]
        out = await http.post("/console/api/logout", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 200
    async with httpx.AsyncClient(base_url=env.url, cookies={COOKIE: stolen}) as replay:
        assert (await replay.get("/whoami")).status_code == 401
        assert (await replay.get("/console/api/session")).status_code == 401
        again = await replay.post("/console/api/logout", headers={"X-CSRF-Token": csrf})
        assert again.status_code == 401


async def test_an_expired_session_is_refused_and_forgotten(env: Env) -> None:
    async with login(env, ALICE) as (http, _):
        assert (await http.get("/whoami")).status_code == 200
        for stored in env.gateway.sessions._by_digest.values():
            if stored.principal == "alice":
                stored.expires = 0.0  # as if ttl_s had passed
        before = len(env.gateway.sessions)
        assert (await http.get("/whoami")).status_code == 401
        assert (await http.get("/console/api/session")).status_code == 401
        assert len(env.gateway.sessions) < before


# RBAC through the console ------------------------------------------------------------
async def test_the_console_is_held_to_the_policy_like_a_token(env: Env) -> None:
    gated = await start(env, GATED, wait=False)
    await until_event(env, gated, "task.approval_requested")
    done = await start(env, ECHO)
    refusals = [
        (DAVE, f"/workflows/{gated}/approve", {"task": "ship", "comment": "dave"}),
        (DAVE, f"/workflows/{gated}/reject", {"task": "ship"}),
        (DAVE, f"/workflows/{gated}/pause", {}),
        (BOB, f"/workflows/{gated}/approve", {"task": "ship"}),
        (BOB, f"/workflows/{done}/resume", {"from_task": "a"}),
        (BOB, f"/workflows/{gated}/modify", {"changes": {"params": {"ship": {"say": "x"}}}}),
        (BOB, f"/workflows/{gated}/signals/go", {"data": 1}),
        (CAROL, f"/workflows/{done}/fork", {}),
        (CAROL, f"/workflows/{done}/resume", {"from_task": "a"}),
        (CAROL, f"/workflows/{gated}/feedback", {"text": "carol"}),
        (CAROL, f"/workflows/{gated}/cancel", {"reason": "carol"}),
        (CAROL, f"/workflows/{gated}/terminate", {"reason": "carol"}),
        (CAROL, "/workflows", {"workflow": workflow(*ECHO)}),
    ]
    for token, path, body in refusals:
        async with login(env, token) as (http, csrf):
            refused = await http.post(path, json=body, headers={"X-CSRF-Token": csrf})
            assert refused.status_code == 403, (token[:5], path, refused.text)
            assert refused.json()["error"]["code"] == "forbidden"
    async with env.http() as api:
        graph = (await api.get(f"/workflows/{gated}/graph")).json()
        ship = next(node for node in graph["nodes"] if node["id"] == "ship")
        assert ship["waiting_approval"] is True  # nothing refused took effect
        assert graph["state"] == "running"
    async with login(env, ALICE) as (http, csrf):  # the control: alice may
        approved = await http.post(
            f"/workflows/{gated}/approve",
            json={"task": "ship", "comment": "<b>ok</b>"},
            headers={"X-CSRF-Token": csrf},
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["by"] == "alice"
    async with env.http() as api:
        result = (await api.get(f"/workflows/{gated}/result", params={"wait": 30})).json()
        assert result["state"] == "completed"


async def test_the_browser_never_receives_cluster_credentials(env: Env) -> None:
    async with login(env, ALICE) as (http, _):
        answers = [
            await http.get("/console/api/session"),
            await http.get("/cluster"),
            await http.get("/console/"),
        ]
    leaked = ("nats://", env.settings.nats_url, ALICE, "password", "-----BEGIN")
    for answer in answers:
        assert answer.status_code == 200
        for secret in leaked:
            assert secret not in answer.text, secret


# The page and its assets ----------------------------------------------------------------
async def test_the_static_mount_serves_nothing_outside_its_directory(env: Env) -> None:
    app_py = (STATIC.parent / "app.py").read_bytes()
    for target in (
        "/console/static/../app.py",
        "/console/static/%2e%2e/app.py",
        "/console/static/..%2fapp.py",
        "/console/static/%2e%2e%2fapp.py",
        "/console/static/..%5capp.py",
        "/console/static/..\\app.py",
        "/console/static/%252e%252e/app.py",
        "/console/static//etc/passwd",
        "/console/static/%2fetc%2fpasswd",
        "/console/static/....//app.py",
        "/console/static/../../gateway/sessions.py",
        "/console/static/./../app.py",
        "/console/static/",
        "/console/static",
    ):
        status, head, body = await raw(env, get_raw(env, target))
        assert status in (301, 302, 307, 308, 400, 404, 405), (target, status)
        assert b"root:" not in body, target
        assert app_py[:200] not in body, target
        if status in (301, 302, 307, 308):
            location = re.search(rb"(?im)^location: *(\S+)", head)
            assert location is not None, target
            assert not location.group(1).startswith(b"//"), target


async def test_no_redirect_leads_off_the_gateway(env: Env) -> None:
    for target in ("/", "/console", "//evil.test/", "/console//evil.test", "/\\evil.test"):
        status, head, _ = await raw(env, get_raw(env, target))
        location = re.search(rb"(?im)^location: *(\S+)", head)
        if location is not None:
            assert location.group(1) == b"/console/", (target, location.group(1))
        else:
            assert status in (404, 405), (target, status)


async def test_every_console_answer_carries_the_strict_policy(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        page = await http.get("/console/")
        policy = page.headers["content-security-policy"]
        directives = dict(
            ([*part.strip().split(" ", 1), ""])[:2] for part in policy.split(";") if part.strip()
        )
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["base-uri"] == "'none'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
        assert "*" not in policy
        assert "http:" not in policy
        for path in ("/console/static/console.js", "/console/static/nope.js", "/console/nope"):
            answer = await http.get(path)
            assert answer.headers["content-security-policy"] in (policy, JSON_POLICY), path
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["x-frame-options"] == "DENY", path
        for path in ("/whoami", "/workflows/x/graph", "/nope"):
            answer = await http.get(path)
            assert answer.headers["x-content-type-options"] == "nosniff", path
            assert answer.headers["x-frame-options"] == "DENY", path
            assert "text/html" not in answer.headers.get("content-type", ""), path


async def test_the_page_has_no_inline_script_style_or_handler(env: Env) -> None:
    async with httpx.AsyncClient(base_url=env.url) as http:
        html = (await http.get("/console/")).text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html, re.I)
    assert not re.search(r"<style\b", html, re.I)
    assert not re.search(r"\sstyle\s*=", html, re.I)
    assert not re.search(r"\son[a-z]+\s*=", html, re.I)
    assert "javascript:" not in html.lower()
    for src in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert src.startswith("/console/static/"), src


SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new Function\s*\("
    r"|setTimeout\(\s*['\"`]|setInterval\(\s*['\"`]|srcdoc|createContextualFragment"
    r"|DOMParser|javascript:|\.setAttribute\(\s*['\"`]on"
)


async def test_the_served_scripts_never_parse_data_as_markup(env: Env) -> None:
    """Every module the page loads, as the gateway serves it: no HTML sink,
    and every link built from data is a fragment of the console itself."""
    scripts = sorted(path.name for path in Path(STATIC).glob("*.js"))
    assert scripts
    async with httpx.AsyncClient(base_url=env.url) as http:
        for name in scripts:
            answer = await http.get(f"/console/static/{name}")
            assert answer.status_code == 200
            assert "javascript" in answer.headers["content-type"]
            text = answer.text
            assert not SINKS.search(text), (name, SINKS.search(text))
            for found in re.findall(r"\bhref(?:\s*:|\s*=)\s*([^,}\n]+)", text):
                link = found.strip()
                assert link.startswith(('"#/', "`#/")), (name, link)


# Injection and denial of service -----------------------------------------------------------
async def test_no_header_can_be_injected(env: Env) -> None:
    async with env.http() as http:
        bad_id = await http.post(
            "/workflows",
            json={"workflow": workflow(*ECHO), "id": "x\r\nSet-Cookie: evil=1"},
        )
        assert bad_id.status_code == 422
        assert "evil" not in bad_id.headers.get("set-cookie", "")
    crlf = (
        "POST /console/api/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: {n}\r\nConnection: close\r\n\r\n{body}"
    )
    body = '{"token": "a\\r\\nSet-Cookie: evil=1"}'
    status, head, _ = await raw(
        env, crlf.format(host=urlsplit(env.url).netloc, n=len(body), body=body).encode()
    )
    assert status == 401
    assert b"evil" not in head


# In a real browser (Debian's Chromium driven by Playwright) ---------------------------
XSS = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script></pre>&amp;"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A fresh Chromium page (its own cookies) that notes CSP violations and
    uncaught errors; skipped without Chromium or Playwright."""
    from tests.support.browser import CHROMIUM, chromium, watched

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    try:
        import playwright.async_api  # noqa: F401 - only whether it is installed
    except ImportError:  # pragma: no cover - depends on the environment
        pytest.skip("the playwright package is missing")
    async with chromium() as browser:
        context = await browser.new_context()
        context.set_default_timeout(20_000)
        async with watched(await context.new_page()) as opened:
            yield opened


async def nothing_ran(page: Any) -> None:
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("img").count() == 0
    assert await page.evaluate("document.scripts.length") == 1  # console.js only


async def test_markup_in_a_link_or_a_reason_is_shown_as_text(env: Env, page: Any) -> None:
    """What a hostile link (the workflow id in the fragment) or a hostile
    reason puts on the page stays text."""
    from playwright.async_api import expect

    workflow_id = await start(env, SLOW, wait=False)
    async with env.http() as http:
        done = await http.post(f"/workflows/{workflow_id}/terminate", json={"reason": XSS})
        assert done.status_code == 200, done.text
    await page.goto(f"{env.url}/console/#token={ALICE}")
    await expect(page.get_by_test_id("principal")).to_have_text("alice")

    await page.goto(f"{env.url}/console/#/workflows?q={workflow_id}")
    row = page.get_by_test_id("workflow-row")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text(XSS)
    await nothing_ran(page)

    await page.goto(f"{env.url}/console/#/workflows/{workflow_id}")
    await expect(page.get_by_test_id("workflow-reason")).to_contain_text(XSS)
    await nothing_ran(page)

    hostile = "x<img src=x onerror=window.__pwned=3>"
    await page.goto(f"{env.url}/console/#/workflows/{hostile}")
    await expect(page.get_by_test_id("workflow-id")).to_have_text(hostile)
    await expect(page.get_by_test_id("dag-wrap")).to_contain_text(f"No workflow {hostile}.")
    assert await page.title() == f"{hostile} · AgenticFlow"
    await nothing_ran(page)


@pytest.fixture
def fresh_limits(env: Env) -> Iterator[None]:
    """The login limiter's memory emptied before and after the test."""
    env.gateway.sessions._failures.clear()
    yield
    env.gateway.sessions._failures.clear()


async def test_one_principal_cannot_log_everyone_else_out(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAILS: sessions are capped gateway-wide and the oldest is dropped, so any
    token holder (carol reads only) logging in MAX_SESSIONS times evicts every
    other console user (10 000 POSTs in production; the cap is lowered here)."""
    monkeypatch.setattr(sessions_module, "MAX_PER_PRINCIPAL", 20)
    async with login(env, ALICE) as (alice, _):
        assert (await alice.get("/whoami")).json() == {"principal": "alice"}
        async with httpx.AsyncClient(base_url=env.url) as carol:
            for _ in range(sessions_module.MAX_PER_PRINCIPAL + 1):
                answer = await carol.post("/console/api/login", json={"token": CAROL})
                assert answer.status_code == 200
        assert (await alice.get("/whoami")).status_code == 200, "carol logged alice out"


async def test_a_new_login_ends_the_browsers_previous_session(env: Env) -> None:
    """FAILS: logging in again (another principal, or the same) leaves the
    cookie's previous session valid on the server until it expires."""
    async with login(env, ALICE) as (http, _):
        first = http.cookies[COOKIE]
        again = await http.post("/console/api/login", json={"token": CAROL})
        assert again.status_code == 200
        assert http.cookies[COOKIE] != first
    async with httpx.AsyncClient(base_url=env.url, cookies={COOKIE: first}) as old:
        assert (await old.get("/whoami")).status_code == 401


async def no_frame_with(ws: Any, text: str) -> None:
    """Read the WebSocket until it closes (ConnectionClosed); fail on a frame holding ``text``."""
    while True:
        assert text not in str(await ws.recv()), f"a frame with {text!r} arrived"


async def test_logout_ends_the_sessions_live_feeds(env: Env) -> None:
    """FAILS: the session is checked only when a feed opens; a WebSocket (or
    SSE stream) opened with the cookie keeps streaming after the logout (and
    after the session expires) for as long as the workflow runs."""
    workflow_id = await start(env, SLOW, wait=False)
    try:
        async with login(env, ALICE) as (http, csrf):
            cookie = {"Cookie": f"{COOKIE}={http.cookies[COOKIE]}"}
            async with ws_connect(
                ws_url(env, workflow_id), additional_headers=cookie, origin=Origin(env.url)
            ) as ws:
                assert "workflow.submitted" in str(await asyncio.wait_for(ws.recv(), 30))
                out = await http.post("/console/api/logout", headers={"X-CSRF-Token": csrf})
                assert out.status_code == 200
                async with env.http() as api:
                    after = await api.post(
                        f"/workflows/{workflow_id}/feedback", json={"text": "sent after logout"}
                    )
                    assert after.status_code == 200, after.text
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(no_frame_with(ws, "sent after logout"), 30)
    finally:
        await terminate(env, workflow_id)


@pytest.mark.usefixtures("fresh_limits")
async def test_a_forwarded_for_header_does_not_reset_the_login_limit(env: Env) -> None:
    """FAILS: uvicorn (proxy_headers on, 127.0.0.1 trusted by default) takes
    X-Forwarded-For as the client's address, so a client connecting from
    loopback (ssh -L, kubectl port-forward, `agenticflow console`) names a
    fresh address per guess."""
    async with httpx.AsyncClient(base_url=env.url) as http:
        for _ in range(LOGIN_FAILURES):
            assert (
                await http.post("/console/api/login", json={"token": "x" * 20})
            ).status_code == 401
        limited = await http.post("/console/api/login", json={"token": "x" * 20})
        assert limited.status_code == 429
        spoofed = await http.post(
            "/console/api/login",
            json={"token": "x" * 20},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
        assert spoofed.status_code == 429, "X-Forwarded-For reset the limit"


def test_the_limit_still_holds_once_many_addresses_have_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond MAX_ADDRESSES remembered addresses, the one whose last failure is
    oldest is forgotten, never the one just counted: once many addresses have
    failed twice (typos over a long uptime, or an attacker with many
    addresses), a new address is still limited. (The proxy header that would
    name addresses over HTTP is ignored: see the test above.)"""
    monkeypatch.setattr(sessions_module, "MAX_ADDRESSES", 20)
    sessions = sessions_module.Sessions(3600)
    for i in range(sessions_module.MAX_ADDRESSES + 1):
        for _ in range(2):
            sessions.failed_login(f"2001:db8::{i:x}")
    for _ in range(LOGIN_FAILURES):
        sessions.check_login_rate("198.51.100.9")
        sessions.failed_login("198.51.100.9")
    with pytest.raises(ApiError) as limited:
        sessions.check_login_rate("198.51.100.9")
    assert limited.value.status == 429
    assert len(sessions._failures) <= sessions_module.MAX_ADDRESSES


async def test_the_name_filter_is_bounded_like_q(env: Env) -> None:
    """FAILS: ``q`` is capped at 200 characters but ``name`` (a glob) is not:
    each distinct pattern is compiled to a regex and kept in fnmatch's cache
    (32 768 entries), so any token holder grows the gateway's memory by
    sending long, distinct names."""
    await start(env, ECHO)
    async with env.http(CAROL) as http:
        assert (await http.get("/workflows", params={"q": "q" * 201})).status_code == 422
        long_name = await http.get("/workflows", params={"name": "*" + "n" * 8000})
        assert long_name.status_code == 422, f"{long_name.status_code}: an 8000-char glob"


async def test_audit_verifications_do_not_pile_up(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAILS: POST /cluster/audit/verify is open to any token (carol reads
    only) and each call reads the whole audit stream for up to 120 s: nothing
    stops one principal from running as many at once as it likes. The first
    verification is held in flight; a second from the same principal should
    be refused (429) rather than start another full read."""
    real = audit_module.verify_audit
    gate, first_in, second_in = asyncio.Event(), asyncio.Event(), asyncio.Event()
    running = 0

    async def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal running
        running += 1
        (second_in if running > 1 else first_in).set()
        await gate.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(audit_module, "verify_audit", held)
    async with login(env, CAROL) as (http, csrf):

        async def verify() -> httpx.Response:
            return await http.post("/cluster/audit/verify", json={}, headers={"X-CSRF-Token": csrf})

        first = asyncio.create_task(verify())
        second: asyncio.Task[httpx.Response] | None = None
        try:
            await asyncio.wait_for(first_in.wait(), 30)
            second = asyncio.create_task(verify())
            entered = asyncio.create_task(second_in.wait())
            await asyncio.wait({second, entered}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            entered.cancel()
            assert not second_in.is_set(), "a second full audit read started alongside the first"
            assert second.done()
            assert second.result().status_code == 429
        finally:
            gate.set()
            outcomes = await asyncio.gather(
                first, *([second] if second else []), return_exceptions=True
            )
    first_answer = outcomes[0]
    assert isinstance(first_answer, httpx.Response)
    assert first_answer.status_code == 200


async def test_a_login_link_does_not_replace_the_session_behind_the_users_back(
    env: Env, page: Any
) -> None:
    """FAILS (login CSRF through the page): any site can send the user to
    /console/#token=<the attacker's own token>; the page then logs in with it
    from the gateway's own origin (so the JSON and Origin checks pass) and
    silently replaces the user's session: what the user does next is done
    as, and visible to, the attacker's principal."""
    from playwright.async_api import expect

    await page.goto(f"{env.url}/console/#token={ALICE}")
    await expect(page.get_by_test_id("principal")).to_have_text("alice")
    await page.goto("about:blank")  # the user browses elsewhere, then follows a link
    await page.goto(f"{env.url}/console/#/workflows&token={CAROL}")
    await expect(page.get_by_test_id("nav-workflows")).to_be_visible()
    who = await page.evaluate("fetch('/whoami').then((r) => r.json())")
    assert who == {"principal": "alice"}, f"the link logged the user in as {who}"


async def test_a_modifier_cannot_strip_an_approval_gate(env: Env) -> None:
    """FAILS: dave may modify and submit echo tasks, not approve. Through the
    console's Modify form he replaces a gated task that has not started yet
    (its dependency still running) with an ungated copy, new params included:
    it runs with no approval at all."""
    tasks = [
        {"id": "prepare", "capability": "slow", "params": {"seconds": 4}},
        {
            "id": "ship",
            "capability": "echo",
            "params": {"say": "go"},
            "depends_on": ["prepare"],
            "approval": {"reason": "Ship it?"},
        },
    ]
    gated = await start(env, tasks, wait=False)
    ungated = {
        "id": "ship",
        "capability": "echo",
        "params": {"say": "unapproved"},
        "depends_on": ["prepare"],
    }
    async with login(env, DAVE) as (http, csrf):
        changed = await http.post(
            f"/workflows/{gated}/modify",
            json={"changes": {"replace": [ungated]}},
            headers={"X-CSRF-Token": csrf},
        )
    try:
        assert changed.status_code == 403, f"dave stripped the gate: {changed.text}"
    finally:
        await terminate(env, gated)
