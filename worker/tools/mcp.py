"""Tools from Model Context Protocol servers (the official ``mcp`` SDK).

::

    app = AgentApp("research")
    app.mcp("files", command=["npx", "-y", "@modelcontextprotocol/server-filesystem", "/data"])
    app.mcp("search", url="https://search.internal/mcp", agents=["researcher"])

    @app.agent(capabilities=["research"], permissions={"mcp:files", "mcp:search"})
    async def researcher(ctx: TaskContext) -> Any:
        return await ctx.tools.call("files__read_text_file", path="/data/notes.md")

At worker start (:meth:`MCPTools.start`) the server is started (stdio) or
connected (streamable HTTP) and its tools listed; each becomes a
:class:`MCPTool` named ``<server>__<tool>`` in the registries of the agents
named by ``agents`` (default: every agent of the app). From there a call is
like any tool's (:mod:`~agenticflow.worker.tools.toolbox`): lookup, validation
against the tool's JSON schema, permission (``mcp:<server>`` by default),
side-effect record, result cache, the server's cluster-wide breaker and rate
limit (keyed by the server's name), the timeout, and one ``task.tool_called``
audit record.

One session per server per worker process, shared by every call (MCP
multiplexes requests). A session whose server went away (a stdio server that
exited, a connection lost) is restarted by the next call: up to
``start_attempts`` starts, 0.2 s apart and doubling, before that call fails
with :class:`MCPUnavailableError` (retryable). A call in flight when the
server went away is not sent again (the server may have acted on it): it
fails with MCPUnavailableError, and the task's retry policy decides. Each call
carries its idempotency key in the request's ``_meta``
(``io.agenticflow/idempotency-key``), for servers that deduplicate.

Errors (in :mod:`agenticflow.shared.errors`; both retryable)::

    ToolError
    └── MCPToolError                 the server answered isError, or an error response
        └── MCPUnavailableError      the server would not start, or the connection was lost
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import mcp_types
import structlog
from jsonschema import validators
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, RootModel, ValidationError

from agenticflow.shared.errors import (
    ConfigError,
    MCPToolError,
    MCPUnavailableError,
    ToolError,
    ToolValidationError,
    UnknownToolError,
)
from agenticflow.worker.tools.spec import NAME_RE, BreakerPolicy, RateLimit, Tool, ToolCall

if TYPE_CHECKING:
    from agenticflow.worker.app import AgentApp

log = structlog.get_logger("agenticflow.tools.mcp")

KEY_META = "io.agenticflow/idempotency-key"
"""The ``_meta`` entry of every ``tools/call`` that carries the call's idempotency key."""

SEPARATOR = "__"
"""Between the server's name and the tool's: ``files__read_text_file``. Not a dot:
LLM providers take only letters, digits, ``_`` and ``-`` in a function's name."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_RESTART_DELAY_S = 0.2
_CLOSE_TIMEOUT_S = 10.0
_MAX_PAGES = 100
_BREAKER = BreakerPolicy()


class MCPArguments(RootModel[dict[str, Any]]):
    """An MCP tool's arguments, checked against its JSON schema (not a pydantic model)."""


@dataclass(frozen=True, slots=True, eq=False)
class MCPTool(Tool):
    """A tool of an MCP server: validated against the server's JSON schema."""

    server: str = ""
    remote: str = ""
    """The tool's name on its server."""
    input_schema: dict[str, Any] = field(default_factory=dict)
    checker: Validator | None = None

    def validate(self, params: dict[str, Any]) -> BaseModel:
        """The params, checked against the server's JSON schema; raises
        ToolValidationError listing each problem."""
        if self.checker is not None:
            problems = [
                f"{'.'.join(str(p) for p in err.absolute_path) or '(params)'}: {err.message}"
                for err in sorted(self.checker.iter_errors(params), key=lambda e: list(e.path))
            ]
            if problems:
                raise ToolValidationError(
                    f"invalid params for tool {self.name!r}: {'; '.join(problems)}",
                    tool=self.name,
                    errors=problems,
                )
        return MCPArguments(params)

    def schema(self) -> dict[str, Any]:
        """The tool as an LLM function declaration (its server's JSON schema)."""
        return {"name": self.name, "description": self.description, "parameters": self.input_schema}

    def info(self) -> dict[str, Any]:
        """Everything declared about the tool, its server included."""
        return {**Tool.info(self), "mcp_server": self.server, "mcp_tool": self.remote}


class _Watched:
    """A transport's read stream that notes its end (the server went away)."""

    def __init__(self, inner: Any, ended: asyncio.Event) -> None:
        self._inner = inner
        self._ended = ended

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._ended.set()
            raise
        return item

    async def aclose(self) -> None:
        self._ended.set()
        await self._inner.aclose()

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _Watched:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


Connect = Callable[[asyncio.Event], AbstractAsyncContextManager[Client]]
"""Opens a client session; the event is set when the server goes away."""


class _Session:
    """One live MCP session, held open by its own task until :meth:`close`."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect
        self.client: Client | None = None
        self.ended = asyncio.Event()
        """Set when the server went away (or the session closed)."""
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._owner: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.client is not None and not self.ended.is_set()

    async def open(self, timeout_s: float) -> Client:
        """Start the session; raises what the transport or the handshake raised,
        or TimeoutError."""
        self._owner = asyncio.create_task(self._hold(), name="mcp-session")
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except BaseException:
            await self.close()
            raise
        if self.client is None:
            await self.close()
            raise self._error or ConnectionError("the session ended before it was ready")
        return self.client

    async def _hold(self) -> None:
        # The SDK's contexts are entered and left by this one task (anyio's rule).
        try:
            async with self._connect(self.ended) as client:
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            self._error = exc
            if self.client is not None:
                log.warning("mcp session ended with an error", error=repr(exc))
        finally:
            self.ended.set()
            self._ready.set()

    async def close(self) -> None:
        """End the session (a stdio server is stopped); idempotent."""
        self._stop.set()
        if self._owner is not None and not self._owner.done():
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await asyncio.shield(self._owner)
            except TimeoutError:
                self._owner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._owner


class MCPTools:
    """An MCP server's tools, registered in an app (made by :meth:`AgentApp.mcp`).

    ``command`` (a list, or a string split like a shell) starts a stdio server;
    ``url`` connects to a streamable HTTP one (``headers`` for its
    authorization). ``agents``: the agents that get the tools (default: every
    agent of the app); ``permissions``: what a call requires (default
    ``{"mcp:<name>"}``, so grant ``mcp:<name>`` or ``mcp:*``); ``include``:
    only these tools of the server. ``timeout_s``, ``rate_limit``, ``breaker``
    and ``once`` as for any tool (the breaker and the rate limit are the
    server's, shared by its tools, cluster-wide). ``start_timeout_s`` bounds one
    start (process and handshake), ``start_attempts`` how many starts a call
    makes. Raises ConfigError for a bad name or neither/both of command and url.
    """

    def __init__(
        self,
        name: str,
        *,
        command: Sequence[str] | str | None = None,
        url: str | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        headers: dict[str, str] | None = None,
        agents: Iterable[str] | None = None,
        permissions: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
        timeout_s: float = 30.0,
        rate_limit: RateLimit | str | None = None,
        breaker: BreakerPolicy | None = _BREAKER,
        once: bool = True,
        start_timeout_s: float = 30.0,
        start_attempts: int = 3,
    ) -> None:
        if not NAME_RE.match(name):
            raise ConfigError(f"MCP server name {name!r} must be 1-64 letters, digits, '_' or '-'")
        if (command is None) == (url is None):
            raise ConfigError(f"MCP server {name!r}: give command=[...] (stdio) or url=... (HTTP)")
        argv = shlex.split(command) if isinstance(command, str) else list(command or ())
        if command is not None and not argv:
            raise ConfigError(f"MCP server {name!r}: the command is empty")
        if timeout_s <= 0 or start_timeout_s <= 0 or start_attempts < 1:
            raise ConfigError(
                f"MCP server {name!r}: timeouts must be positive and start_attempts at least 1"
            )
        self.name = name
        self.argv = argv
        self.url = url
        self.env = dict(env or {})
        self.cwd = cwd
        self.headers = dict(headers or {})
        self.agents = None if agents is None else tuple(agents)
        self.permissions = frozenset(permissions if permissions is not None else (f"mcp:{name}",))
        self.include = None if include is None else frozenset(include)
        self.timeout_s = timeout_s
        self.rate_limit = RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit
        self.breaker = breaker
        self.once = once
        self.start_timeout_s = start_timeout_s
        self.start_attempts = start_attempts
        self.tools: tuple[MCPTool, ...] = ()
        """The server's tools, once started."""
        self.starts = 0
        """Sessions opened so far (the first start included)."""
        self.owner: AgentApp | None = None
        """The app that declared it (:meth:`AgentApp.mcp`): its agents get the
        tools when ``agents`` is not given."""
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._users = 0

    def __repr__(self) -> str:
        return f"MCPTools({self.name!r}, {self.where})"

    @property
    def _start_verb(self) -> str:
        return "start" if self.url is None else "connect"

    @property
    def where(self) -> str:
        """The command line or the URL."""
        return self.url if self.url is not None else shlex.join(self.argv)

    # Lifecycle ----------------------------------------------------------
    async def start(self, app: AgentApp | None = None) -> None:
        """Start the server (or connect), list its tools, and give them to
        ``app``'s agents; a second start (another worker of this process) shares
        the session. Raises MCPUnavailableError when it does not start,
        ConfigError for an unknown agent or a tool name taken."""
        async with self._lock:
            if self._users == 0:
                try:
                    await self._ensure()
                    self.tools = await self._discover()
                except BaseException:
                    await self._drop()
                    raise
            self._users += 1
        if app is not None:
            try:
                self.register(app)
            except ConfigError:
                await self.close()
                raise

    def register(self, app: AgentApp) -> None:
        """Add the tools to the registries of the agents named (all by default);
        raises ConfigError for an unknown agent or a name another tool has."""
        names = {spec.name: spec for spec in app.agents}
        default = self.owner.agents if self.owner is not None else app.agents
        chosen = [a.name for a in default] if self.agents is None else list(self.agents)
        unknown = [a for a in chosen if a not in names]
        if unknown:
            raise ConfigError(f"MCP server {self.name!r}: app {app.name!r} has no agent {unknown}")
        for agent in chosen:
            registry = names[agent].tools
            for item in self.tools:
                held = registry.get(item.name)
                if held is item:
                    continue
                if isinstance(held, MCPTool) and held.server == self.name:
                    # Listed by an earlier session of this server (the app served
                    # again in this process): the new listing replaces it.
                    registry.remove(item.name)
                registry.add(item)

    async def close(self) -> None:
        """Stop using the server; the last user stops it (idempotent)."""
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                await self._drop()

    async def _drop(self) -> None:
        """Close the session, if any. Hold the lock."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> MCPTools:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Sessions -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _connect(self, ended: asyncio.Event) -> AsyncIterator[Client]:
        transport: Any
        if self.url is not None:
            http = None
            if self.headers:
                import httpx2

                http = httpx2.AsyncClient(headers=self.headers)
            transport = streamable_http_client(self.url, http_client=http)
        else:
            params = StdioServerParameters(
                command=self.argv[0], args=self.argv[1:], env=self.env or None, cwd=self.cwd
            )
            transport = stdio_client(params)

        @contextlib.asynccontextmanager
        async def watched() -> AsyncIterator[Any]:
            async with transport as (read, write):
                yield _Watched(read, ended), write

        async with Client(watched(), cache=None) as client:
            yield client

    async def _ensure(self) -> Client:
        """The live session's client; (re)starts it, up to ``start_attempts``
        times. Raises MCPUnavailableError. Hold the lock."""
        if self._session is not None and self._session.alive:
            assert self._session.client is not None
            return self._session.client
        if self._session is not None:
            log.warning("mcp server gone: restarting it", server=self.name, where=self.where)
            await self._session.close()
            self._session = None
        delay = _RESTART_DELAY_S
        problem: BaseException | None = None
        for attempt in range(self.start_attempts):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            session = _Session(self._connect)
            self.starts += 1
            try:
                client = await session.open(self.start_timeout_s)
            except Exception as exc:
                problem = exc
                log.warning(
                    "mcp server did not start",
                    server=self.name,
                    where=self.where,
                    attempt=attempt + 1,
                    error=_describe(exc),
                )
                continue
            self._session = session
            return client
        raise MCPUnavailableError(
            f"MCP server {self.name!r} ({self.where}) would not {self._start_verb} after "
            f"{self.start_attempts} attempt(s): {_describe(problem)}",
            server=self.name,
        ) from problem

    async def _live(self) -> _Session:
        async with self._lock:
            if self._users == 0:
                raise MCPUnavailableError(
                    f"MCP server {self.name!r} is not started", server=self.name
                )
            await self._ensure()
            assert self._session is not None
            return self._session

    async def _discover(self) -> tuple[MCPTool, ...]:
        client = await self._ensure()
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        try:
            for _ in range(_MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                listed.extend(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
        except (MCPError, ValidationError) as exc:
            raise MCPUnavailableError(
                f"MCP server {self.name!r} did not list its tools: {_describe(exc)}",
                server=self.name,
            ) from exc
        made = [
            self._tool(item) for item in listed if self.include is None or item.name in self.include
        ]
        named: dict[str, MCPTool] = {}
        for made_tool in made:
            if made_tool is None:
                continue
            if made_tool.name in named:  # "a.b" and "a_b" both become "<server>__a_b"
                log.warning("mcp tool skipped: name taken", server=self.name, tool=made_tool.remote)
                continue
            named[made_tool.name] = made_tool
        tools = tuple(named.values())
        missing = sorted((self.include or frozenset()) - {t.remote for t in tools})
        if missing:
            raise ConfigError(f"MCP server {self.name!r} has no tool {missing}")
        log.info("mcp server started", server=self.name, where=self.where, tools=len(tools))
        return tools

    def local_name(self, tool: str) -> str:
        """The registry's name of the server's ``tool``: ``<server>__<tool>``, any
        character but letters, digits, ``_`` and ``-`` as ``_``."""
        return f"{self.name}{SEPARATOR}{_UNSAFE.sub('_', tool)}"

    def _tool(self, listed: mcp_types.Tool) -> MCPTool | None:
        name = self.local_name(listed.name)
        if not NAME_RE.match(name):
            log.warning("mcp tool skipped: name too long", server=self.name, tool=listed.name[:80])
            return None
        schema = dict(listed.input_schema)
        try:
            kind = validators.validator_for(schema)
            kind.check_schema(schema)
        except SchemaError as exc:
            log.warning(
                "mcp tool skipped: bad schema",
                server=self.name,
                tool=listed.name,
                error=str(exc)[:200],
            )
            return None
        remote = listed.name

        async def invoke(params: MCPArguments, call: ToolCall) -> Any:
            return await self.call(remote, params.root, key=call.key)

        return MCPTool(
            name=name,
            fn=invoke,
            input=MCPArguments,
            permissions=self.permissions,
            timeout_s=self.timeout_s,
            rate_limit=self.rate_limit,
            breaker=self.breaker,
            provider=self.name,
            once=self.once,
            description=listed.description or listed.title or "",
            server=self.name,
            remote=remote,
            input_schema=schema,
            checker=kind(schema),
        )

    # Calls --------------------------------------------------------------
    async def call(self, tool: str, arguments: dict[str, Any], *, key: str = "") -> Any:
        """Call ``tool`` (its name on the server) once; returns its structured
        content, else its text (the blocks joined), else its content blocks.
        Raises MCPUnavailableError, MCPToolError, UnknownToolError,
        ToolValidationError (the server refused the arguments)."""
        qualified = self.local_name(tool)
        session = await self._live()
        assert session.client is not None
        try:
            meta = cast("mcp_types.RequestParamsMeta", {KEY_META: key}) if key else None
            result = await session.client.call_tool(tool, arguments, meta=meta)
        except MCPError as exc:
            raise self._refused(session, qualified, exc) from exc
        except (RuntimeError, ValidationError) as exc:  # a result that breaks its schema
            raise MCPToolError(
                f"MCP tool {qualified!r} answered badly: {_describe(exc)}",
                tool=qualified,
                server=self.name,
            ) from exc
        if result.is_error:
            raise MCPToolError(
                f"MCP tool {qualified!r} failed: {_text(result) or 'no message'}",
                tool=qualified,
                server=self.name,
            )
        return _value(result)

    def _refused(self, session: _Session, qualified: str, exc: MCPError) -> ToolError:
        if exc.code == mcp_types.CONNECTION_CLOSED:
            session.ended.set()  # the next call restarts it
            return MCPUnavailableError(
                f"MCP server {self.name!r} went away during a call of {qualified!r} "
                f"(not sent again; the next call {self._start_verb}s it again)",
                tool=qualified,
                server=self.name,
            )
        if exc.code == mcp_types.METHOD_NOT_FOUND:
            return UnknownToolError(
                f"MCP server {self.name!r}: {exc.error.message}", tool=qualified
            )
        if exc.code == mcp_types.INVALID_PARAMS:
            return ToolValidationError(
                f"MCP server {self.name!r} refused the params of {qualified!r}: "
                f"{exc.error.message}",
                tool=qualified,
                errors=[exc.error.message],
            )
        return MCPToolError(
            f"MCP server {self.name!r} refused {qualified!r} (code {exc.code}): "
            f"{exc.error.message}",
            tool=qualified,
            server=self.name,
        )


def _text(result: mcp_types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, mcp_types.TextContent))


def _value(result: mcp_types.CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    if all(isinstance(b, mcp_types.TextContent) for b in result.content):
        return _text(result)
    return [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content]


def _describe(exc: BaseException | None) -> str:
    """One line about an error (an exception group: its first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


__all__ = [
    "KEY_META",
    "MCPArguments",
    "MCPTool",
    "MCPToolError",
    "MCPTools",
    "MCPUnavailableError",
]
