"""The examples' model: a scripted stand-in, served in each worker unless a real one is set.

Each example ships the answers its agents get from the model, a script for
``agenticflow llm-stub`` (``llm-script.yaml`` beside its ``app.py``), and
declares it with :meth:`LocalModel.serve`::

    LocalModel.serve(app, Path(__file__).with_name("llm-script.yaml"))

When a worker starts the app, the model is served from the script on a free
127.0.0.1 port in the worker's own process (the stub's server,
:class:`agenticflow.cluster.llm_stub.Stub`, under uvicorn), and the app's
agents are pointed at it (:attr:`AgentApp.llm_endpoints`). Nothing to start
by hand: ``make demo``, ``agenticflow dev``, ``agenticflow worker --app ...`` and
``agenticflow.testing.cluster(app)`` all run the examples the same way, with
the same answers every time.

With a real provider configured -- ``AGENTICFLOW_LLM_BASE_URL`` (and
``AGENTICFLOW_LLM_MODEL``, ``AGENTICFLOW_LLM_API_KEY``) in the workers'
environment, or ``llm_base_url`` in their profile -- the workers' settings win:
the stub is not started (from the environment) or not called (a profile), and
the agents ask the real model.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Generator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from agenticflow.cluster.llm_stub import Stub, parse_script, read_script
from agenticflow.worker.app import AgentApp, LLMEndpoint

MODEL = "agenticflow-stub"
"""The model name the examples ask for when no ``AGENTICFLOW_LLM_MODEL`` is set."""

CONFIGURED = ("AGENTICFLOW_LLM_BASE_URL", "OPENAI_BASE_URL")
"""Environment variables that configure a real endpoint: with one set, no stub."""

KEPT_REQUESTS = 100
"""Requests the stub remembers (``GET /stub/requests``): a worker serving for
days keeps the latest, not every one."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the worker's entry point owns those."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _forgetting(stub: Stub) -> ASGIApp:
    """The stub's application, keeping only its latest :data:`KEPT_REQUESTS` requests."""
    app = stub.app()

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            del stub.requests[:-KEPT_REQUESTS]

    return serve


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Return once ``server`` listens; raises why ``task`` (its serving) stopped."""
    while not server.started:  # uvicorn sets a flag, not an event
        if task.done():
            await task
            raise OSError("the model's server stopped before it listened")
        await asyncio.sleep(0.005)


class LocalModel:
    """An app service (see :attr:`AgentApp.services`): the scripted model of
    ``owner``'s agents, served while a worker of this process serves them."""

    def __init__(self, owner: AgentApp, script: Path, *, model: str = MODEL) -> None:
        self.owner = owner
        self.script = script
        self.model = model
        self.url = ""
        """``http://127.0.0.1:PORT/v1`` while served, else empty."""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._apps: list[AgentApp] = []

    @classmethod
    def serve(cls, owner: AgentApp, script: Path, *, model: str = MODEL) -> LocalModel:
        """Declare the scripted model of ``owner``'s agents (added to its services)."""
        service = cls(owner, script, model=model)
        owner.services.append(service)
        return service

    def __repr__(self) -> str:
        return f"LocalModel({self.script.name!r} of {self.owner.name!r})"

    @staticmethod
    def configured() -> bool:
        """Whether the environment names a real endpoint (then no stub is served)."""
        return any(os.environ.get(name) for name in CONFIGURED)

    async def start(self, app: AgentApp) -> None:
        """Serve the script (once per process: other workers share it) and point
        the owner's agents in ``app`` at it; raises OSError, ValueError (a bad
        script) or TimeoutError (the server did not come up in 10 s)."""
        if self.configured():
            return
        async with self._lock:
            if self._users == 0:
                await self._listen()
            self._users += 1
            self._apps.append(app)
        endpoint = LLMEndpoint(base_url=self.url, model=self.model)
        for agent in self.owner.agents:
            app.llm_endpoints[agent.name] = endpoint

    async def _listen(self) -> None:
        rules = parse_script(await asyncio.to_thread(read_script, self.script))
        stub = Stub(rules)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            _forgetting(stub), log_config=None, access_log=False, lifespan="off"
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"model-{self.owner.name}")
        try:
            async with asyncio.timeout(10):
                await _started(server, task)
        except BaseException:
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
            sock.close()
            raise
        self._server, self._task = server, task
        self.url = f"http://127.0.0.1:{port}/v1"

    async def close(self) -> None:
        """Stop serving once the last worker of this process is done (idempotent)."""
        async with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users or self._server is None or self._task is None:
                return
            for app in self._apps:  # no agent is left pointing at a stopped server
                for agent in self.owner.agents:
                    app.llm_endpoints.pop(agent.name, None)
            self._apps.clear()
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
            self.url = ""


__all__ = ["CONFIGURED", "KEPT_REQUESTS", "MODEL", "LocalModel"]
