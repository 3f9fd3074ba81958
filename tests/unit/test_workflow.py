"""Workflow definitions: parsing, file loading, field errors and retry policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agenticflow.shared.errors import WorkflowDefinitionError
from agenticflow.shared.graph.workflow import (
    RetryPolicy,
    TaskSpec,
    WorkflowDefinition,
    load_workflow_file,
    parse_workflow,
)

VALID_YAML = """\
name: etl
description: fetch then sum
default_timeout_s: 30
default_retry:
  max_attempts: 4
  initial_interval_s: 1
tasks:
  - id: fetch
    capability: http
    params:
      url: https://example.com
      headers: {accept: json}
  - id: sum.up
    capability: math
    depends_on: [fetch]
    timeout_s: 2.5
    retry:
      max_attempts: 2
      non_retryable: [KeyError]
"""

VALID_DATA: dict[str, Any] = {
    "name": "etl",
    "tasks": [
        {"id": "fetch", "capability": "http"},
        {"id": "sum", "capability": "math", "depends_on": ["fetch"]},
    ],
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# Loading files ---------------------------------------------------------------


def test_load_valid_yaml(tmp_path: Path) -> None:
    definition = load_workflow_file(write(tmp_path, "wf.yaml", VALID_YAML))
    assert definition.name == "etl"
    assert definition.description == "fetch then sum"
    assert [t.id for t in definition.tasks] == ["fetch", "sum.up"]
    fetch, total = definition.tasks
    assert fetch.params == {"url": "https://example.com", "headers": {"accept": "json"}}
    assert fetch.depends_on == ()
    assert total.depends_on == ("fetch",)
    assert definition.timeout_of(fetch) == 30
    assert definition.timeout_of(total) == 2.5
    assert definition.retry_of(fetch) == RetryPolicy(max_attempts=4, initial_interval_s=1)
    assert definition.retry_of(total).max_attempts == 2
    assert definition.retry_of(total).non_retryable == ("KeyError",)


def test_load_valid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "wf.json", json.dumps(VALID_DATA))
    definition = load_workflow_file(str(path))
    assert definition == parse_workflow(VALID_DATA)
    assert definition.default_retry == RetryPolicy()
    assert definition.timeout_of(definition.tasks[0]) is None


def test_load_yml_and_unknown_suffix_as_yaml(tmp_path: Path) -> None:
    expected = load_workflow_file(write(tmp_path, "a.yaml", VALID_YAML))
    assert load_workflow_file(write(tmp_path, "b.yml", VALID_YAML)) == expected
    assert load_workflow_file(write(tmp_path, "c", VALID_YAML)) == expected


def test_json_content_in_yaml_file(tmp_path: Path) -> None:
    path = write(tmp_path, "wf.yaml", json.dumps(VALID_DATA))
    assert load_workflow_file(path) == parse_workflow(VALID_DATA)


def test_definition_round_trips_through_dump(tmp_path: Path) -> None:
    definition = load_workflow_file(write(tmp_path, "wf.yaml", VALID_YAML))
    assert parse_workflow(definition.model_dump()) == definition
    assert parse_workflow(json.loads(definition.model_dump_json())) == definition


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(WorkflowDefinitionError, match="cannot read") as info:
        load_workflow_file(path)
    assert str(path) in str(info.value)
    assert info.value.problems == [str(info.value)]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowDefinitionError, match="cannot read"):
        load_workflow_file(tmp_path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "tasks: [unclosed\n  - : :\n")
    with pytest.raises(WorkflowDefinitionError, match=r"not valid \.yaml") as info:
        load_workflow_file(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, Exception)


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{"tasks": [}')
    with pytest.raises(WorkflowDefinitionError, match=r"not valid \.json") as info:
        load_workflow_file(path)
    assert str(path) in str(info.value)


def test_invalid_yaml_without_suffix(tmp_path: Path) -> None:
    with pytest.raises(WorkflowDefinitionError, match="not valid YAML"):
        load_workflow_file(write(tmp_path, "bad", "a: [\n"))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n", "42\n"])
def test_yaml_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "wf.yaml", text)
    with pytest.raises(WorkflowDefinitionError, match="must be a mapping") as info:
        load_workflow_file(path)
    assert str(info.value).startswith(str(path))


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\ntasks: []\n")
    with pytest.raises(WorkflowDefinitionError):
        load_workflow_file(path)


# Field errors ----------------------------------------------------------------


def test_missing_capability_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "wf.yaml", "tasks:\n  - id: a\n")
    with pytest.raises(WorkflowDefinitionError) as info:
        load_workflow_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "tasks[0].capability" in message
    assert f"{path}: tasks[0].capability: Field required" in info.value.problems


def test_invalid_task_gives_only_its_own_problem() -> None:
    with pytest.raises(WorkflowDefinitionError) as info:
        parse_workflow({"tasks": [{"id": "a"}]}, source="wf.yaml")
    assert info.value.problems == ["wf.yaml: tasks[0].capability: Field required"]


def test_nested_field_path(tmp_path: Path) -> None:
    text = json.dumps(
        {
            "tasks": [
                {"id": "a", "capability": "c"},
                {"id": "b", "capability": "c", "retry": {"max_attempts": 0}},
            ]
        }
    )
    with pytest.raises(WorkflowDefinitionError, match=r"tasks\[1\]\.retry\.max_attempts"):
        load_workflow_file(write(tmp_path, "wf.json", text))


def test_every_field_problem_is_listed() -> None:
    data = {"name": "", "tasks": [{"id": "a"}, {"capability": "c"}]}
    with pytest.raises(WorkflowDefinitionError) as info:
        parse_workflow(data, source="mine")
    problems = info.value.problems
    assert all(p.startswith("mine: ") for p in problems)
    assert {p.split(": ")[1] for p in problems} >= {"name", "tasks[0].capability", "tasks[1].id"}
    assert str(info.value) == "; ".join(problems)


def test_default_source_name() -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"^workflow: tasks: "):
        parse_workflow({"tasks": []})


@pytest.mark.parametrize("data", [None, [], "tasks", 3, [VALID_DATA]])
def test_not_a_mapping(data: Any) -> None:
    with pytest.raises(WorkflowDefinitionError, match="must be a mapping with 'tasks'"):
        parse_workflow(data, source="x.yaml")


def test_missing_tasks() -> None:
    with pytest.raises(WorkflowDefinitionError, match="tasks: Field required"):
        parse_workflow({"name": "n"})


def test_empty_tasks() -> None:
    with pytest.raises(WorkflowDefinitionError, match="tasks: "):
        parse_workflow({"tasks": []})


def test_unknown_top_level_field() -> None:
    with pytest.raises(WorkflowDefinitionError, match="taks: Extra inputs are not permitted"):
        parse_workflow({**VALID_DATA, "taks": []})


def test_unknown_task_field(tmp_path: Path) -> None:
    path = write(tmp_path, "wf.yaml", "tasks:\n  - id: a\n    capability: c\n    dependson: [b]\n")
    with pytest.raises(WorkflowDefinitionError, match=r"tasks\[0\]\.dependson: Extra inputs"):
        load_workflow_file(path)


def test_unknown_retry_field() -> None:
    data = {"tasks": [{"id": "a", "capability": "c", "retry": {"attempts": 3}}]}
    with pytest.raises(WorkflowDefinitionError, match=r"tasks\[0\]\.retry\.attempts"):
        parse_workflow(data)


@pytest.mark.parametrize("task_id", ["a:b", "has space", "", "x" * 65, "a/b", "é", "a*"])
def test_bad_task_id_rejected(task_id: str) -> None:
    data = {"tasks": [{"id": task_id, "capability": "c"}]}
    with pytest.raises(WorkflowDefinitionError, match=r"tasks\[0\]\.id: .*task id must be"):
        parse_workflow(data)


@pytest.mark.parametrize("task_id", ["a", "fetch.v2", "A_b-c.9", "x" * 64])
def test_good_task_ids(task_id: str) -> None:
    assert parse_workflow({"tasks": [{"id": task_id, "capability": "c"}]}).tasks[0].id == task_id


@pytest.mark.parametrize("capability", ["a.b", "a:b", "a b", "", "x" * 65, "a*", "a>"])
def test_bad_capability_rejected(capability: str) -> None:
    data = {"tasks": [{"id": "a", "capability": capability}]}
    with pytest.raises(WorkflowDefinitionError, match=r"tasks\[0\]\.capability: .*capability"):
        parse_workflow(data)


@pytest.mark.parametrize("field", ["id", "capability"])
def test_trailing_newline_rejected(field: str) -> None:
    task = {"id": "a", "capability": "c"} | {field: "ok\n"}
    with pytest.raises(WorkflowDefinitionError):
        parse_workflow({"tasks": [task]})


@pytest.mark.parametrize("field", ["timeout_s", "default_timeout_s"])
@pytest.mark.parametrize("value", [0, -1, 7 * 86400 + 1, "soon"])
def test_bad_timeouts(field: str, value: Any) -> None:
    task: dict[str, Any] = {"id": "a", "capability": "c"}
    data: dict[str, Any] = {"tasks": [task]}
    if field == "timeout_s":
        task[field] = value
    else:
        data[field] = value
    with pytest.raises(WorkflowDefinitionError, match="timeout_s"):
        parse_workflow(data)


def test_depends_on_must_be_a_list_of_strings() -> None:
    data = {"tasks": [{"id": "a", "capability": "c", "depends_on": [1]}]}
    with pytest.raises(WorkflowDefinitionError, match=r"tasks\[0\]\.depends_on\[0\]"):
        parse_workflow(data)


def test_models_are_frozen() -> None:
    definition = parse_workflow(VALID_DATA)
    with pytest.raises(ValidationError):
        definition.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        definition.tasks[0].capability = "x"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        definition.default_retry.max_attempts = 9  # type: ignore[misc]


def test_task_spec_direct_validation() -> None:
    with pytest.raises(ValidationError):
        TaskSpec(id="a:b", capability="c")
    spec = TaskSpec(id="a", capability="c", depends_on=("b",))
    assert WorkflowDefinition(tasks=(spec,)).tasks == (spec,)


# Retry policy ----------------------------------------------------------------


def test_retry_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.initial_interval_s == 0.5
    assert policy.backoff == 2.0
    assert policy.max_interval_s == 60.0
    assert policy.non_retryable == ()


def test_delay_is_exponential() -> None:
    policy = RetryPolicy(initial_interval_s=0.5, backoff=2.0, max_interval_s=1000)
    assert [policy.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_delay_is_capped() -> None:
    policy = RetryPolicy(initial_interval_s=1, backoff=3, max_interval_s=10)
    assert [policy.delay_s(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 10.0, 10.0]
    assert all(isinstance(policy.delay_s(n), float) for n in range(1, 6))


def test_delay_of_attempt_zero_or_less_is_initial() -> None:
    policy = RetryPolicy(initial_interval_s=2)
    assert policy.delay_s(0) == 2.0
    assert policy.delay_s(-3) == 2.0


def test_delay_with_no_backoff_is_constant() -> None:
    policy = RetryPolicy(initial_interval_s=1.5, backoff=1.0)
    assert {policy.delay_s(n) for n in range(1, 20)} == {1.5}


def test_delay_at_max_bounds() -> None:
    policy = RetryPolicy(
        max_attempts=100, initial_interval_s=3600, backoff=10, max_interval_s=86400
    )
    assert policy.delay_s(policy.max_attempts) == 86400.0


def test_delay_of_huge_attempt_is_capped() -> None:
    assert RetryPolicy().delay_s(5000) == 60.0


@pytest.mark.parametrize(
    "fields",
    [
        {"max_attempts": 0},
        {"max_attempts": 101},
        {"initial_interval_s": -1},
        {"backoff": 0.5},
        {"backoff": 11},
        {"max_interval_s": -1},
        {"unknown": 1},
    ],
)
def test_retry_policy_bounds(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**fields)


@settings(database=None, max_examples=200)
@given(
    st.floats(min_value=0, max_value=3600),
    st.floats(min_value=1, max_value=10),
    st.floats(min_value=0, max_value=86400),
    st.integers(min_value=1, max_value=99),
)
def test_delay_monotonic_and_bounded(
    initial: float, backoff: float, cap: float, attempt: int
) -> None:
    policy = RetryPolicy(initial_interval_s=initial, backoff=backoff, max_interval_s=cap)
    delay, later = policy.delay_s(attempt), policy.delay_s(attempt + 1)
    assert 0 <= delay <= cap
    assert delay <= later
    assert delay == min(initial * backoff ** (attempt - 1), cap)
