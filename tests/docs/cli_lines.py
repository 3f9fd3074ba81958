"""``agenticflow`` command lines of a shell block, parsed against the real CLI.

A line is split into simple commands (``;``, ``&&``, ``||``, ``|``, ``&`` and
``$(...)`` substitutions), leading ``VAR=value`` assignments are dropped, and
each command that runs ``agenticflow`` (or ``.venv/bin/agenticflow``) is
resolved through the click tree of ``agenticflow.cli.app``: every command
must exist and every option must be one it takes, with a value where it needs
one. Nothing is run.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from typing import Any

_SUBSTITUTION = re.compile(r"\$\(([^()]*)\)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_REDIRECTION = re.compile(r"\s\d*(?:>>?|<)\s*(?:&\d+|[^\s;&|]+)")


def agenticflow_commands(script: str) -> Iterator[list[str]]:
    """The argument lists of every ``agenticflow`` command in a shell script."""
    text = script.replace("\\\n", " ")
    for line in text.split("\n"):
        for inner in _SUBSTITUTION.findall(line):
            yield from _commands(inner)
        yield from _commands(_SUBSTITUTION.sub("X", line))


def _commands(line: str) -> Iterator[list[str]]:
    line = _REDIRECTION.sub(" ", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    command: list[str] = []
    for token in [*lexer, ";"]:
        if token and set(token) <= set(";&|"):
            while command and _ASSIGNMENT.match(command[0]):
                command.pop(0)
            if command and command[0].rsplit("/", 1)[-1] == "agenticflow":
                yield command[1:]
            command = []
        else:
            command.append(token)


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def check(args: list[str]) -> str | None:
    """None if ``agenticflow ARGS`` parses; otherwise what is wrong."""
    import typer.main

    from agenticflow.cli import app

    command: Any = typer.main.get_command(app)
    path = ["agenticflow"]
    rest = list(args)
    while _is_group(command) and rest and not rest[0].startswith("-"):
        ctx = command.context_class(command, info_name=" ".join(path))
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            return f"`{' '.join(path)}` has no command {rest[0]!r}"
        path.append(rest.pop(0))
        command = sub
    try:
        ctx = command.make_context(" ".join(path), rest)
    except Exception as exc:  # typer vendors click: its errors are told apart by name
        if type(exc).__name__ in {"Exit", "NoArgsIsHelpError"}:
            return None
        if any(cls.__name__ == "UsageError" for cls in type(exc).__mro__):
            return f"`{' '.join([*path, *rest])}`: {exc}"
        raise
    ctx.close()
    return None
