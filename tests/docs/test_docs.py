"""Every code block of the docs and the README runs (see tests/docs/blocks.py).

One test per page: the page's blocks run in order in a fresh directory,
against a coordinator and a worker of the page's own (a fresh subject prefix
on the session's nats-server). The worker serves the examples' agents until a
Python block of the page defines an ``app`` of its own, then that app.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenticflow.cluster.llm_stub import LLMStubProcess, parse_script
from agenticflow.cluster.nats_server import NatsServer
from agenticflow.coordinator.service import Coordinator
from agenticflow.shared.bus.transport import Bus
from agenticflow.shared.ops.config import Settings
from agenticflow.worker.app import AgentApp
from agenticflow.worker.runtime import Worker
from agenticflow.worker.tools import cluster_state
from tests.conftest import unique_prefix
from tests.docs.blocks import NOT_CODE, ROOT, RUN, Block, blocks, pages
from tests.docs.cli_lines import agenticflow_commands, check
from tests.support.llm import llm_stub

PAGES = pages()
BASH_TIMEOUT_S = 90
MAX_SKIPPED_SHARE = 0.25
"""Blocks that cannot run are the exception: at most this share of all code blocks."""


def scripts_a_model(page: Path) -> bool:
    """Whether the page has an LLM stub's script (a YAML block with ``rules``):
    it then runs with the local LLM stub as its model endpoint
    (``AGENTICFLOW_LLM_BASE_URL``), answering by its scripts. Other pages'
    agents that call a model use their own (the examples' scripted models)."""
    for block in blocks(page):
        if block.language == "yaml" and not block.skip:
            data = yaml.safe_load(block.code)
            if isinstance(data, dict) and "rules" in data:
                return True
    return False


__all__ = ["llm_stub"]  # the fixture, imported for pytest


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_every_block_has_a_known_language_and_skips_are_few() -> None:
    every = [b for page in PAGES for b in blocks(page)]
    unknown = [
        f"{b.where} ({b.language or 'no language'})"
        for b in every
        if b.language not in RUN | NOT_CODE
    ]
    assert not unknown, f"blocks in no known language: {unknown}"
    code = [b for b in every if b.language in RUN]
    skipped = [b for b in code if b.skip]
    assert len(code) >= 60
    assert len(skipped) <= MAX_SKIPPED_SHARE * len(code), [b.where for b in skipped]
    bad_skips = [b.where for b in every if b.skip and b.language not in RUN]
    assert not bad_skips, f"a skip marker on a block that is not code: {bad_skips}"


def test_skipped_shell_blocks_name_only_commands_and_options_that_exist() -> None:
    problems = [
        f"{b.where}: {problem}"
        for page in PAGES
        for b in blocks(page)
        if b.language == "bash" and b.skip
        for args in agenticflow_commands(b.code)
        if (problem := check(args))
    ]
    assert not problems, "\n".join(problems)


class _Page:
    """One page's run: its directory, namespace, bus, coordinator and worker."""

    def __init__(
        self, directory: Path, settings: Settings, stub: LLMStubProcess | None = None
    ) -> None:
        self.directory = directory
        self.settings = settings
        self.stub = stub
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        self.app: AgentApp | None = None
        self.stack = contextlib.AsyncExitStack()
        self.worker_stack: contextlib.AsyncExitStack | None = None
        self.bus: Bus | None = None
        self.workers = 0

    async def start(self) -> None:
        self.bus = await Bus.connect(self.settings, name="docs")
        self.stack.push_async_callback(self.bus.close)
        self.stack.push_async_callback(lambda: cluster_state(self._bus).aclose())
        await self.stack.enter_async_context(Coordinator(bus=self.bus, node_id="docs-coordinator"))
        from agenticflow.examples.apps import app as examples

        await self.serve(examples)

    @property
    def _bus(self) -> Bus:
        assert self.bus is not None
        return self.bus

    async def serve(self, app: AgentApp) -> None:
        if self.worker_stack is not None:
            await self.worker_stack.aclose()
        self.app = app
        self.workers += 1
        self.worker_stack = contextlib.AsyncExitStack()
        await self.worker_stack.enter_async_context(
            Worker(bus=self._bus, app=app, node_id=f"docs-worker-{self.workers}", concurrency=8)
        )

    async def close(self) -> None:
        if self.worker_stack is not None:
            await self.worker_stack.aclose()
        await self.stack.aclose()

    def write(self, block: Block) -> Path | None:
        name = block.file_name
        if name is None:
            return None
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block.code, encoding="utf-8")
        return path

    async def run(self, block: Block) -> None:
        path = self.write(block)
        runner = getattr(self, f"_{block.language}")
        await runner(block, path)
        app = self.namespace.get("app")
        if isinstance(app, AgentApp) and app is not self.app:
            await self.serve(app)

    async def _python(self, block: Block, path: Path | None) -> None:
        if path is not None and path.suffix == ".py":
            name = path.stem
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            self.namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
            return
        code = compile(block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.co_flags & 0x80:  # CO_COROUTINE: top-level await, run on this loop
            await eval(code, self.namespace)
        elif "asyncio.run(" in block.code:
            # A script with its own event loop: run it beside ours, which serves it.
            await asyncio.to_thread(exec, code, self.namespace)
        else:
            exec(code, self.namespace)

    async def _bash(self, block: Block, path: Path | None) -> None:
        for args in agenticflow_commands(block.code):
            problem = check(args)
            assert problem is None, f"{block.where}: {problem}"
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AGENTICFLOW_NATS_URL": self.settings.nats_url,
            "AGENTICFLOW_PREFIX": self.settings.prefix,
            "AGENTICFLOW_LOG_FORMAT": "json",
            "NO_COLOR": "1",
        }
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            block.code,
            cwd=self.directory,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(process.communicate(), BASH_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"{block.where}: still running after {BASH_TIMEOUT_S} s") from None
        assert process.returncode == 0, (
            f"{block.where}: exit {process.returncode}\n{output.decode(errors='replace')[-4000:]}"
        )

    async def _yaml(self, block: Block, path: Path | None) -> None:
        from agenticflow.coordinator.supervisor.templates import load_template
        from agenticflow.shared.graph.workflow import TaskSpec, parse_workflow

        data = yaml.safe_load(block.code)
        if isinstance(data, list):
            for task in data:
                TaskSpec.model_validate(task)
        elif isinstance(data, dict) and "template" in data:
            assert path is not None, f"{block.where}: a template block names its file"
            load_template(path)
        elif isinstance(data, dict) and "rules" in data:  # an LLM stub's script
            parse_script(data)
            if self.stub is not None:
                await self.stub.aload(data)
        elif isinstance(data, dict) and "tasks" in data:
            parse_workflow({"name": "docs", **data}, source=block.where)
        else:
            raise AssertionError(f"{block.where}: YAML that is no workflow, task list or template")

    async def _toml(self, block: Block, path: Path | None) -> None:
        from agenticflow.shared.security.rbac import Policy

        Policy.from_dict(tomllib.loads(block.code), where=block.where)

    async def _json(self, block: Block, path: Path | None) -> None:
        json.loads(block.code)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("page", PAGES, ids=_id)
async def test_the_page_runs(
    page: Path,
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    runnable = [b for b in blocks(page) if b.language in RUN and not b.skip]
    if not runnable:
        pytest.skip("no runnable block")
    settings = Settings(nats_url=nats_server.url, prefix=unique_prefix("doc"))
    stub: LLMStubProcess | None = None
    if scripts_a_model(page):
        stub = request.getfixturevalue("llm_stub")
        await stub.aload({"rules": []})
        llm = {"llm_base_url": stub.url, "llm_model": "stub-model"}
        settings = settings.model_copy(update=llm)
        monkeypatch.setenv("AGENTICFLOW_LLM_BASE_URL", stub.url)
        monkeypatch.setenv("AGENTICFLOW_LLM_MODEL", "stub-model")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("AGENTICFLOW_NATS_URL", settings.nats_url)
    monkeypatch.setenv("AGENTICFLOW_PREFIX", settings.prefix)
    # The examples' workflow files and the deploy files, where a checkout has them.
    for folder in ("examples", "deploy"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    run = _Page(tmp_path, settings, stub)
    await run.start()
    try:
        for block in runnable:
            await run.run(block)
    finally:
        await run.close()
        for name in [
            n
            for n, m in sys.modules.items()
            if str(tmp_path) in str(getattr(m, "__file__", "") or "")
        ]:
            del sys.modules[name]
