"""The supervisor against the real cluster: plan from the live registry, run, report.

The session cluster's workers serve the test app, which includes
``summarize``, ``translate`` and ``write`` agents (tests/support/app.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from agenticflow.cluster.dev import DevCluster
from agenticflow.coordinator.client import Client
from agenticflow.coordinator.supervisor import CapabilityInfo, Catalog, Supervisor, Templates
from agenticflow.shared.errors import PlanningError, UnservedCapabilityError
from tests.integration.helpers import agenticflow

ECHO_TEMPLATE = """
template: shout
description: Echo a word, then upper-case it.
keywords: [shout, yell]
params:
  word:
    description: what to shout
    default: hello
    extract: ['(?i)shout\\s+(?P<value>\\w+)']
workflow:
  name: shout
  tasks:
    - {id: say, capability: echo, params: {value: "{{word}}"}}
    - {id: loud, capability: translate, depends_on: [say]}
"""


def cli(
    cluster: DevCluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return agenticflow(cluster.settings, *args, env=env)


@pytest.fixture
def supervisor(client: Client, cluster: DevCluster) -> Supervisor:
    return Supervisor(client=client, settings=cluster.settings, templates=Templates.load())


async def test_catalog_reads_the_live_agents(supervisor: Supervisor) -> None:
    catalog = await supervisor.catalog()
    assert {"summarize", "translate", "write", "echo"} <= set(catalog.names())
    summarize = catalog.capabilities["summarize"]
    assert summarize.workers == 2
    assert summarize.instances >= 2
    assert summarize.description == "Summarise a document into a brief"
    assert not any("~" in name for name in catalog.names())


async def test_a_sequential_query_runs_and_hands_results_on(
    supervisor: Supervisor, client: Client
) -> None:
    planned = await supervisor.plan(
        "Summarize the memo about the quarterly numbers, then translate it"
    )
    assert planned.plan.strategy == "sequential"
    assert [s.capability for s in planned.plan.steps] == ["summarize", "translate"]
    workflow_id = await supervisor.submit(planned.plan)
    state = await client.wait(workflow_id, timeout=60)
    assert state.status.value == "completed", state.public_view()
    assert state.tasks["summarize"].result["text"] == "Summarize the memo about the"
    assert state.tasks["translate"].result["text"] == "SUMMARIZE THE MEMO ABOUT THE"


async def test_a_pipeline_moves_each_item_on_by_itself(
    supervisor: Supervisor, client: Client
) -> None:
    planned = await supervisor.plan(
        "For each of [alpha one, beta two, gamma three]: summarize then translate"
    )
    assert planned.plan.strategy == "pipeline"
    workflow_id = await supervisor.submit(planned.plan)
    state = await client.wait(workflow_id, timeout=60)
    assert state.status.value == "completed", state.public_view()
    assert [state.tasks[f"translate-{i}"].result["text"] for i in (1, 2, 3)] == [
        "ALPHA ONE",
        "BETA TWO",
        "GAMMA THREE",
    ]
    events = await client.events(workflow_id)
    started = {e.task_id: e.seq or 0 for e in events if e.type.value == "task.started"}
    completed = {e.task_id: e.seq or 0 for e in events if e.type.value == "task.completed"}
    for i in (1, 2, 3):  # each item's second stage waited for its own first stage only
        assert started[f"translate-{i}"] > completed[f"summarize-{i}"]


async def test_unplannable_and_unserved_queries_fail_before_anything_runs(
    supervisor: Supervisor, client: Client
) -> None:
    with pytest.raises(PlanningError, match="no live agent can do 'juggle flaming torches'"):
        await supervisor.plan("juggle flaming torches")
    with pytest.raises(UnservedCapabilityError, match="no live agent serves") as caught:
        await supervisor.plan("Should I buy ACME? Use capital 20000")  # no trading workers
    assert "sentiment_analysis" in caught.value.capabilities
    # Listed in the registry, but no live instance (every one suspended).
    catalog = Catalog([*(await supervisor.catalog()).capabilities.values(), CapabilityInfo("fly")])
    with pytest.raises(UnservedCapabilityError, match="no live agent serves fly"):
        await supervisor.plan("fly the drone", catalog=catalog)


def test_ask_dry_run_prints_the_plan_and_runs_nothing(cluster: DevCluster) -> None:
    done = cli(cluster, "ask", "Summarize the report, then translate it", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["strategy"] == "sequential"
    assert [(s["id"], s["capability"], s["depends_on"]) for s in plan["steps"]] == [
        ("summarize", "summarize", []),
        ("translate", "translate", ["summarize"]),
    ]
    assert plan["steps"][0]["why"].startswith("matched 'summarize'; ")
    assert "instances on 2 workers" in plan["steps"][0]["why"]
    assert plan["planning_ms"] >= 0
    text = cli(cluster, "ask", "Summarize the report, then translate it", "--dry-run")
    assert text.returncode == 0, text.stderr
    assert "sequential workflow, 2 steps" in text.stdout
    assert "after summarize" in text.stdout
    assert "why: matched" in text.stdout


def test_ask_runs_the_plan_and_waits(cluster: DevCluster) -> None:
    done = cli(
        cluster, "ask", "Write about lighthouses then translate it", "--yes", "--wait", "--json"
    )
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["state"] == "completed"
    assert final["tasks"]["translate"]["result"]["text"] == "ARTICLE: WRITE ABOUT LIGHTHOUSES"


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("", 2, "the query is empty"),
        ("juggle flaming torches", 2, "no live agent can do"),
        ("Should I buy ACME? Use capital 20000", 2, "no live agent serves"),
    ],
)
def test_ask_refuses_bad_queries_with_exit_2(
    cluster: DevCluster, query: str, code: int, message: str
) -> None:
    done = cli(cluster, "ask", query, "--dry-run")
    assert done.returncode == code, done.stderr
    assert message in done.stderr


def test_submit_template_with_parameters(cluster: DevCluster, tmp_path: Path) -> None:
    (tmp_path / "shout.yaml").write_text(ECHO_TEMPLATE, encoding="utf-8")
    env = {"AGENTICFLOW_TEMPLATES_PATH": str(tmp_path)}
    listed = cli(cluster, "templates", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "shout" in [t["name"] for t in json.loads(listed.stdout)]
    done = cli(
        cluster,
        "submit",
        "--template",
        "shout",
        "--param",
        "word=ahoy",
        "--wait",
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["tasks"]["say"]["result"]["params"] == {"value": "ahoy"}
    assert "'VALUE': 'AHOY'" in final["tasks"]["loud"]["result"]["text"]
    bad = cli(cluster, "submit", "--template", "shout", "--param", "volume=11", env=env)
    assert bad.returncode == 2
    assert "has no parameter 'volume' (it takes: word)" in bad.stderr
    asked = cli(cluster, "ask", "shout yo", "--yes", "--wait", "--json", env=env)
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["tasks"]["say"]["result"]["params"] == {"value": "yo"}


def test_llm_planner_down_falls_back_to_rules_and_says_so(cluster: DevCluster) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "AGENTICFLOW_LLM_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "AGENTICFLOW_LLM_MODEL": "test-model",
        "AGENTICFLOW_LLM_TIMEOUT_S": "2",
        "AGENTICFLOW_LLM_MAX_ATTEMPTS": "1",
    }
    done = cli(
        cluster, "ask", "Summarize the memo", "--planner", "llm", "--dry-run", "--json", env=env
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["planner"] == "rules"
    assert any("llm planner was unavailable" in note for note in plan["notes"])
    strict = cli(
        cluster,
        "ask",
        "Summarize the memo",
        "--planner",
        "llm",
        "--no-fallback",
        "--dry-run",
        env=env,
    )
    assert strict.returncode == 3
    assert "planner unavailable" in strict.stderr


async def test_a_hierarchical_plan_runs_its_template_as_a_child_workflow(
    cluster: DevCluster, client: Client, tmp_path: Path
) -> None:
    (tmp_path / "shout.yaml").write_text(ECHO_TEMPLATE, encoding="utf-8")
    supervisor = Supervisor(
        client=client, settings=cluster.settings, templates=Templates.load([tmp_path])
    )
    planned = await supervisor.plan("Shout ahoy and yell, then summarize it")
    assert planned.plan.strategy == "hierarchical"
    shout, summary = planned.plan.steps
    assert shout.capability is None
    assert [s.id for s in shout.steps or ()] == ["say", "loud"]
    assert summary.depends_on == ("shout",)
    workflow_id = await supervisor.submit(planned.plan)
    state = await client.wait(workflow_id, timeout=60)
    assert state.status.value == "completed", state.public_view()
    child_id = state.tasks["shout"].child
    assert child_id
    child = await client.wait(child_id, timeout=10)
    assert child.status.value == "completed"
    assert child.tasks["say"].result["params"] == {"value": "ahoy"}
    # The child's output (its sink task's result) was the summarizer's input.
    assert state.tasks["summarize"].result["text"].startswith("{'loud': {'text':")
