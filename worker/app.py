"""Agent apps: what a user writes, and what ``agenticflow worker --app`` loads.

::

    from agenticflow import AgentApp, TaskContext

    app = AgentApp("support")

    @app.agent(capabilities=["triage"])
    async def triage(ctx: TaskContext) -> dict:
        return {"priority": "high" if "outage" in ctx.input["message"] else "low"}
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agenticflow.shared.errors import ConfigError, NotFoundError
from agenticflow.shared.wire.ids import ID_RE
from agenticflow.shared.wire.names import VERSION_RE
from agenticflow.worker.bidding import BidFunction
from agenticflow.worker.context import TaskContext
from agenticflow.worker.tools.registry import ToolRegistry
from agenticflow.worker.tools.spec import Tool

if TYPE_CHECKING:
    from agenticflow.worker.tools.mcp import MCPTools

Handler = Callable[[TaskContext], Awaitable[Any]] | Callable[[TaskContext], Any]
OutcomeHook = Callable[[TaskContext, str], Awaitable[None]]
"""Called with the context and ``"completed"`` or ``"failed"`` once the outcome
event is stored and before the task is acked."""


class Service(Protocol):
    """What an app needs while a worker serves it (an MCP server's session):
    started before the worker pulls, closed after its last task."""

    async def start(self, app: AgentApp) -> None:
        """Start for ``app`` (the app the worker serves, which may include this one)."""

    async def close(self) -> None:
        """Stop (after the worker's last task)."""


_AGENT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class LLMEndpoint:
    """A model endpoint an agent's ``ctx.llm`` calls when the worker's settings
    configure none (``llm_base_url``): e.g. a local stub an app's service
    started (see :attr:`AgentApp.llm_endpoints`)."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent: a name, the capabilities it serves and its handler."""

    name: str
    capabilities: tuple[str, ...]
    handler: Handler
    instances: int | None = None
    """Instances of the agent each worker process hosts; each runs one task at
    a time. None: as many as the worker's ``--concurrency``."""
    description: str = ""
    is_async: bool = field(default=True)
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    """The agent's tools and granted permissions (``ctx.tools`` in its handler)."""
    bid: BidFunction | None = None
    """Its bid for an auctioned task (see :mod:`agenticflow.worker.bidding`); None: its load."""
    version: str | None = None
    """Its version: workflows started while it is the latest live one keep their
    tasks of its capabilities on this version (see :func:`versioned_queue`)."""
    compatible: tuple[str, ...] = ()
    """Older versions whose pinned tasks it runs too."""


class AgentApp:
    """A named set of agents served together by a worker process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._agents: dict[str, AgentSpec] = {}
        self._by_capability: dict[str, AgentSpec] = {}
        self.outcome_hooks: list[OutcomeHook] = []
        self.services: list[Service] = []
        """Started by the worker before it pulls, closed after (see :meth:`mcp`)."""
        self.llm_endpoints: dict[str, LLMEndpoint] = {}
        """By agent name: where its ``ctx.llm`` calls go when the worker's
        settings name no endpoint (a service sets it when it starts, e.g. a
        local stub; ``AGENTICFLOW_LLM_BASE_URL`` always wins)."""

    def on_outcome_stored(self, hook: OutcomeHook) -> OutcomeHook:
        """Register ``hook`` to run after each outcome event is stored, before the ack."""
        self.outcome_hooks.append(hook)
        return hook

    def mcp(
        self,
        name: str,
        *,
        command: list[str] | str | None = None,
        url: str | None = None,
        agents: Iterable[str] | None = None,
        **options: Any,
    ) -> MCPTools:
        """Use the tools of an MCP server: ``command=[...]`` starts it (stdio),
        ``url=...`` connects to it (streamable HTTP). At worker start its tools
        are listed and given, as ``<name>__<tool>``, to ``agents`` (default:
        this app's agents); a call needs the permission ``mcp:<name>``.
        ``options`` are those of :class:`~agenticflow.worker.tools.mcp.MCPTools`
        (``permissions``, ``include``, ``timeout_s``, ``rate_limit``,
        ``breaker``, ``env``, ``headers``...). Raises ConfigError for a bad or
        duplicate name."""
        from agenticflow.worker.tools.mcp import MCPTools

        taken = {s.name for s in self.services if isinstance(s, MCPTools)}
        if name in taken:
            raise ConfigError(f"MCP server {name!r} is already used by app {self.name!r}")
        server = MCPTools(name, command=command, url=url, agents=agents, **options)
        server.owner = self
        self.services.append(server)
        return server

    def agent(
        self,
        capabilities: str | Iterable[str],
        *,
        name: str | None = None,
        instances: int | None = None,
        description: str = "",
        tools: Iterable[Tool] = (),
        permissions: Iterable[str] = (),
        bid: BidFunction | None = None,
        version: str | None = None,
        compatible: Iterable[str] = (),
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as an agent serving ``capabilities``.

        The handler takes a :class:`TaskContext` and returns msgpack-able data; it
        may be ``async`` or plain (plain handlers run in a thread). ``tools`` are
        what it may call through ``ctx.tools``, ``permissions`` what it is granted
        (e.g. ``{"fs:read"}``, ``{"fs:*"}``). ``bid(call, load)`` prices an
        auctioned task (``allocation: auction``): a float, lower is better, or
        None to decline; by default the agent's load. ``version`` (e.g. ``"2"``)
        pins workflows started while it is the latest live version of its
        capabilities to workers serving that version (a rolling deploy never
        hands their later tasks to another); ``compatible`` lists older versions
        whose pinned tasks it may run too. Raises ConfigError for an invalid or
        duplicate name, capability or version, or two tools of one name.
        """

        def register(fn: Handler) -> Handler:
            self.add_agent(
                fn,
                capabilities=capabilities,
                name=name or str(getattr(fn, "__name__", "agent")),
                instances=instances,
                description=description or (inspect.getdoc(fn) or "").split("\n")[0],
                tools=tools,
                permissions=permissions,
                bid=bid,
                version=version,
                compatible=compatible,
            )
            return fn

        return register

    def add_agent(
        self,
        handler: Handler,
        *,
        capabilities: str | Iterable[str],
        name: str,
        instances: int | None = None,
        description: str = "",
        tools: Iterable[Tool] = (),
        permissions: Iterable[str] = (),
        bid: BidFunction | None = None,
        version: str | None = None,
        compatible: Iterable[str] = (),
    ) -> AgentSpec:
        """Register ``handler`` as an agent; the non-decorator form of :meth:`agent`."""
        caps = (capabilities,) if isinstance(capabilities, str) else tuple(capabilities)
        if not _AGENT_RE.match(name):
            raise ConfigError(f"agent name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if name in self._agents:
            raise ConfigError(f"agent {name!r} is already registered in app {self.name!r}")
        if not caps:
            raise ConfigError(f"agent {name!r} serves no capability")
        for cap in caps:
            if not ID_RE.match(cap):
                raise ConfigError(f"capability {cap!r} must be 1-64 letters, digits, '_' or '-'")
            if cap in self._by_capability:
                other = self._by_capability[cap].name
                raise ConfigError(f"capability {cap!r} is served by both {other!r} and {name!r}")
        if instances is not None and instances < 1:
            raise ConfigError(f"agent {name!r} needs at least one instance")
        older = tuple(compatible)
        for given in (version, *older):
            if given is not None and not VERSION_RE.match(given):
                raise ConfigError(
                    f"agent {name!r}: version {given!r} must be 1-16 letters, digits, '_' or '-'"
                )
        if older and version is None:
            raise ConfigError(f"agent {name!r}: 'compatible' needs a 'version' of its own")
        spec = AgentSpec(
            name=name,
            capabilities=caps,
            handler=handler,
            instances=instances,
            description=description,
            is_async=inspect.iscoroutinefunction(handler),
            tools=ToolRegistry(tools, permissions=permissions),
            bid=bid,
            version=version,
            compatible=tuple(v for v in older if v != version),
        )
        self._agents[name] = spec
        for cap in caps:
            self._by_capability[cap] = spec
        return spec

    def include(self, other: AgentApp) -> AgentApp:
        """Serve every agent of ``other`` too, and run its outcome hooks; raises
        ConfigError on a clash. Returns self."""
        self.outcome_hooks.extend(h for h in other.outcome_hooks if h not in self.outcome_hooks)
        self.services.extend(s for s in other.services if s not in self.services)
        for spec in other.agents:
            self.add_agent(
                spec.handler,
                capabilities=spec.capabilities,
                name=spec.name,
                instances=spec.instances,
                description=spec.description,
                tools=spec.tools.tools,
                permissions=spec.tools.permissions,
                bid=spec.bid,
                version=spec.version,
                compatible=spec.compatible,
            )
        return self

    @property
    def agents(self) -> list[AgentSpec]:
        """Registered agents, in registration order."""
        return list(self._agents.values())

    @property
    def capabilities(self) -> list[str]:
        """Every capability this app serves."""
        return list(self._by_capability)

    def for_capability(self, capability: str) -> AgentSpec:
        """The agent serving ``capability``; raises NotFoundError."""
        try:
            return self._by_capability[capability]
        except KeyError:
            raise NotFoundError(f"app {self.name!r} has no agent for {capability!r}") from None


def load_app(spec: str) -> AgentApp:
    """Import ``module:attribute`` and return the AgentApp; raises NotFoundError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--app must look like 'package.module:attribute', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotFoundError(f"cannot import {module_name!r}: {exc}") from exc
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise NotFoundError(f"{module_name!r} has no attribute {attr!r}") from None
    if callable(value) and not isinstance(value, AgentApp):
        value = value()
    if not isinstance(value, AgentApp):
        raise ConfigError(f"{spec!r} is a {type(value).__name__}, not an AgentApp")
    return value


__all__ = ["AgentApp", "AgentSpec", "Handler", "LLMEndpoint", "Service", "load_app"]
