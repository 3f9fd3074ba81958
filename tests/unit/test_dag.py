"""Graph checks: duplicates, unknown and self dependencies, cycles, indexes."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenticflow.shared.errors import WorkflowDefinitionError, WorkflowGraphError
from agenticflow.shared.graph.dag import (
    dependents_index,
    find_cycle,
    graph_problems,
    sinks,
    validate_graph,
)
from agenticflow.shared.graph.workflow import TaskSpec, WorkflowDefinition


def wf(*tasks: tuple[str, Sequence[str]]) -> WorkflowDefinition:
    """A definition from ``(task id, dependencies)`` pairs."""
    return WorkflowDefinition(
        tasks=tuple(
            TaskSpec(id=tid, capability="cap", depends_on=tuple(deps)) for tid, deps in tasks
        )
    )


def _is_rotation(cycle: list[str], expected: list[str]) -> bool:
    """``cycle`` is a closed path equal to ``expected`` (closed) up to rotation."""
    if len(cycle) != len(expected) + 1 or cycle[0] != cycle[-1]:
        return False
    ring = cycle[:-1]
    return any(ring == expected[i:] + expected[:i] for i in range(len(expected)))


def _assert_closed_path(definition: WorkflowDefinition, cycle: list[str]) -> None:
    deps = {task.id: task.depends_on for task in definition.tasks}
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1, "a cycle visits each task once"
    for here, there in itertools.pairwise(cycle):
        assert there in deps[here], f"{here} does not depend on {there}"


DIAMOND = wf(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"]))


# Valid graphs ----------------------------------------------------------------


def test_valid_diamond() -> None:
    assert graph_problems(DIAMOND) == []
    validate_graph(DIAMOND)
    assert find_cycle(DIAMOND) == []


def test_single_task() -> None:
    single = wf(("only", []))
    assert graph_problems(single) == []
    assert sinks(single) == ["only"]
    assert dependents_index(single) == {"only": []}


def test_dependents_index_diamond() -> None:
    assert dependents_index(DIAMOND) == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


def test_sinks_diamond() -> None:
    assert sinks(DIAMOND) == ["d"]


def test_sinks_several_in_definition_order() -> None:
    definition = wf(("z", []), ("a", ["z"]), ("m", []), ("b", ["z"]))
    assert sinks(definition) == ["a", "m", "b"]
    assert dependents_index(definition) == {"z": ["a", "b"], "a": [], "m": [], "b": []}


# Problems --------------------------------------------------------------------


def test_duplicate_ids() -> None:
    definition = wf(("a", []), ("a", []), ("b", []), ("a", []))
    problems = graph_problems(definition)
    assert problems == ["duplicate task id 'a' (3 tasks share it)"]
    with pytest.raises(WorkflowGraphError, match="duplicate task id 'a'") as info:
        validate_graph(definition)
    assert info.value.problems == problems
    assert info.value.code == "invalid_graph"
    assert isinstance(info.value, WorkflowDefinitionError)


def test_unknown_dependency() -> None:
    definition = wf(("a", []), ("b", ["a", "ghost"]))
    assert graph_problems(definition) == ["task 'b' depends on unknown task 'ghost'"]
    with pytest.raises(WorkflowGraphError, match="unknown task 'ghost'"):
        validate_graph(definition)


def test_self_dependency() -> None:
    definition = wf(("a", ["a"]))
    assert graph_problems(definition) == ["task 'a' depends on itself"]
    with pytest.raises(WorkflowGraphError, match="depends on itself"):
        validate_graph(definition)


def test_repeated_dependency() -> None:
    definition = wf(("a", []), ("b", ["a", "a"]))
    assert graph_problems(definition) == ["task 'b' lists dependency 'a' twice"]
    with pytest.raises(WorkflowGraphError, match="lists dependency 'a' twice"):
        validate_graph(definition)


def test_every_problem_is_listed() -> None:
    definition = wf(("a", []), ("a", []), ("b", ["x", "b"]), ("c", ["a", "a"]))
    problems = graph_problems(definition)
    assert len(problems) == 4
    with pytest.raises(WorkflowGraphError) as info:
        validate_graph(definition)
    assert info.value.problems == problems
    assert str(info.value) == "; ".join(problems)


def test_three_cycle() -> None:
    definition = wf(("a", ["b"]), ("b", ["c"]), ("c", ["a"]))
    problems = graph_problems(definition)
    assert len(problems) == 1
    prefix = "dependency cycle: "
    assert problems[0].startswith(prefix)
    path = problems[0].removeprefix(prefix).split(" -> ")
    assert _is_rotation(path, ["a", "b", "c"])
    with pytest.raises(WorkflowGraphError, match="dependency cycle") as info:
        validate_graph(definition)
    assert any(
        rotation in str(info.value)
        for rotation in ("a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c")
    )


def test_two_cycle() -> None:
    definition = wf(("a", ["b"]), ("b", ["a"]))
    cycle = find_cycle(definition)
    assert _is_rotation(cycle, ["a", "b"])


def test_cycle_reached_from_outside() -> None:
    """The reported cycle excludes the acyclic path that leads into it."""
    definition = wf(("entry", ["x"]), ("x", ["y"]), ("y", ["z"]), ("z", ["x"]), ("free", []))
    cycle = find_cycle(definition)
    assert _is_rotation(cycle, ["x", "y", "z"])
    _assert_closed_path(definition, cycle)


def test_cycle_after_acyclic_component() -> None:
    definition = wf(("a", []), ("b", ["a"]), ("c", ["d"]), ("d", ["c"]))
    assert _is_rotation(find_cycle(definition), ["c", "d"])


def test_find_cycle_skips_unknown_dependencies() -> None:
    assert find_cycle(wf(("a", ["ghost"]))) == []


def test_cycle_not_reported_alongside_other_problems() -> None:
    """Structural problems are reported first; the cycle search needs a sane graph."""
    definition = wf(("a", ["b"]), ("b", ["a", "ghost"]))
    assert graph_problems(definition) == ["task 'b' depends on unknown task 'ghost'"]


# Scale -----------------------------------------------------------------------

N = 10_000


def _chain(n: int) -> list[tuple[str, list[str]]]:
    return [(f"t{i}", [f"t{i - 1}"] if i else []) for i in range(n)]


def test_big_chain_is_fast_and_non_recursive() -> None:
    definition = wf(*_chain(N))
    started = time.perf_counter()
    assert graph_problems(definition) == []
    assert find_cycle(definition) == []
    assert time.perf_counter() - started < 5.0
    assert sinks(definition) == [f"t{N - 1}"]


def test_big_chain_reversed_order() -> None:
    """Roots visited first and last: the DFS walks the whole chain from either end."""
    definition = wf(*reversed(_chain(N)))
    assert find_cycle(definition) == []


def test_big_cycle_is_found() -> None:
    tasks = _chain(N)
    tasks[0] = ("t0", [f"t{N - 1}"])
    definition = wf(*tasks)
    started = time.perf_counter()
    cycle = find_cycle(definition)
    assert time.perf_counter() - started < 5.0
    assert len(cycle) == N + 1
    _assert_closed_path(definition, cycle)
    problems = graph_problems(definition)
    assert len(problems) == 1
    assert problems[0].startswith("dependency cycle: ")


def test_wide_fan_in() -> None:
    definition = wf(*[(f"s{i}", []) for i in range(N)], ("join", [f"s{i}" for i in range(N)]))
    assert graph_problems(definition) == []
    assert sinks(definition) == ["join"]
    assert dependents_index(definition)["s0"] == ["join"]


# Properties ------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, list[str]]]:
    """Random DAGs: task i may depend only on tasks with a lower index."""
    n = draw(st.integers(min_value=1, max_value=25))
    tasks: list[tuple[str, list[str]]] = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True)) if i else []
        tasks.append((f"t{i}", [f"t{j}" for j in deps]))
    return draw(st.permutations(tasks))


def _reachable(tasks: list[tuple[str, list[str]]], start: str) -> set[str]:
    deps = dict(tasks)
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in deps[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


PROPS = settings(database=None, max_examples=200)


@PROPS
@given(dags())
def test_random_dags_have_no_problems(tasks: list[tuple[str, list[str]]]) -> None:
    definition = wf(*tasks)
    assert graph_problems(definition) == []
    assert find_cycle(definition) == []
    index = dependents_index(definition)
    assert sum(len(v) for v in index.values()) == sum(len(deps) for _, deps in tasks)
    for task_id, deps in tasks:
        for dep in deps:
            assert task_id in index[dep]
    assert set(sinks(definition)) == {tid for tid, _ in tasks} - {
        dep for _, deps in tasks for dep in deps
    }
    assert sinks(definition)


@PROPS
@given(dags(), st.data())
def test_back_edge_makes_a_cycle(tasks: list[tuple[str, list[str]]], data: st.DataObject) -> None:
    with_deps = [(tid, deps) for tid, deps in tasks if deps]
    if not with_deps:
        return
    top, _ = data.draw(st.sampled_from(with_deps))
    below = data.draw(st.sampled_from(sorted(_reachable(tasks, top))))
    # ``top`` depends (transitively) on ``below``; make ``below`` depend on ``top``.
    changed = [(tid, [*deps, top] if tid == below else deps) for tid, deps in tasks]
    definition = wf(*changed)
    cycle = find_cycle(definition)
    _assert_closed_path(definition, cycle)
    assert top in cycle
    assert below in cycle
    problems = graph_problems(definition)
    assert len(problems) == 1
    assert problems[0] == "dependency cycle: " + " -> ".join(cycle)
    with pytest.raises(WorkflowGraphError):
        validate_graph(definition)


@PROPS
@given(dags(), st.data())
def test_any_extra_edge_cycles_iff_reachable(
    tasks: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    ids = [tid for tid, _ in tasks]
    source = data.draw(st.sampled_from(ids))
    target = data.draw(st.sampled_from(ids))
    deps_of_source = dict(tasks)[source]
    if target == source or target in deps_of_source:
        return
    changed = [(tid, [*deps, target] if tid == source else deps) for tid, deps in tasks]
    definition = wf(*changed)
    cyclic = source in _reachable(tasks, target)
    cycle = find_cycle(definition)
    assert bool(cycle) == cyclic
    if cycle:
        _assert_closed_path(definition, cycle)
