"""The error tree drawn in shared/errors.py's docstring is the real one."""

from __future__ import annotations

import inspect
import re

from agenticflow.shared import errors


def test_the_docstring_draws_every_error_class_under_its_parent() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, errors.AgenticFlowError)
    }
    drawn: dict[str, int] = {}
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        found = re.match(r"^\s*([│ ]*[├└]── )?(\w+Error)\b", line)
        if not found:
            continue
        depth = len(found.group(1) or "")
        name = found.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
        drawn[name] = depth
    assert set(drawn) == set(classes)
    for name, parent in parents.items():
        assert classes[parent] in classes[name].__mro__, f"{name} is drawn under {parent}"
