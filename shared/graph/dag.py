"""Graph checks and the in-degree index that makes readiness O(1).

Pure functions over a :class:`~agenticflow.shared.graph.workflow.WorkflowDefinition`.
"""

from __future__ import annotations

from collections import Counter

from agenticflow.shared.errors import WorkflowGraphError
from agenticflow.shared.graph.hierarchy import MAX_DEPTH
from agenticflow.shared.graph.workflow import WorkflowDefinition


def graph_problems(definition: WorkflowDefinition, *, depth: int = 1) -> list[str]:
    """Every reason the graph is not a valid DAG (empty when it is), child
    workflows included: a problem of one names its path, e.g.
    ``tasks[1].workflow: dependency cycle: a -> b -> a``. ``depth`` is the
    definition's nesting level (the top level is 1; see ``MAX_DEPTH``)."""
    return [*_own_problems(definition), *_child_problems(definition, depth, "")]


def _child_problems(definition: WorkflowDefinition, depth: int, path: str) -> list[str]:
    problems: list[str] = []
    for index, task in enumerate(definition.tasks):
        if task.workflow is None:
            continue
        where = f"{path}tasks[{index}].workflow"
        if depth >= MAX_DEPTH:
            problems.append(f"{where}: child workflows nest deeper than {MAX_DEPTH} levels")
            continue
        problems.extend(f"{where}: {problem}" for problem in _own_problems(task.workflow))
        problems.extend(_child_problems(task.workflow, depth + 1, f"{where}."))
    return problems


def _own_problems(definition: WorkflowDefinition) -> list[str]:
    problems: list[str] = []
    counts = Counter(task.id for task in definition.tasks)
    problems.extend(
        f"duplicate task id {task_id!r} ({n} tasks share it)"
        for task_id, n in counts.items()
        if n > 1
    )
    ids = set(counts)
    for task in definition.tasks:
        seen: set[str] = set()
        for dep in task.depends_on:
            if dep not in ids:
                problems.append(f"task {task.id!r} depends on unknown task {dep!r}")
            elif dep == task.id:
                problems.append(f"task {task.id!r} depends on itself")
            elif dep in seen:
                problems.append(f"task {task.id!r} lists dependency {dep!r} twice")
            seen.add(dep)
    if problems:
        return problems
    cycle = find_cycle(definition)
    if cycle:
        problems.append("dependency cycle: " + " -> ".join(cycle))
    return problems


def find_cycle(definition: WorkflowDefinition) -> list[str]:
    """One dependency cycle as a closed path of task ids, or an empty list."""
    deps = {task.id: task.depends_on for task in definition.tasks}
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for root, root_deps in deps.items():
        if color[root] != white:
            continue
        path: list[str] = [root]
        stack = [iter(root_deps)]
        color[root] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = black
                stack.pop()
                continue
            if nxt not in color:
                continue
            if color[nxt] == grey:
                start = path.index(nxt)
                return [*path[start:], nxt]
            if color[nxt] == white:
                color[nxt] = grey
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return []


def validate_graph(definition: WorkflowDefinition) -> None:
    """Raise WorkflowGraphError listing every graph problem."""
    problems = graph_problems(definition)
    if problems:
        raise WorkflowGraphError("; ".join(problems), problems=problems)


def dependents_index(definition: WorkflowDefinition) -> dict[str, list[str]]:
    """Task id -> ids of the tasks that depend on it."""
    index: dict[str, list[str]] = {task.id: [] for task in definition.tasks}
    for task in definition.tasks:
        for dep in task.depends_on:
            index[dep].append(task.id)
    return index


def sinks(definition: WorkflowDefinition) -> list[str]:
    """Tasks nothing depends on: their results are the workflow's output."""
    index = dependents_index(definition)
    return [task_id for task_id, deps in index.items() if not deps]


__all__ = ["dependents_index", "find_cycle", "graph_problems", "sinks", "validate_graph"]
