"""An agent's tools and the permissions it was granted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from agenticflow.shared.errors import ConfigError
from agenticflow.shared.security.rbac import grants
from agenticflow.worker.tools.spec import Tool


class ToolRegistry:
    """The tools one agent may call, by name, and the permissions it holds."""

    def __init__(self, tools: Iterable[Tool] = (), *, permissions: Iterable[str] = ()) -> None:
        """Raises ConfigError for two tools of one name."""
        self._tools: dict[str, Tool] = {}
        self.permissions = frozenset(permissions)
        for item in tools:
            if not isinstance(item, Tool):
                raise ConfigError(f"{item!r} is not a tool; declare it with @tool")
            if item.name in self._tools:
                raise ConfigError(f"two tools are named {item.name!r}")
            self._tools[item.name] = item

    def add(self, item: Tool) -> None:
        """Register one more tool (an MCP server's, listed at worker start);
        raises ConfigError for a name another tool has."""
        if item.name in self._tools:
            raise ConfigError(f"two tools are named {item.name!r}")
        self._tools[item.name] = item

    def remove(self, name: str) -> None:
        """Forget the tool called ``name``, if there is one."""
        self._tools.pop(name, None)

    @property
    def tools(self) -> tuple[Tool, ...]:
        """Registered tools, in registration order."""
        return tuple(self._tools.values())

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or None."""
        return self._tools.get(name)

    def missing(self, item: Tool) -> list[str]:
        """The permissions ``item`` requires that this agent was not granted."""
        return sorted(p for p in item.permissions if not grants(self.permissions, p))

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool as an LLM function declaration (see :meth:`Tool.schema`)."""
        return [item.schema() for item in self._tools.values()]

    def pool_metrics(self) -> list[dict[str, Any]]:
        """Metrics of the resource pools the tools hold (see :class:`Pool`)."""
        seen: dict[int, Any] = {}
        for item in self._tools.values():
            for pool in item.pools:
                seen.setdefault(id(pool), pool)
        return [pool.metrics() for pool in seen.values()]

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools


__all__ = ["ToolRegistry", "grants"]
