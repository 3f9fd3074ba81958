"""mkdocs hook: the reference pages generated from the code at build time.

- ``reference/cli.md`` walks the typer app (``agenticflow.cli.app``) as click
  sees it: every command and group, its arguments and options;
- ``reference/configuration.md`` lists the fields of
  ``agenticflow.shared.ops.config.Settings`` with their environment variable,
  type, default and the field's docstring;
- ``reference/events.md`` lists every ``EventType`` with its payload model's
  fields and schema version.

Nothing here reaches the network; the pages change when the code does.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[2]


def _cell(text: object) -> str:
    """Text for one table cell: one line, pipes escaped, HTML-looking text inert."""
    value = " ".join(str(text).split())
    return value.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _help(text: str | None) -> str:
    """A command's help, its paragraphs kept, ``\\b`` markers dropped."""
    if not text:
        return ""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.replace("\b", ""))]
    return "\n\n".join(_escape(p) for p in paragraphs if p)


def _escape(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------- CLI


# typer vendors its own click (typer._click), so commands and parameters are
# told apart by what they have, not by click's classes.


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    if _is_group(command):
        for name in sorted(command.commands):
            sub = command.commands[name]
            if not sub.hidden:
                yield from _walk(sub, [*path, name])


def _param_row(param: Any, ctx: Any) -> str:
    """One row: the parameter as ``--help`` declares it, and its help."""
    record = param.get_help_record(ctx)
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`" + ("" if param.required else " (optional)")
        help_text = record[1] if record else ""
    else:
        name = f"`{record[0]}`" if record else f"`{param.name}`"
        help_text = record[1] if record else ""
    if param.required and "[required]" not in help_text:
        help_text = f"{help_text} [required]".strip()
    return f"| {name} | {_cell(help_text)} |"


def cli_page() -> str:
    """The CLI reference, from the typer app."""
    import typer.main

    from agenticflow.cli import app

    root = typer.main.get_command(app)
    out = [
        "# CLI reference",
        "",
        "Generated at build time from the typer app (`agenticflow.cli.app`): every",
        "command, its arguments and its options, as `agenticflow COMMAND --help` shows",
        "them. Exit codes are in the [getting started guide](../getting-started.md#exit-codes).",
        "",
    ]
    for path, command in _walk(root, ["agenticflow"]):
        ctx = command.context_class(command, info_name=" ".join(path))
        if len(path) > 1:
            depth = min(len(path), 4)
            anchor = "-".join(path[1:])
            out += [f"{'#' * depth} `{' '.join(path)}` {{ #{anchor} }}", ""]
        usage = command.get_usage(ctx).removeprefix("Usage: ")
        out += [f"`{usage}`", ""]
        if command.help:
            out += [_help(command.help), ""]
        if _is_group(command):
            rows = [
                f"| [`{name}`](#{'-'.join([*path[1:], name])}) | "
                f"{_cell(sub.get_short_help_str(limit=120))} |"
                for name, sub in sorted(command.commands.items())
                if not sub.hidden
            ]
            out += ["| command | what it does |", "|---|---|", *rows, ""]
        shown = [p for p in command.params if not getattr(p, "hidden", False)]
        if shown:
            out += ["| parameter | what |", "|---|---|"]
            out += [_param_row(p, ctx) for p in shown]
            out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------- Settings


def _attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under a class's attributes (PEP 257 attribute docstrings)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for first, second in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(first, ast.AnnAssign)
            and isinstance(first.target, ast.Name)
            and isinstance(second, ast.Expr)
            and isinstance(second.value, ast.Constant)
            and isinstance(second.value.value, str)
        ):
            docs[first.target.id] = inspect.cleandoc(second.value.value)
    return docs


def _rst_to_md(text: str) -> str:
    text = re.sub(r":(?:mod|class|func|meth|data|attr):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _type_name(field: FieldInfo) -> str:
    annotation: Any = field.annotation
    name = getattr(annotation, "__name__", None) or str(annotation)
    name = str(annotation) if "|" in str(annotation) else name
    return name.replace("pathlib.", "").replace("pydantic.types.", "").replace("typing.", "")


def _env_names(name: str, field: FieldInfo, prefix: str) -> list[str]:
    alias = field.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return [str(c) for c in choices]
    return [f"{prefix}{name}".upper()]


def configuration_page() -> str:
    """Every setting: name, environment variable, type, default and what it does."""
    from agenticflow.shared.ops.config import Settings

    docs = _attribute_docs(Settings)
    prefix = str(Settings.model_config.get("env_prefix", ""))
    out = [
        "# Configuration reference",
        "",
        "Generated at build time from `agenticflow.shared.ops.config.Settings`.",
        "Every process (coordinator, worker, CLI, your client) reads these from the",
        "environment once at start-up; a value can also be passed by name to",
        "`Settings(...)`. All are optional. The guides say when to change them:",
        "[running a cluster](../guides/cluster.md), [security](../guides/security.md),",
        "[observability](../guides/observability.md).",
        "",
        "| setting | environment variable | type | default | what |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else f"`{default!r}`"
        env = ", ".join(f"`{e}`" for e in _env_names(name, field, prefix))
        what = _rst_to_md(docs.get(name, ""))
        out.append(
            f"| `{name}` | {env} | `{_cell(_type_name(field))}` | {_cell(shown)} | {_cell(what)} |"
        )
    out += [
        "",
        "## Where a value comes from",
        "",
        "A command or client resolves its settings in this order: its own arguments",
        "(`--nats`, `--prefix`, `connect(url)`), a profile named by `--profile`,",
        "`connect(profile=)` or `AGENTICFLOW_PROFILE` (naming one beats stale variables),",
        "the `AGENTICFLOW_*` environment, `NATS_URL` (the NATS tools' variable) for the URL,",
        "the current profile (`agenticflow profile use NAME`),",
        "then the defaults above. Coordinators and workers read the environment.",
        "",
        "Set `AGENTICFLOW_REPLICAS=3` (and `AGENTICFLOW_PARTITIONS`) on every process of a",
        "3-node cluster, clients included: a client creates the streams and buckets it",
        "misses, and one left at 1 replica would make the R3 streams R1 (profiles",
        "written by `cluster up` carry both).",
        "",
        "## Other environment variables",
        "",
        "| variable | what |",
        "|---|---|",
        "| `NATS_URL` | the server URL(s), after `AGENTICFLOW_NATS_URL` |",
        "| `AGENTICFLOW_HOME` | where `profiles.json` lives (default "
        "`$XDG_CONFIG_HOME/agenticflow`, else `~/.config/agenticflow`) |",
        "| `AGENTICFLOW_PROFILE` | the profile to use instead of the current one |",
        "| `AGENTICFLOW_TEMPLATES_PATH` | more template directories, `:`-separated "
        "([the supervisor](../guides/supervisor.md)) |",
        "| `AGENTICFLOW_TRACE_FILE` | write one JSON line per span (`spans-{pid}.jsonl`) |",
        "| `AGENTICFLOW_CLI_LOG_LEVEL` | the CLI's own log level (default: errors only) |",
        "| `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`, "
        "`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_TRACES_EXPORTER`, "
        "`OTEL_METRIC_EXPORT_INTERVAL` | OpenTelemetry's own "
        "([observability](../guides/observability.md)) |",
        "",
        "NATS server configurations for one node and a 3-node cluster are in",
        "`deploy/nats/` ([deploying](../guides/deploying.md)).",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------- events


def _fields_of(model: type[BaseModel]) -> str:
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            try:
                docs.update(_attribute_docs(cls))
            except (OSError, TypeError, IndexError):
                continue
    rows = ["| field | type | default | what |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else f"`{field.get_default()!r}`"
        rows.append(
            f"| `{name}` | `{_cell(_type_name(field))}` | {_cell(default)} | "
            f"{_cell(_rst_to_md(docs.get(name, '')))} |"
        )
    return "\n".join(rows)


def events_page() -> str:
    """Every event type, its payload model, schema version and fields."""
    from agenticflow.shared.wire.events import NOT_FOLDED, PAYLOADS, EventType
    from agenticflow.shared.wire.schemas import REGISTRY

    out = [
        "# Event types",
        "",
        "Generated at build time from `EventType` and the payload models in",
        "`agenticflow.shared.wire.events`. An event travels on",
        "`<prefix>.evt.<workflow_id>.<event_type>`; its body is the msgpack of the",
        "payload below, and `AF-Schema` carries the payload's schema version. The",
        "envelope (id, type, workflow, task, attempt, source, timestamp, vector clock)",
        "is described in the [wire contract](wire.md).",
        "",
        "| event type | payload | schema | folded |",
        "|---|---|---|---|",
    ]
    for event_type in EventType:
        model = PAYLOADS[event_type]
        folded = "no" if event_type in NOT_FOLDED else "yes"
        out.append(
            f"| [`{event_type.value}`](#{event_type.value.replace('.', '')}) "
            f"| `{model.__name__}` | v{REGISTRY.version(event_type.value)} | {folded} |"
        )
    out.append("")
    for event_type in EventType:
        model = PAYLOADS[event_type]
        doc = _rst_to_md(inspect.cleandoc(model.__doc__ or ""))
        out += [
            f"## `{event_type.value}` {{ #{event_type.value.replace('.', '')} }}",
            "",
            f"Payload `{model.__name__}`, schema version "
            f"{REGISTRY.version(event_type.value)}." + (f" {_escape(doc)}" if doc else ""),
            "",
            _fields_of(model) if model.model_fields else "No fields.",
            "",
        ]
    return "\n".join(out)


# ---------------------------------------------------------------------- Python API

_GROUPS = [
    (
        "Agents and workers",
        (
            "agenticflow.worker.app",
            "agenticflow.worker.context",
            "agenticflow.worker.runtime",
            "agenticflow.worker.fsm",
            "agenticflow.worker.bidding",
        ),
    ),
    ("Tools", ("agenticflow.worker.tools",)),
    (
        "Clients and coordinators",
        (
            "agenticflow.client",
            "agenticflow.coordinator.client",
            "agenticflow.coordinator.index",
            "agenticflow.coordinator.service",
            "agenticflow.coordinator.state",
            "agenticflow.coordinator.reducer",
            "agenticflow.coordinator.causality",
        ),
    ),
    ("The supervisor", ("agenticflow.coordinator.supervisor",)),
    ("Workflows", ("agenticflow.shared.graph",)),
    ("Events and clocks", ("agenticflow.shared.wire",)),
    ("Connection and settings", ("agenticflow.shared.bus", "agenticflow.shared.ops")),
    ("Resilience", ("agenticflow.shared.resilience",)),
    ("Errors", ("agenticflow.shared.errors",)),
    ("Running processes", ("agenticflow.cluster",)),
]


def api_page() -> str:
    """One mkdocstrings entry per name in ``agenticflow.__all__``, grouped by area."""
    import agenticflow

    exports: dict[str, str] = dict(agenticflow._EXPORTS)
    out = [
        "# Python API",
        "",
        "Everything public is importable from `agenticflow` and listed in",
        "`agenticflow.__all__` (pinned by a test); this page is generated from that",
        "list and the docstrings. Import from `agenticflow` only: the module each",
        "name is defined in (shown under it) is an implementation detail.",
        "",
    ]
    placed: set[str] = set()
    for title, prefixes in [*_GROUPS, ("Other", ("",))]:
        names = [
            name
            for name in sorted(agenticflow.__all__, key=str.lower)
            if name not in placed and name in exports and exports[name].startswith(prefixes)
        ]
        if not names:
            continue
        out += [f"## {title}", ""]
        for name in names:
            placed.add(name)
            out += [
                f"::: {exports[name]}.{name}",
                "    options:",
                "      show_root_heading: true",
                "      show_root_full_path: false",
                "",
            ]
    return "\n".join(out)


# ---------------------------------------------------------------------- hook

PAGES = {
    "reference/cli.md": cli_page,
    "reference/configuration.md": configuration_page,
    "reference/events.md": events_page,
    "reference/api.md": api_page,
}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated reference pages to the site."""
    for uri, build in PAGES.items():
        files.append(File.generated(config, uri, content=build()))
    return files
