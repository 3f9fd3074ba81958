"""Workflow templates: named, parameterised workflows.

A template file (YAML) names a workflow, says which words in a query select
it, and declares its parameters::

    template: content-pipeline
    description: Research a topic, write and fact-check, edit after approval.
    keywords: [article, blog, write, research, fact]
    params:
      topic:
        description: what to write about
        default: honeybees
        extract: ['about (?P<value>[a-z][a-z -]*)']   # how the rules planner reads it from a query
    workflow_file: ../content_pipeline/workflow.yaml     # or `workflow:` inline

Parameters become the workflow's input (``input.topic``), and a string
``"{{topic}}"`` anywhere in the workflow is replaced by the value (inside a
longer string, by its text). ``agenticflow submit --template NAME --param
k=v`` runs one; both planners may choose one for a query.

Templates are read from the directories on ``AGENTICFLOW_TEMPLATES_PATH``
(``os.pathsep``-separated), then from the templates that ship with the package
(``agenticflow/examples/templates``); the first template of a name wins.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agenticflow.coordinator.supervisor.catalog import stem, words
from agenticflow.coordinator.supervisor.plan import Plan, PlanStep, Strategy
from agenticflow.shared.errors import NotFoundError, WorkflowDefinitionError
from agenticflow.shared.graph.dag import graph_problems
from agenticflow.shared.graph.workflow import WorkflowDefinition, load_workflow_file, parse_workflow

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

ParamType = Literal["str", "int", "float", "bool", "list", "json"]


class TemplateParam(BaseModel):
    """One parameter of a template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    type: ParamType = "str"
    default: Any = None
    required: bool = False
    extract: tuple[str, ...] = ()
    """Regular expressions with a ``value`` group, tried in order on a query by
    the rules planner (case-sensitive unless the pattern starts with ``(?i)``)."""

    @field_validator("extract")
    @classmethod
    def _check_patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"extract pattern {pattern!r}: {exc}") from None
            if "value" not in compiled.groupindex:
                raise ValueError(f"extract pattern {pattern!r} needs a (?P<value>...) group")
        return patterns

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` as this parameter's type (command-line text is parsed);
        raises ValueError naming the parameter."""
        if not isinstance(value, str):
            return value
        try:
            return _PARSERS[self.type](value.strip())
        except ValueError as exc:
            raise ValueError(f"parameter {name!r} must be {self.type}: {value!r} ({exc})") from None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("not true/false")


def _list(text: str) -> list[Any]:
    if not text.startswith("["):
        return [part.strip() for part in text.split(",") if part.strip()]
    parsed = json.loads(text)
    if not isinstance(parsed, list):
        raise ValueError("not a list")  # noqa: TRY004 - reported as a bad value
    return parsed


_PARSERS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "list": _list,
    "json": json.loads,
}


class Template(BaseModel):
    """A named, parameterised workflow."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(alias="template")
    description: str = ""
    keywords: tuple[str, ...] = ()
    strategy: Strategy = "sequential"
    """How its tasks relate (shown in plans)."""
    params: dict[str, TemplateParam] = Field(default_factory=dict)
    workflow: WorkflowDefinition
    source: str = "inline"

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("template name must be 1-64 lower-case letters, digits, '_' or '-'")
        return value

    def values(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter's value: given (coerced), else default; raises
        WorkflowDefinitionError naming unknown or missing parameters."""
        problems = [
            f"template {self.name!r} has no parameter {key!r} "
            f"(it takes: {', '.join(sorted(self.params)) or 'none'})"
            for key in given
            if key not in self.params
        ]
        values: dict[str, Any] = {}
        for key, param in self.params.items():
            if key in given:
                try:
                    values[key] = param.coerce(key, given[key])
                except ValueError as exc:
                    problems.append(f"template {self.name!r}: {exc}")
            elif param.required:
                problems.append(f"template {self.name!r} needs parameter {key!r}")
            elif param.default is not None:
                values[key] = param.default
        if problems:
            raise WorkflowDefinitionError("; ".join(problems), problems=problems)
        return values

    def render(self, given: Mapping[str, Any] | None = None) -> WorkflowDefinition:
        """The workflow with parameters filled in; raises WorkflowDefinitionError."""
        values = self.values(given or {})
        data = _fill(self.workflow.model_dump(mode="json", exclude_defaults=True), values)
        data["input"] = {**data.get("input", {}), **values}
        return parse_workflow(data, source=f"template {self.name}")

    def to_plan(self, query: str, given: Mapping[str, Any], *, planner: str) -> Plan:
        """The rendered workflow as a plan (steps keep their capabilities)."""
        workflow = self.render(given)
        steps = _steps(workflow, self.name)
        return Plan(
            query=query,
            name=workflow.name,
            strategy=self.strategy if len(steps) > 1 else "single",
            steps=steps,
            input=dict(workflow.input),
            planner=planner,
            template=self.name,
        )

    def extract(self, query: str) -> dict[str, Any]:
        """Parameter values the query states (by each parameter's ``extract`` patterns)."""
        found: dict[str, Any] = {}
        for key, param in self.params.items():
            for pattern in param.extract:
                hit = re.search(pattern, query)
                if hit and hit.group("value"):
                    found[key] = hit.group("value").strip(" .,;:!?\"'")
                    break
        return found

    def score(self, query: str) -> int:
        """How strongly the query asks for this template: its name counts 3, each keyword 1."""
        text = query.lower()
        score = 3 if self.name in text or self.name.replace("-", " ") in text else 0
        stems = {stem(w) for w in words(query)}  # its own vocabulary: no synonyms
        return score + sum(1 for k in {stem(k) for k in self.keywords} if k in stems)

    def describe(self) -> dict[str, Any]:
        """Name, description and parameters as plain data (prompts, ``templates --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "strategy": self.strategy,
            "capabilities": sorted(_capabilities(self.workflow)),
            "params": {
                key: {"description": p.description, "type": p.type, "default": p.default}
                | ({"required": True} if p.required else {})
                for key, p in self.params.items()
            },
        }


def _steps(workflow: WorkflowDefinition, template: str) -> tuple[PlanStep, ...]:
    """A workflow's tasks as plan steps; a child workflow becomes a sub-plan."""
    return tuple(
        PlanStep(
            id=task.id,
            capability=None if task.workflow is not None else task.capability,
            steps=_steps(task.workflow, template) if task.workflow is not None else None,
            description=task.description,
            params=task.params,
            depends_on=task.depends_on,
            allocation=task.allocation,
            why=f"step {task.id!r} of template {template!r}",
        )
        for task in workflow.tasks
    )


def _capabilities(workflow: WorkflowDefinition) -> set[str]:
    found: set[str] = set()
    for task in workflow.tasks:
        found |= _capabilities(task.workflow) if task.workflow else {task.capability}
    return found


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value.strip())
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(
            lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), value
        )
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def load_template(path: str | Path) -> Template:
    """Read one template file; raises WorkflowDefinitionError naming the file and field."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WorkflowDefinitionError(f"{file}: cannot read template: {exc}") from exc
    if not isinstance(data, dict) or "template" not in data:
        raise WorkflowDefinitionError(f"{file}: a template is a mapping with 'template: NAME'")
    data = dict(data)
    if "workflow_file" in data:
        if "workflow" in data:
            raise WorkflowDefinitionError(f"{file}: give 'workflow' or 'workflow_file', not both")
        try:
            data["workflow"] = load_workflow_file(file.parent / str(data.pop("workflow_file")))
        except WorkflowDefinitionError as exc:
            raise WorkflowDefinitionError(
                f"{file}: workflow_file: {exc}", problems=[f"{file}: {p}" for p in exc.problems]
            ) from exc
    elif isinstance(data.get("workflow"), dict):
        data["workflow"] = parse_workflow(data["workflow"], source=f"{file}: workflow")
    data["source"] = str(file)
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{file}: {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise WorkflowDefinitionError("; ".join(problems), problems=problems) from exc
    problems = [f"{file}: workflow: {p}" for p in graph_problems(template.workflow)]
    if problems:
        raise WorkflowDefinitionError("; ".join(problems), problems=problems)
    return template


def default_paths() -> list[Path]:
    """``AGENTICFLOW_TEMPLATES_PATH`` entries, then the templates that ship with
    the package (``agenticflow/examples/templates``)."""
    paths = [Path(p) for p in os.environ.get("AGENTICFLOW_TEMPLATES_PATH", "").split(os.pathsep)]
    spec = importlib.util.find_spec("agenticflow.examples")
    if spec is not None and spec.submodule_search_locations:
        paths.extend(Path(p) / "templates" for p in spec.submodule_search_locations)
    unique: dict[Path, None] = {}
    for path in paths:
        if str(path) not in ("", "."):
            unique.setdefault(path.resolve(), None)
    return list(unique)


class Templates:
    """The template registry: by name, with the first definition of a name winning."""

    def __init__(self, templates: Iterable[Template] = ()) -> None:
        self._by_name: dict[str, Template] = {}
        for template in templates:
            self._by_name.setdefault(template.name, template)

    @classmethod
    def load(cls, paths: Iterable[str | Path] | None = None) -> Templates:
        """Every ``*.yaml``/``*.yml`` template in ``paths`` (default:
        :func:`default_paths`); a missing directory is skipped, a bad file
        raises WorkflowDefinitionError."""
        found: list[Template] = []
        for directory in map(Path, default_paths() if paths is None else paths):
            if not directory.is_dir():
                continue
            files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
            found.extend(load_template(file) for file in files)
        return cls(found)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        """Template names, sorted."""
        return sorted(self._by_name)

    def get(self, name: str) -> Template:
        """The template called ``name``; raises NotFoundError listing the known ones."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.names()) or "none (set AGENTICFLOW_TEMPLATES_PATH)"
            raise NotFoundError(f"no template {name!r}; known templates: {known}") from None

    def best(self, query: str, *, at_least: int = 2) -> tuple[Template, int] | None:
        """The template the query asks for most (score ``at_least`` or more), if any."""
        scored = sorted(
            ((t.score(query), t.name) for t in self._by_name.values()), key=lambda s: (-s[0], s[1])
        )
        if scored and scored[0][0] >= at_least:
            return self._by_name[scored[0][1]], scored[0][0]
        return None

    def describe(self) -> list[dict[str, Any]]:
        """Every template as plain data."""
        return [self._by_name[name].describe() for name in self.names()]


__all__ = [
    "ParamType",
    "Template",
    "TemplateParam",
    "Templates",
    "default_paths",
    "load_template",
]
