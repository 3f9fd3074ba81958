"""How long planning takes: ``python -m benchmarks.supervisor`` (``make bench-supervisor``).

The rules planner plans queries of growing size against a catalog of 40
capabilities (the examples' and generic ones) and the examples' templates:

- **chain N**: ``fetch …, then summarize …, then …``: N sequential steps;
- **parallel N**: N/2 stages of two parallel parts each;
- **pipeline N**: ``for each of [N/2 items]: summarize then translate``;
- **hierarchical**: a template as a sub-plan, then steps;

and, for each, the compile to a workflow definition (``Plan.to_workflow``,
the graph checks included). It prints p50 / p99 per plan in milliseconds;
``benchmarks/results/supervisor.json`` keeps the figures and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agenticflow.coordinator.supervisor import Catalog, Plan, RulesPlanner, Templates

RESULTS = Path(__file__).parent / "results" / "supervisor.json"
TEMPLATES = Path(__file__).resolve().parents[1] / "examples" / "templates"
VERBS = ["fetch", "summarize", "translate", "classify", "email", "review", "analyze", "report"]


def catalog() -> Catalog:
    """40 capabilities: the generic verbs, the examples', and padding."""
    names = {verb: f"{verb} things" for verb in VERBS}
    names |= {
        "research": "Extract candidate claims about a topic",
        "write": "Compose a draft article",
        "fact_check": "Verify claims",
        "edit": "Remove unverified claims",
        "triage": "Classify a customer message",
        "technical_resolution": "Propose a fix",
        "manager_escalation": "Escalate to a manager",
        "sentiment_analysis": "Score headlines",
        "technical_analysis": "Moving averages",
        "risk_assessment": "Risk level",
        "position_sizing": "Size a position",
    }
    names |= {f"capability_{i}": f"padding capability number {i}" for i in range(40 - len(names))}
    return Catalog.offline(names)


def chain(n: int) -> str:
    return ", then ".join(f"{VERBS[i % len(VERBS)]} part {i}" for i in range(n))


def parallel(n: int) -> str:
    stages = [
        f"{VERBS[(2 * i) % len(VERBS)]} part {i} and {VERBS[(2 * i + 1) % len(VERBS)]} part {i}"
        for i in range(n // 2)
    ]
    return ", then ".join(stages)


def pipeline(n: int) -> str:
    items = ", ".join(f"doc{i}.txt" for i in range(n // 2))
    return f"For each of [{items}]: summarize then translate"


QUERIES: dict[str, Callable[[], str]] = {
    "chain 12": lambda: chain(12),
    "chain 50": lambda: chain(50),
    "parallel 12": lambda: parallel(12),
    "pipeline 12": lambda: pipeline(12),
    "pipeline 200": lambda: pipeline(200),
    "hierarchical": lambda: (
        "Write an article about honeybees and fact check it, then translate it, then email it"
    ),
}


def measure(
    query: str, runs: int, planner: RulesPlanner, cat: Catalog, tpl: Templates
) -> dict[str, Any]:
    plan_ms: list[float] = []
    compile_ms: list[float] = []
    plan: Plan | None = None
    for _ in range(runs):
        started = time.perf_counter()
        plan = planner.plan_now(query, catalog=cat, templates=tpl)
        planned = time.perf_counter()
        if plan.strategy != "hierarchical":
            plan.to_workflow()
        compile_ms.append((time.perf_counter() - planned) * 1000)
        plan_ms.append((planned - started) * 1000)
    assert plan is not None
    plan_ms.sort()
    compile_ms.sort()
    return {
        "steps": plan.count(),
        "strategy": plan.strategy,
        "plan_p50_ms": round(statistics.median(plan_ms), 3),
        "plan_p99_ms": round(plan_ms[min(len(plan_ms) - 1, int(len(plan_ms) * 0.99))], 3),
        "compile_p50_ms": round(statistics.median(compile_ms), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    planner, cat, tpl = RulesPlanner(), catalog(), Templates.load([TEMPLATES])
    results = {
        name: measure(make(), args.runs, planner, cat, tpl) for name, make in QUERIES.items()
    }
    machine = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(f"rules planner, {len(cat)} capabilities, {args.runs} runs each, {machine['cpus']} CPUs")
    print(
        f"{'query':<14}{'steps':>6}  {'strategy':<13}"
        f"{'plan p50':>10}{'plan p99':>10}{'compile p50':>13}"
    )
    for name, row in results.items():
        print(
            f"{name:<14}{row['steps']:>6}  {row['strategy']:<13}{row['plan_p50_ms']:>8.2f}ms"
            f"{row['plan_p99_ms']:>8.2f}ms{row['compile_p50_ms']:>11.2f}ms"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"machine": machine, "runs": args.runs, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
