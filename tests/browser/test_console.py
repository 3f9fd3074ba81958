"""The web console (issue 25) in a real browser: Debian's Chromium driven by
Playwright against the gateway in front of a real cluster (no mocks).

What each test proves:
- a person signs in with a token, sees a task waiting at its approval gate in
  the DAG, approves it with a comment, and sees the node, the workflow and the
  event list follow live;
- user data (results, inputs, event data, list previews) is shown as text:
  markup in it never runs or becomes elements;
- steering is held to the policy: a principal without the role sees the 403 in
  the page and the workflow is unchanged;
- a state-changing request without the CSRF token is refused, the page and
  its assets carry a strict CSP, and the page runs under it without a violation;
- the list's filters (state, text, time) and paging, its live refresh; the
  cluster page; the time-travel slider showing an earlier state; fork and diff.

Screenshots go to AGENTICFLOW_SCREENSHOTS (default build/console-screenshots/).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import CHROMIUM

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) "
        "or set AGENTICFLOW_CHROMIUM",
        allow_module_level=True,
    )
try:
    from playwright.async_api import Browser, Locator, Page, expect
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "the playwright package is missing: pip install playwright "
        "(it drives Debian's Chromium: apt-get install chromium)",
        allow_module_level=True,
    )

from agenticflow.gateway.sessions import COOKIE
from tests.integration.gateway_support import ALICE, BOB, CAROL, Env, workflow

pytestmark = pytest.mark.timeout(120)
expect.set_options(timeout=10_000)  # a loaded machine (make test runs three pytest workers)

LIVE = 30_000
"""Milliseconds to wait for a live change to reach the page."""
XSS = "<script>window.__pwned=1</script> [/b] <img src=x onerror=window.__pwned=2> </pre>&amp;"
GATED = [
    {"id": "prepare", "capability": "echo", "params": {"say": "draft"}},
    {
        "id": "ship",
        "capability": "echo",
        "params": {"say": "go"},
        "depends_on": ["prepare"],
        "approval": {"reason": "Ship the release?"},
    },
]
ONE = [{"id": "e", "capability": "echo"}]
CHAIN = [
    {"id": "a", "capability": "echo", "params": {"say": "first"}},
    {"id": "b", "capability": "echo", "params": {"say": "second"}, "depends_on": ["a"]},
]

FAN: list[dict[str, Any]] = [
    {"id": "a", "capability": "echo"},
    *({"id": f"b{i}", "capability": "echo", "depends_on": ["a"]} for i in range(3)),
    {"id": "c", "capability": "echo", "depends_on": ["b0", "b1", "b2"]},
]
"""Three tasks in parallel: their events interleave, some concurrent (∥)."""


# Helpers --------------------------------------------------------------------------
async def start(
    env: Env, tasks: list[dict[str, Any]], *, name: str, wait: bool = False, **more: Any
) -> str:
    """Start a workflow through the gateway's API as alice (``wait``: until it ends)."""
    async with env.http(ALICE) as http:
        response = await http.post(
            "/workflows",
            params={"wait": 30} if wait else None,
            json={"workflow": workflow(*tasks, name=name), **more},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


async def sign_in(
    page: Page,
    env: Env,
    token: str,
    principal: str,
    *,
    form: bool = False,
    shot: Path | None = None,
) -> None:
    """Sign in with the login form (after a refused token; ``shot``: screenshot
    it), or with a dev link (``#token=...``)."""
    if form:
        await page.goto(f"{env.url}/console/")
        await expect(page.get_by_test_id("login-form")).to_be_visible()
        await page.get_by_test_id("login-token").fill("not-a-token-at-all")
        await page.get_by_test_id("login-submit").click()
        await expect(page.get_by_test_id("login-error")).to_have_text("unknown token")
        if shot is not None:
            await page.screenshot(path=shot)
        await page.get_by_test_id("login-token").fill(token)
        await page.get_by_test_id("login-submit").click()
    else:
        await page.goto(f"{env.url}/console/#token={token}")
    await expect(page.get_by_test_id("principal")).to_have_text(principal)
    assert token not in page.url  # the fragment is dropped from the address


async def open_workflow(page: Page, env: Env, workflow_id: str) -> None:
    await page.goto(f"{env.url}/console/#/workflows/{workflow_id}")
    await expect(page.get_by_test_id("workflow-id")).to_have_text(workflow_id)


def node(page: Page, task: str) -> Locator:
    return page.locator(f'[data-testid="dag-node"][data-task="{task}"]')


def event_rows(page: Page, kind: str) -> Locator:
    return page.locator(f'[data-testid="event-row"][data-type="{kind}"]')


async def shoot(page: Page, path: Path) -> None:
    """A full-page screenshot from the top (the sticky header stays where it belongs)."""
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=path, full_page=True)


def shown(first: int, last: int, total: int) -> str:
    """The pager's text: rows first to last of total (with an en dash)."""
    return f"{first}\u2013{last} of {total}"


def happened_before_or_equal(a: dict[str, int], b: dict[str, int]) -> bool:
    return all(n <= b.get(node, 0) for node, n in a.items())


async def marks_match_the_clocks(page: Page, env: Env, workflow_id: str) -> None:
    """The page's ∥ marks are exactly where the API's vector clocks say an event
    is concurrent with the one before it (what ``agenticflow replay`` marks)."""
    async with env.http(ALICE) as http:
        events = (await http.get(f"/workflows/{workflow_id}/events")).json()["events"]
    expected = ["false"] + [
        "false"
        if happened_before_or_equal(before["vclock"], after["vclock"])
        or happened_before_or_equal(after["vclock"], before["vclock"])
        else "true"
        for before, after in itertools.pairwise(events)
    ]
    rows = page.get_by_test_id("event-row")
    await expect(rows).to_have_count(len(events))
    assert [await row.get_attribute("data-concurrent") for row in await rows.all()] == expected
    marked = [i for i, flag in enumerate(expected) if flag == "true"]
    await expect(page.get_by_test_id("event-concurrent")).to_have_count(len(marked))
    clocks = [" ".join(f"{k}:{v}" for k, v in e["vclock"].items()) for e in events]
    await expect(page.get_by_test_id("event-vclock")).to_have_text(clocks)


async def no_markup_ran(page: Page) -> None:
    """No injected script ran and no injected element exists."""
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator("img").count() == 0
    assert await page.evaluate("document.scripts.length") == 1  # console.js only


# 1. Approval in the page ----------------------------------------------------------
async def test_approve_a_gate_with_a_comment_and_watch_it_complete(
    env: Env, page: Page, screenshots: Path
) -> None:
    after = {
        "id": "notify",
        "capability": "echo",
        "params": {"say": "sent"},
        "depends_on": ["ship"],
    }
    workflow_id = await start(env, [*GATED, after], name="console-gate")
    await sign_in(page, env, ALICE, "alice", form=True, shot=screenshots / "login.png")
    await open_workflow(page, env, workflow_id)

    ship = node(page, "ship")
    await expect(ship).to_have_attribute("data-state", "waiting_approval", timeout=LIVE)
    await expect(ship).to_have_attribute("data-gate", "true")
    await expect(ship.get_by_test_id("gate-badge")).to_have_count(1)
    await expect(node(page, "prepare")).to_have_attribute("data-state", "completed")
    await expect(node(page, "prepare").get_by_test_id("gate-badge")).to_have_count(0)
    await expect(page.get_by_test_id("workflow-state")).to_have_attribute("data-state", "running")

    # Modify a task that has not started (the form starts from such tasks' params).
    await page.get_by_test_id("steer-modify").click()
    changes = page.get_by_test_id("steer-input")
    assert json.loads(await changes.input_value()) == {"params": {"notify": {"say": "sent"}}}
    await changes.fill(json.dumps({"params": {"notify": {"say": "sent <i>twice</i>"}}}))
    await page.get_by_test_id("steer-submit").click()
    await expect(page.get_by_test_id("notice").filter(has_text="modify accepted")).to_be_visible()

    item = page.locator('[data-testid="approval-item"][data-task="ship"]')
    await item.get_by_test_id("approval-comment").fill("ship it <b>now</b>")
    await shoot(page, screenshots / "approval.png")
    await item.get_by_test_id("approve-button").click()

    await expect(page.get_by_test_id("notice").filter(has_text="approve accepted")).to_be_visible()
    await expect(ship).to_have_attribute("data-state", "completed", timeout=LIVE)
    await expect(page.get_by_test_id("workflow-state")).to_have_attribute(
        "data-state", "completed", timeout=LIVE
    )
    await expect(page.get_by_test_id("approval-item")).to_have_count(0)

    # The decision arrived through the live feed, with who decided and the comment.
    decided = event_rows(page, "task.approval_decided")
    await expect(decided).to_have_count(1, timeout=LIVE)
    await decided.click()
    data = page.get_by_test_id("event-data")
    await expect(data).to_contain_text("ship it <b>now</b>")
    await expect(data).to_contain_text("alice")
    await expect(event_rows(page, "workflow.completed")).to_have_count(1, timeout=LIVE)
    await shoot(page, screenshots / "workflow-dag.png")

    async with env.http(ALICE) as http:
        answer = (await http.get(f"/workflows/{workflow_id}")).json()
    assert answer["state"] == "completed"
    assert answer["tasks"]["ship"]["state"] == "completed"
    assert answer["tasks"]["notify"]["result"]["params"] == {"say": "sent <i>twice</i>"}


# 2. User data is text -------------------------------------------------------------
async def test_markup_in_results_inputs_and_events_is_shown_as_text(env: Env, page: Page) -> None:
    tasks = [{"id": "evil", "capability": "echo", "params": {"say": XSS}}]
    workflow_id = await start(env, tasks, name="console-xss", wait=True, input={"note": XSS})
    await sign_in(page, env, ALICE, "alice")
    await open_workflow(page, env, workflow_id)

    evil = node(page, "evil")
    await expect(evil).to_have_attribute("data-state", "completed", timeout=LIVE)
    await evil.click()
    await expect(page.get_by_test_id("task-result")).to_contain_text(XSS)
    await expect(page.get_by_test_id("task-input")).to_contain_text(XSS)
    completed = event_rows(page, "task.completed")
    await expect(completed).to_have_count(1, timeout=LIVE)
    await completed.click()
    await expect(page.get_by_test_id("event-data")).to_contain_text(XSS)
    await no_markup_ran(page)

    # A task's error, whatever its message holds.
    fails = [{"id": "bad", "capability": "fatal", "params": {"item": XSS}}]
    failed = await start(env, fails, name="console-xss", wait=True)
    await open_workflow(page, env, failed)
    await expect(page.get_by_test_id("workflow-state")).to_have_attribute("data-state", "failed")
    await expect(page.get_by_test_id("task-detail-id")).to_have_text("bad")  # failed: selected
    await expect(page.get_by_test_id("task-error")).to_contain_text(XSS)
    await expect(page.get_by_test_id("task-error")).to_contain_text("NonRetryableError")
    await no_markup_ran(page)

    await page.goto(f"{env.url}/console/#/workflows?q={workflow_id}")
    row = page.get_by_test_id("workflow-row")
    await expect(row).to_have_count(1)
    await expect(row.locator(".input-preview")).to_contain_text("<script>window.__pwned=1</script>")
    await no_markup_ran(page)


# 3. The policy holds in the page ---------------------------------------------------
async def test_a_principal_without_the_role_sees_403_and_nothing_changes(
    env: Env, page: Page, browser: Browser
) -> None:
    workflow_id = await start(env, GATED, name="console-rbac")
    await env.client.waiting_for_approval(workflow_id, timeout=30)
    await sign_in(page, env, CAROL, "carol")
    await open_workflow(page, env, workflow_id)
    await expect(node(page, "ship")).to_have_attribute("data-state", "waiting_approval")

    # What the API answers carol is what the page shows her.
    async with env.http(CAROL) as http:
        refused = await http.post(f"/workflows/{workflow_id}/pause", json={})
    assert refused.status_code == 403
    message = refused.json()["error"]["message"]

    await page.get_by_test_id("steer-pause").click()
    notice = page.get_by_test_id("notice").filter(has_text="pause refused")
    await expect(notice).to_contain_text(message)
    await expect(notice).to_have_attribute("data-kind", "error")

    item = page.locator('[data-testid="approval-item"][data-task="ship"]')
    await item.get_by_test_id("approval-comment").fill("carol says yes")
    await item.get_by_test_id("approve-button").click()
    await expect(page.get_by_test_id("notice").filter(has_text="approve refused")).to_be_visible()

    # bob may submit echo tasks, not approve them.
    context = await browser.new_context()
    try:
        bob = await context.new_page()
        await sign_in(bob, env, BOB, "bob")
        await open_workflow(bob, env, workflow_id)
        bob_item = bob.locator('[data-testid="approval-item"][data-task="ship"]')
        await bob_item.get_by_test_id("reject-button").click()
        await expect(bob.get_by_test_id("notice").filter(has_text="reject refused")).to_be_visible()
    finally:
        await context.close()

    async with env.http(ALICE) as http:
        graph = (await http.get(f"/workflows/{workflow_id}/graph")).json()
        events = (await http.get(f"/workflows/{workflow_id}/events")).json()["events"]
        assert graph["state"] == "running"
        assert graph["paused"] is False
        assert {n["id"]: n["state"] for n in graph["nodes"]}["ship"] == "waiting_approval"
        kinds = {e["type"] for e in events}
        assert not kinds & {"task.approval_decided", "workflow.intervention_applied"}
        assert await http.post(f"/workflows/{workflow_id}/terminate", json={"reason": "done"})


# 4. CSRF and CSP -------------------------------------------------------------------
async def test_posts_need_the_csrf_token_and_the_page_runs_under_a_strict_csp(
    env: Env, page: Page
) -> None:
    async with httpx.AsyncClient(base_url=env.url, timeout=30) as http:
        served = await http.get("/console/")
        assert served.status_code == 200
        policy = served.headers["content-security-policy"]
        for directive in (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ):
            assert directive in policy
        assert "unsafe" not in policy
        assert served.headers["x-content-type-options"] == "nosniff"
        assert served.headers["x-frame-options"] == "DENY"
        assert served.headers["referrer-policy"] == "no-referrer"
        # No inline script, inline style or inline handler in the page itself.
        html = served.text
        assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
        assert re.search(r"\sstyle\s*=", html) is None
        assert re.search(r"\son[a-z]+\s*=", html) is None
        script = await http.get("/console/static/console.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert "content-security-policy" in script.headers

    workflow_id = await start(env, GATED, name="console-csrf")
    await env.client.waiting_for_approval(workflow_id, timeout=30)
    await sign_in(page, env, ALICE, "alice")
    await open_workflow(page, env, workflow_id)
    await expect(node(page, "ship")).to_have_attribute("data-state", "waiting_approval")

    # The session cookie is HttpOnly: the page's scripts never see it.
    assert COOKIE not in await page.evaluate("document.cookie")
    refused = await page.evaluate(
        """async (path) => {
            const answers = [];
            for (const headers of [{}, {"X-CSRF-Token": "0123456789abcdef"}]) {
                const r = await fetch(path, {method: "POST", credentials: "same-origin",
                    headers: {"Content-Type": "application/json", ...headers}, body: "{}"});
                answers.push([r.status, (await r.json()).error.code]);
            }
            return answers;
        }""",
        f"/workflows/{workflow_id}/pause",
    )
    assert refused == [[403, "csrf"], [403, "csrf"]]
    async with env.http(ALICE) as http:
        graph = (await http.get(f"/workflows/{workflow_id}/graph")).json()
    assert graph["paused"] is False

    # The page's own POST carries the token: the same pause goes through.
    await page.get_by_test_id("steer-pause").click()
    await expect(page.get_by_test_id("notice").filter(has_text="pause accepted")).to_be_visible()
    await expect(page.get_by_test_id("workflow-paused")).to_be_visible(timeout=LIVE)
    applied = event_rows(page, "workflow.intervention_applied")
    await expect(applied).to_have_count(1, timeout=LIVE)  # the pause, live from the feed
    await page.get_by_test_id("steer-resume").click()
    await expect(page.get_by_test_id("workflow-paused")).to_have_count(0, timeout=LIVE)
    await expect(applied).to_have_count(2, timeout=LIVE)
    await page.get_by_test_id("steer-terminate").click()
    await page.get_by_test_id("steer-input").fill("test over")
    await page.get_by_test_id("steer-submit").click()
    await expect(page.get_by_test_id("workflow-state")).not_to_have_attribute(
        "data-state", "running", timeout=LIVE
    )
    await page.goto(f"{env.url}/console/#/cluster")
    await expect(page.get_by_test_id("worker-row").first).to_be_visible()
    assert await page.evaluate("window.__violations") == []


# 5. List, cluster, time travel -----------------------------------------------------
async def test_the_list_filters_pages_and_updates_live(
    env: Env, page: Page, screenshots: Path
) -> None:
    name = "console-list"
    ids = list(
        await asyncio.gather(
            *(
                start(env, ONE, name=name, wait=True, input={"n": n, "tag": f"needle-{n}"})
                for n in range(7)
            )
        )
    )
    failed = await start(env, [{"id": "f", "capability": "fatal"}], name=name, wait=True)
    async with env.http(ALICE) as http:
        listed = (await http.get("/workflows", params={"name": name})).json()["workflows"]
    newest_first = [row["id"] for row in listed]
    assert sorted(newest_first) == sorted([*ids, failed])
    await sign_in(page, env, ALICE, "alice")
    await page.goto(f"{env.url}/console/#/workflows?name={name}&limit=3")
    rows = page.get_by_test_id("workflow-row")
    info = page.get_by_test_id("page-info")

    seen: list[str] = []
    for text in (shown(1, 3, 8), shown(4, 6, 8), shown(7, 8, 8)):
        await expect(info).to_have_text(text)
        seen += [str(await row.get_attribute("data-id")) for row in await rows.all()]
        if text != shown(7, 8, 8):
            await page.get_by_test_id("page-next").click()
    await expect(page.get_by_test_id("page-next")).to_be_disabled()
    await page.get_by_test_id("page-first").click()
    await expect(info).to_have_text(shown(1, 3, 8))
    await page.get_by_test_id("page-last").click()
    await expect(info).to_have_text(shown(7, 8, 8))
    await expect(page.get_by_test_id("page-last")).to_be_disabled()
    assert seen == newest_first  # the API's order (newest first), each once
    assert seen[0] == failed

    await page.get_by_test_id("filter-state-failed").check()
    await expect(info).to_have_text(shown(1, 1, 1))
    await expect(rows).to_have_attribute("data-id", failed)
    await expect(rows).to_have_attribute("data-state", "failed")
    await page.get_by_test_id("filter-state-failed").uncheck()
    await page.get_by_test_id("filter-state-completed").check()
    await expect(info).to_have_text(shown(1, 3, 7))

    await page.get_by_test_id("filter-q").fill("needle-4")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-id", ids[4])
    assert "q=needle-4" in page.url
    await page.get_by_test_id("filter-q").fill(ids[2])
    await expect(rows).to_have_attribute("data-id", ids[2])
    await page.get_by_test_id("filter-q").fill("")
    await page.get_by_test_id("filter-state-completed").uncheck()

    # Time range: the last 15 minutes (all), from 2099 (none), from 2000 to the next day (none).
    await page.get_by_test_id("filter-since").select_option("900")
    await expect(info).to_have_text(shown(1, 3, 8))
    await page.get_by_test_id("filter-from").fill("2099-01-01T00:00")
    await expect(info).to_have_text("No workflows")
    await expect(page.get_by_test_id("filter-since")).to_have_value("custom")
    await page.get_by_test_id("filter-from").fill("2000-01-01T00:00")
    await expect(info).to_have_text(shown(1, 3, 8))
    await page.get_by_test_id("filter-until").fill("2000-01-02T00:00")
    await expect(info).to_have_text("No workflows")
    await page.get_by_test_id("filter-reset").click()
    await expect(page.get_by_test_id("filter-name")).to_have_value("")
    await expect(page.get_by_test_id("filter-until")).to_have_value("")
    await expect(page.get_by_test_id("filter-since")).to_have_value("")
    await expect(info).to_have_text(re.compile(r"^1\u20133 of \d+$"))  # the module's workflows
    assert "name=" not in page.url
    await page.get_by_test_id("filter-name").fill(name)
    await expect(info).to_have_text(shown(1, 3, 8))

    # Live: a workflow started now appears without a reload.
    newest = await start(env, ONE, name=name)
    await expect(rows.first).to_have_attribute("data-id", newest, timeout=LIVE)
    await expect(info).to_have_text(shown(1, 3, 9))
    await page.get_by_test_id("page-size").select_option("25")
    await expect(rows).to_have_count(9)
    await shoot(page, screenshots / "workflows.png")


async def test_the_cluster_page_shows_workers_instances_and_queues(
    env: Env, page: Page, screenshots: Path
) -> None:
    await start(env, CHAIN, name="console-cluster", wait=True)
    await sign_in(page, env, ALICE, "alice")
    await page.get_by_test_id("nav-cluster").click()
    await expect(page.locator('[data-testid="worker-row"][data-node="gw-worker"]')).to_be_visible()
    await expect(
        page.locator('[data-testid="coordinator-row"][data-node="gw-coord"]')
    ).to_be_visible()
    await expect(page.get_by_test_id("instance-row").first).to_be_visible()
    await expect(
        page.locator('[data-testid="instance-row"][data-agent="echo"]').first
    ).to_be_visible()
    await expect(page.get_by_test_id("queue-row").first).to_be_visible()
    await expect(page.get_by_test_id("tile-workers")).to_contain_text("1")
    # Hundreds of instances: the filter narrows them to one agent's.
    await page.get_by_test_id("instance-filter").fill("gw-worker.echo.")
    await expect(page.get_by_test_id("instance-count")).to_contain_text("16 of")
    await expect(
        page.locator('[data-testid="instance-row"]:not([data-agent="echo"])')
    ).to_have_count(0)
    await shoot(page, screenshots / "cluster.png")
    await page.get_by_test_id("audit-verify").click()
    await expect(page.get_by_test_id("audit-verdict")).to_be_visible(timeout=LIVE)


async def test_time_travel_shows_an_earlier_state_then_fork_and_diff(
    env: Env, page: Page, screenshots: Path
) -> None:
    workflow_id = await start(env, CHAIN, name="console-travel", wait=True)
    changed = [{**CHAIN[0], "params": {"say": "other"}}, CHAIN[1]]
    other = await start(env, changed, name="console-travel", wait=True)
    await sign_in(page, env, ALICE, "alice")
    await open_workflow(page, env, workflow_id)
    a, b = node(page, "a"), node(page, "b")
    await expect(b).to_have_attribute("data-state", "completed")
    await expect(event_rows(page, "workflow.completed")).to_have_count(1)
    await marks_match_the_clocks(page, env, workflow_id)

    # The first event: nothing has run yet.
    slider = page.get_by_test_id("time-slider")
    await slider.focus()
    await slider.press("Home")
    await expect(page.get_by_test_id("time-label")).to_contain_text("Event 1 of")
    await expect(page.get_by_test_id("historic-banner")).to_be_visible()
    await expect(a).not_to_have_attribute("data-state", "completed")
    await expect(b).not_to_have_attribute("data-state", "completed")

    # As of a's completion: a done, b not yet.
    done_a = page.locator('[data-testid="event-row"][data-type="task.completed"][data-task="a"]')
    await done_a.get_by_test_id("event-travel").click()
    await expect(a).to_have_attribute("data-state", "completed")
    await expect(b).not_to_have_attribute("data-state", "completed")
    await shoot(page, screenshots / "time-travel.png")

    await page.get_by_test_id("tab-timeline").click()
    await expect(page.locator('[data-testid="gantt-bar"][data-worker="gw-worker"]')).to_have_count(
        2
    )
    await page.get_by_test_id("gantt").screenshot(path=screenshots / "timeline.png")

    # Fork from that event: the fork re-runs b, to the same (deterministic) history;
    # a run with other params differs, at its first event.
    await page.get_by_test_id("fork-button").click()
    await expect(page.get_by_test_id("workflow-id")).not_to_have_text(workflow_id)
    await expect(node(page, "b")).to_have_attribute("data-state", "completed", timeout=LIVE)
    await expect(page.get_by_test_id("origin-link")).to_have_text(workflow_id)
    await page.get_by_test_id("tab-diff").click()
    await expect(page.get_by_test_id("diff-input")).to_have_value(workflow_id)  # the origin
    await page.get_by_test_id("diff-button").click()
    await expect(page.get_by_test_id("diff-verdict")).to_have_text("Same history.")
    await page.get_by_test_id("diff-input").fill(other)
    await page.get_by_test_id("diff-button").click()
    await expect(page.get_by_test_id("diff-verdict")).to_contain_text("The histories differ")

    await page.goto(f"{env.url}/console/#/workflows/{workflow_id}")
    await expect(page.get_by_test_id("time-label")).to_contain_text("Live")
    await expect(node(page, "b")).to_have_attribute("data-state", "completed")

    # Parallel tasks: the ∥ marks follow the vector clocks.
    fan = await start(env, FAN, name="console-fan", wait=True)
    await open_workflow(page, env, fan)
    await expect(event_rows(page, "workflow.completed")).to_have_count(1)
    await marks_match_the_clocks(page, env, fan)
    # Close the notices (they would cover the list), at once: one may expire meanwhile.
    await page.evaluate("document.querySelectorAll('.notice-close').forEach((b) => b.click())")
    await page.get_by_test_id("panel-events").screenshot(path=screenshots / "events.png")


async def test_child_workflows_are_links_and_streamed_output_arrives(env: Env, page: Page) -> None:
    child = {"name": "console-child", "tasks": [{"id": "inner", "capability": "echo"}]}
    tasks = [
        {"id": "talk", "capability": "flood", "params": {"n": 30, "size": 8}},
        {"id": "sub", "workflow": child, "depends_on": ["talk"]},
    ]
    parent = await start(env, tasks, name="console-parent", wait=True)
    await sign_in(page, env, ALICE, "alice")
    await open_workflow(page, env, parent)

    # Every streamed token of the task, in order, as text.
    await page.get_by_test_id("tab-output").click()
    talk = page.locator('[data-testid="output-task"][data-task="talk"]')
    text = talk.get_by_test_id("output-text")
    await expect(text).to_contain_text("000029xx", timeout=LIVE)
    tokens = str(await text.text_content())
    assert tokens == "".join(f"{i:06d}xx" for i in range(30))

    sub = node(page, "sub")
    await expect(sub).to_have_attribute("data-state", "completed", timeout=LIVE)
    await page.get_by_test_id("tab-events").click()
    await expect(event_rows(page, "workflow.completed")).to_have_count(1, timeout=LIVE)
    await marks_match_the_clocks(page, env, parent)
    child_id = str(await sub.get_attribute("data-child"))
    await sub.get_by_test_id("child-badge").click()
    await expect(page.get_by_test_id("workflow-id")).to_have_text(child_id)
    await expect(node(page, "inner")).to_have_attribute("data-state", "completed")
    await expect(page.get_by_test_id("parent-link")).to_have_text(parent)
    await page.get_by_test_id("parent-link").click()
    await expect(page.get_by_test_id("workflow-id")).to_have_text(parent)


async def test_feedback_and_a_signal_reach_the_workflow_and_logout_ends_the_session(
    env: Env, page: Page
) -> None:
    tasks = [{"id": "l", "capability": "listen", "params": {"timeout": 60}}]
    workflow_id = await start(env, tasks, name="console-feedback")
    await sign_in(page, env, ALICE, "alice")
    await open_workflow(page, env, workflow_id)
    listen = node(page, "l")
    await expect(listen).to_have_attribute("data-state", "running", timeout=LIVE)

    await page.get_by_test_id("steer-feedback").click()
    await page.get_by_test_id("steer-input").fill("use <em>metric</em> units")
    await page.get_by_test_id("steer-submit").click()
    await expect(listen).to_have_attribute("data-state", "completed", timeout=LIVE)
    await listen.click()
    await expect(page.get_by_test_id("task-result")).to_contain_text("use <em>metric</em> units")
    await expect(event_rows(page, "workflow.intervention_applied")).to_have_count(1)

    # A wait node completes with the signal sent from the page.
    waits = [{"id": "w", "wait": {"signal": "go"}}]
    waiting = await start(env, waits, name="console-signal")
    await open_workflow(page, env, waiting)
    w = node(page, "w")
    await expect(w).to_have_attribute("data-state", "waiting", timeout=LIVE)
    await expect(w.get_by_test_id("wait-badge")).to_have_count(1)
    await w.click()
    await page.get_by_test_id("signal-data").fill('{"ok": "<i>yes</i>"}')
    await page.get_by_test_id("signal-button").click()
    await expect(w).to_have_attribute("data-state", "completed", timeout=LIVE)
    await expect(page.get_by_test_id("task-result")).to_contain_text('"ok": "<i>yes</i>"')

    await page.get_by_test_id("logout").click()
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    await page.reload()
    await expect(page.get_by_test_id("login-form")).to_be_visible()
    status = await page.evaluate(
        "fetch('/console/api/session', {credentials: 'same-origin'}).then((r) => r.status)"
    )
    assert status == 401


async def test_start_a_workflow_from_the_page_and_an_unknown_id_is_said_so(
    env: Env, page: Page
) -> None:
    await sign_in(page, env, ALICE, "alice")
    await page.get_by_test_id("start-button").click()
    definition = {"name": "console-started", "tasks": CHAIN}
    await page.get_by_test_id("start-definition").fill(json.dumps(definition))
    await page.get_by_test_id("start-input").fill('{"from": "the page"}')
    await page.get_by_test_id("start-submit").click()
    await expect(page.get_by_test_id("notice").filter(has_text="Started wf-")).to_be_visible()
    await expect(node(page, "b")).to_have_attribute("data-state", "completed", timeout=LIVE)
    started = str(await page.get_by_test_id("workflow-id").text_content())
    async with env.http(ALICE) as http:
        listed = (await http.get("/workflows", params={"name": "console-started"})).json()
    assert [row["id"] for row in listed["workflows"]] == [started]
    assert "the page" in listed["workflows"][0]["input_preview"]

    await page.get_by_test_id("nav-workflows").click()
    await page.get_by_test_id("start-button").click()  # bad JSON: said, nothing sent
    await page.get_by_test_id("start-definition").fill("{not json")
    await page.get_by_test_id("start-submit").click()
    await expect(page.get_by_test_id("notice").filter(has_text="Not valid JSON")).to_be_visible()

    await page.goto(f"{env.url}/console/#/workflows/wf-nobody-has-this-id")
    await expect(page.get_by_test_id("workflow-missing")).to_have_text(
        "No workflow wf-nobody-has-this-id."
    )


async def test_the_dag_layout_layers_by_longest_path_and_uncrosses_edges(
    env: Env, page: Page
) -> None:
    """dag.js's layout, run in the page: layer = longest path from a root; the
    barycentre ordering puts each node beside what it depends on (no crossing
    where none is needed); a long edge passes through a point per layer."""
    await sign_in(page, env, ALICE, "alice")
    nodes = [
        {"id": "a", "depends_on": []},
        {"id": "b", "depends_on": []},
        {"id": "x", "depends_on": ["b"]},  # listed first, but b is below a
        {"id": "y", "depends_on": ["a"]},
        {"id": "z", "depends_on": ["x", "y"]},
        {"id": "late", "depends_on": ["z", "a"]},  # a -> late spans three layers
    ]
    placed = await page.evaluate(
        """async (nodes) => {
            const { layout } = await import("/console/static/dag.js");
            const { items, edges } = layout(nodes);
            const at = Object.fromEntries(items.map((it) => [it.id, [it.layer, it.y]]));
            const long = edges.find((e) => e.from.id === "a" && e.to.id === "late");
            return { at, chain: long.chain.length };
        }""",
        nodes,
    )
    at = placed["at"]
    assert {name: at[name][0] for name in at} == {
        "a": 0,
        "b": 0,
        "x": 1,
        "y": 1,
        "z": 2,
        "late": 3,
    }
    # a above b, so y (under a) above x (under b): the edges do not cross.
    assert (at["a"][1] < at["b"][1]) == (at["y"][1] < at["x"][1])
    assert placed["chain"] == 4  # a, a point in layers 1 and 2, late
