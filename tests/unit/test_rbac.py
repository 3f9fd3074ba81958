"""RBAC: policies, parameter rules, and the tool box that enforces them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agenticflow.shared.errors import ConfigError, ToolPermissionError
from agenticflow.shared.security.rbac import (
    UNATTENDED,
    Policy,
    grants,
    load_policy,
    submit_permission,
)
from agenticflow.shared.wire.events import TaskToolCalled
from agenticflow.worker.tools import MemoryToolState, ToolBox, ToolRegistry, tool

POLICY = """
[roles.reader]
permissions = ["fs:read"]
[[roles.reader.rules]]
tool = "read"
param = "path"
paths = ["/data/reports"]

[roles.archivist]
permissions = ["fs:*"]
[[roles.archivist.rules]]
tool = "read"
param = "path"
paths = ["/data/archive"]

[roles.fetcher]
permissions = ["net:http"]
[[roles.fetcher.rules]]
tool = "*"
param = "url"
hosts = ["api.example.com", "*.internal"]

[principals]
"agent:researcher" = ["reader", "fetcher"]
"agent:librarian" = ["reader", "archivist"]
"""


class PathIn(BaseModel):
    path: str


class UrlIn(BaseModel):
    url: str


@tool(permissions={"fs:read"})
async def read(params: PathIn) -> str:
    return f"read {params.path}"


@tool(permissions={"net:http"})
async def fetch(params: UrlIn) -> str:
    return f"fetched {params.url}"


@tool(permissions={"fs:write"})
async def write(params: PathIn) -> str:
    return f"wrote {params.path}"


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    (tmp_path / "policy.toml").write_text(POLICY)
    found = load_policy(None, tmp_path)
    assert found is not None
    return found


def test_wildcards_grant_what_they_name_and_no_more() -> None:
    assert grants({"fs:*"}, "fs:read")
    assert grants({"*"}, "anything")
    assert grants({"workflow:abort"}, "workflow:abort")
    assert not grants({"fs:*"}, "net:http")
    assert not grants({"workflow:pause"}, "workflow:abort")
    assert not grants(set(), "fs:read")


@pytest.mark.parametrize(
    ("principal", "tool_name", "params", "refusal"),
    [
        ("agent:researcher", "read", {"path": "/data/reports/q3.csv"}, None),
        ("agent:researcher", "read", {"path": "/data/reports"}, None),
        (
            "agent:researcher",
            "read",
            {"path": "/data/reports/../../etc/passwd"},
            "inside /data/reports",
        ),
        ("agent:researcher", "read", {"path": "/data/reports-old/x"}, "inside /data/reports"),
        ("agent:researcher", "read", {"path": "reports/x"}, "inside /data/reports"),
        ("agent:researcher", "read", {"path": "/data/reports/\x00x"}, "inside"),
        ("agent:researcher", "fetch", {"url": "https://api.example.com/v1"}, None),
        ("agent:researcher", "fetch", {"url": "http://db.internal:5432/"}, None),
        ("agent:researcher", "fetch", {"url": "https://api.example.com.evil.io/"}, "a host among"),
        ("agent:researcher", "fetch", {"url": "http://evil.io/?h=api.example.com"}, "a host among"),
        ("agent:researcher", "write", {"path": "/data/reports/x"}, "lacks permission fs:write"),
        ("agent:librarian", "read", {"path": "/data/archive/1990"}, None),  # either role's rule
        ("agent:librarian", "write", {"path": "/anywhere"}, None),  # no rule names write
        ("agent:stranger", "read", {"path": "/data/reports/x"}, "lacks permission fs:read"),
    ],
)
def test_param_rules(
    policy: Policy, principal: str, tool_name: str, params: dict[str, Any], refusal: str | None
) -> None:
    found = {"read": read, "fetch": fetch, "write": write}[tool_name]
    denial = policy.context(principal).denial(tool_name, found.permissions, params)
    if refusal is None:
        assert denial is None
    else:
        assert denial is not None
        assert refusal in denial
        assert principal in denial


def test_path_rules_hold_on_resolved_paths(tmp_path: Path) -> None:
    """A symbolic link under an allowed prefix that leads out of it is refused
    (the rule was lexical: the link passed); one that stays inside is fine."""
    reports, secret = tmp_path / "reports", tmp_path / "secret"
    reports.mkdir()
    secret.mkdir()
    (secret / "key").write_text("s")
    (reports / "out").symlink_to(secret)
    (reports / "sub").mkdir()
    (reports / "in").symlink_to(reports / "sub")
    text = f"""
[roles.reader]
permissions = ["fs:read"]
[[roles.reader.rules]]
tool = "read"
param = "path"
paths = ["{reports}"]
[principals]
"agent:reader" = ["reader"]
"""
    (tmp_path / "policy.toml").write_text(text)
    policy = load_policy(tmp_path / "policy.toml", None)
    assert policy is not None
    context = policy.context("agent:reader")
    assert context.denial("read", read.permissions, {"path": str(reports / "a.txt")}) is None
    assert context.denial("read", read.permissions, {"path": str(reports / "in" / "x")}) is None
    denial = context.denial("read", read.permissions, {"path": str(reports / "out" / "key")})
    assert denial is not None
    assert "inside" in denial
    escape = context.denial("read", read.permissions, {"path": str(reports / ".." / "secret")})
    assert escape is not None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[roles.a]\npermissions = 'x'", "must be a list"),
        ("[principals]\nbob = ['ghost']", "unknown role"),
        ("[roles.a]\n[[roles.a.rules]]\ntool = 't'\nparam = 'p'", "sets none of"),
        ("[roles.a]\n[[roles.a.rules]]\ntool = 't'\nparam = 'p'\npattern = '('", "bad pattern"),
        ("[roles.a]\n[[roles.a.rules]]\nparam = 'p'\npaths = ['/']", "needs a tool and a param"),
        ("roles = [", "not valid TOML"),
    ],
)
def test_a_bad_policy_is_a_clear_config_error(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_policy(tmp_path / "p.toml", None)


def test_no_policy_means_rbac_off(tmp_path: Path) -> None:
    assert load_policy(None, tmp_path) is None
    assert load_policy(None, None) is None


async def test_the_tool_box_enforces_the_policy_and_audits_the_denial(policy: Policy) -> None:
    records: list[TaskToolCalled] = []

    async def audit(record: TaskToolCalled, _: str) -> None:
        records.append(record)

    box = ToolBox(
        ToolRegistry([read, fetch], permissions={"*"}),  # the agent itself grants everything
        state=MemoryToolState(),
        workflow_id="wf",
        task_id="t",
        agent="researcher",
        publish=audit,
        security=policy.context("agent:researcher"),
    )
    assert await box.call("read", path="/data/reports/q3") == "read /data/reports/q3"
    with pytest.raises(
        ToolPermissionError, match=r"policy refuses tool 'read'.*inside /data/reports"
    ):
        await box.call("read", path="/etc/passwd")
    assert [(r.tool, r.outcome) for r in records] == [("read", "ok"), ("read", "denied")]
    assert "inside /data/reports" in (records[1].error.message if records[1].error else "")
    unchecked = ToolBox(ToolRegistry([read], permissions={"*"}), state=MemoryToolState())
    assert await unchecked.call("read", path="/etc/passwd") == "read /etc/passwd"  # the control


def test_the_security_guides_policy_is_valid_and_means_what_it_says() -> None:
    guide = Path(__file__).resolve().parents[2] / "docs" / "guides" / "security.md"
    text = guide.read_text()
    block = re.search(r"```toml\n(\[roles\.researcher\].*?)```", text, re.S)
    assert block is not None
    policy = Policy.from_dict(tomllib.loads(block.group(1)))
    researcher = policy.context("agent:researcher")
    assert researcher.denial("read_file", {"fs:read"}, {"path": "/data/reports/a"}) is None
    assert researcher.denial("read_file", {"fs:read"}, {"path": "/etc/passwd"}) is not None
    assert policy.context("alice").can("workflow:abort")
    assert not researcher.can("workflow:abort")


# Submission rights ------------------------------------------------------------
SUBMITTERS = Policy.from_dict(
    {
        "roles": {
            "operator": {"permissions": ["workflow:*"]},
            "reporter": {"permissions": ["workflow:submit:summarize", "workflow:submit:report_*"]},
            "any": {"permissions": ["workflow:submit:*"]},
            "commenter": {"permissions": ["workflow:feedback"]},
            "robot": {"permissions": ["planner:unattended", "workflow:submit:echo"]},
        },
        "principals": {
            "alice": ["operator"],
            "bob": ["reporter"],
            "carol": ["any"],
            "mallory": ["commenter"],
            "cron": ["robot"],
        },
    }
)


def test_submitting_a_capability_needs_workflow_submit_for_it() -> None:
    assert submit_permission("pay") == "workflow:submit:pay"
    bob = SUBMITTERS.context("bob")
    assert bob.may_submit("summarize")
    assert bob.may_submit("report_weekly")
    assert not bob.may_submit("reporter")  # the wildcard is report_*, not report*
    assert not bob.may_submit("pay")
    assert bob.submit_denial(["summarize", "report_q3"]) is None
    assert bob.submit_denial(["summarize", "pay", "wire"]) == (
        "bob may not submit capabilities 'pay', 'wire' (it lacks workflow:submit:pay; "
        "roles: reporter)"
    )
    # workflow:* and workflow:submit:* cover every capability; feedback covers none.
    assert SUBMITTERS.context("alice").submit_denial(["pay", "x"]) is None
    assert SUBMITTERS.context("carol").submit_denial(["pay", "x"]) is None
    assert SUBMITTERS.context("mallory").submit_denial(["x"]) == (
        "mallory may not submit capability 'x' (it lacks workflow:submit:x; roles: commenter)"
    )
    stranger = SUBMITTERS.context("stranger").submit_denial(["x"])
    assert stranger is not None
    assert "roles: none" in stranger
    many = SUBMITTERS.context("mallory").submit_denial([f"c{i}" for i in range(8)])
    assert many is not None
    assert "and 3 more" in many


def test_unattended_planning_is_a_permission_of_its_own() -> None:
    assert SUBMITTERS.context("cron").can(UNATTENDED)
    assert not SUBMITTERS.context("alice").can(UNATTENDED)  # workflow:* is not planner:*
    assert not SUBMITTERS.context("carol").can(UNATTENDED)
