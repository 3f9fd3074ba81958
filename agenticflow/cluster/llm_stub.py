"""A local OpenAI-compatible chat-completions server that answers from a script.

``agenticflow llm-stub --port 8765 --script script.json`` serves
``POST /v1/chat/completions`` (and ``/chat/completions``; Anthropic's
``POST /v1/messages`` too) on 127.0.0.1, so
agents, examples and tests call a model without a provider, a key or a bill.
It answers with scripted text or tool calls, streams them as Server-Sent
Events when asked (``"stream": true``), fails with any status (429, 500),
answers slowly or with a malformed body, and counts every request so a test
can assert that a call was not repeated.

A script is JSON or YAML (``.yaml``): ``{"rules": [...]}`` (or the list of rules alone). Each
request is answered by the first rule that fits it; a rule fits when each of
its conditions holds:

- ``match``: a substring of the last message's text;
- ``turn``: how many assistant messages the request carries (0 for the first
  step of a conversation, 1 for the second...): an agent loop's steps get the
  same answers however often they are asked;
- ``model``: the requested model;
- ``times``: the rule answers this many requests, then no longer fits.

What the rule answers: ``content`` (text), ``tool_calls`` (``[{"name": ...,
"arguments": {...}}]``), ``status`` (an error with that HTTP status, and
``retry_after`` seconds for a 429), ``malformed`` (a 200 whose body is not a
chat completion), ``delay_s`` (wait before answering), ``chunk_delay_s``
(between streamed chunks), ``break_after`` (drop the connection after that
many streamed pieces of text), ``usage`` (``{"prompt_tokens": n,
"completion_tokens": m}``; by default words are counted) and
``finish_reason``. A request no rule fits is answered ``echo: <last text>``.

Control endpoints: ``GET /stub/wait?count=N&timeout=S`` (answers once N
requests arrived; 408 after S seconds), ``GET /stub/requests`` (every request so far: its number,
``digest`` -- of model, messages and tools, so a streamed and a plain call of
the same request share it -- the body, the rule that answered and the status),
``POST /stub/script`` (a new script; counts start again), ``POST /stub/reset``
and ``GET /health``. :class:`LLMStubProcess` runs the server as a child process
for tests and the docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

READY = "llm-stub listening on "
_ANTHROPIC_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
"""The first line the server prints on stdout, followed by its base URL."""


@dataclass
class Rule:
    """One scripted answer and the requests it answers (see the module docstring)."""

    match: str | None = None
    turn: int | None = None
    model: str | None = None
    times: int | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    retry_after: float | None = None
    malformed: bool = False
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    break_after: int | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    used: int = 0

    @classmethod
    def parse(cls, data: Any, index: int) -> Rule:
        """A rule from its JSON; raises ValueError naming the rule and the field."""
        if not isinstance(data, dict):
            raise TypeError(f"rule {index} is not an object")
        known = set(cls.__dataclass_fields__) - {"used"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"rule {index} has unknown fields: {', '.join(unknown)}")
        calls = data.get("tool_calls") or []
        if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls
        ):
            raise ValueError(f"rule {index}: tool_calls is a list of {{name, arguments}}")
        return cls(**data)

    def fits(self, body: dict[str, Any]) -> bool:
        """Whether this rule answers the request ``body``."""
        if self.times is not None and self.used >= self.times:
            return False
        messages = body.get("messages") or []
        if self.turn is not None:
            turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
            if turn != self.turn:
                return False
        if self.model is not None and body.get("model") != self.model:
            return False
        return self.match is None or self.match in last_text(messages)


def last_text(messages: list[Any]) -> str:
    """The text of the last message (its text parts when it has several)."""
    if not messages or not isinstance(messages[-1], dict):
        return ""
    content = messages[-1].get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def parse_script(data: Any) -> list[Rule]:
    """The rules of a script (``{"rules": [...]}`` or a list); raises ValueError."""
    rules = data.get("rules", []) if isinstance(data, dict) else data
    if not isinstance(rules, list):
        raise TypeError('a script is {"rules": [...]} or a list of rules')
    return [Rule.parse(rule, i) for i, rule in enumerate(rules)]


def read_script(path: Path) -> Any:
    """A script file's data: YAML for ``.yaml``/``.yml``, else JSON; raises
    OSError, ValueError (not JSON or YAML)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML: {exc}") from exc
    return json.loads(text)


def request_digest(body: dict[str, Any]) -> str:
    """What identifies a request: its model, messages and tools."""
    key = {k: body.get(k) for k in ("model", "messages", "tools")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class Stub:
    """The server's state: the script and the requests seen."""

    def __init__(self, rules: list[Rule] | None = None, *, api_key: str | None = None) -> None:
        self.rules = rules or []
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._ids = 0
        self._arrived = asyncio.Condition()

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
                Route("/messages", self.messages, methods=["POST"]),
                Route("/stub/requests", self.list_requests, methods=["GET"]),
                Route("/stub/wait", self.wait_requests, methods=["GET"]),
                Route("/stub/script", self.load_script, methods=["POST"]),
                Route("/stub/reset", self.reset, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),
            ]
        )

    async def health(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def list_requests(self, request: Request) -> Response:
        return JSONResponse({"count": len(self.requests), "requests": self.requests})

    async def wait_requests(self, request: Request) -> Response:
        """Answer once ``count`` requests have arrived (408 after ``timeout`` s)."""
        try:
            count = int(request.query_params.get("count", "1"))
            timeout = float(request.query_params.get("timeout", "30"))
        except ValueError:
            return _error(400, "count and timeout are numbers", "invalid_request_error")
        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= count)
        except TimeoutError:
            return JSONResponse({"count": len(self.requests)}, status_code=408)
        return JSONResponse({"count": len(self.requests)})

    async def reset(self, request: Request) -> Response:
        self.requests.clear()
        for rule in self.rules:
            rule.used = 0
        return JSONResponse({"ok": True})

    async def load_script(self, request: Request) -> Response:
        try:
            self.rules = parse_script(json.loads(await request.body()))
        except (TypeError, ValueError) as exc:  # json's errors are ValueErrors too
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
        self.requests.clear()
        return JSONResponse({"ok": True, "rules": len(self.rules)})

    async def completions(self, request: Request) -> Response:
        """OpenAI's chat completions."""
        return await self._answer(request, "openai")

    async def messages(self, request: Request) -> Response:
        """Anthropic's messages."""
        return await self._answer(request, "anthropic")

    def _authorized(self, request: Request, api: str) -> bool:
        if self.api_key is None:
            return True
        if api == "anthropic":
            return request.headers.get("x-api-key") == self.api_key
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _answer(self, request: Request, api: str) -> Response:  # noqa: PLR0911 - one per outcome
        if not self._authorized(request, api):
            return _error(401, "invalid API key", "invalid_api_key")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "the body has no messages", "invalid_request_error")
        number = len(self.requests) + 1
        rule_index, rule = next(
            ((i, r) for i, r in enumerate(self.rules) if r.fits(body)), (None, None)
        )
        if rule is not None:
            rule.used += 1
        self.requests.append(
            {
                "n": number,
                "digest": request_digest(body),
                "body": body,
                "rule": rule_index,
                "status": 200 if rule is None else rule.status,
                "stream": bool(body.get("stream")),
                "api": api,
                "at": time.time(),
            }
        )
        async with self._arrived:
            self._arrived.notify_all()
        if rule is None:
            rule = Rule(content=f"echo: {last_text(body['messages'])}")
        if rule.delay_s:
            await asyncio.sleep(rule.delay_s)
        if rule.status >= 400:
            headers = {} if rule.retry_after is None else {"retry-after": f"{rule.retry_after:g}"}
            return _error(rule.status, f"scripted error {rule.status}", "server_error", headers)
        if rule.malformed:
            return PlainTextResponse("this is not a chat completion", media_type="application/json")
        self._ids += 1
        answer = _Answer(rule, body, f"chatcmpl-stub-{self._ids}")
        if api == "anthropic":
            if body.get("stream"):
                return StreamingResponse(answer.anthropic_events(), media_type="text/event-stream")
            return JSONResponse(answer.anthropic_message())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(answer.events(include_usage), media_type="text/event-stream")
        return JSONResponse(answer.completion())


class _Answer:
    def __init__(self, rule: Rule, body: dict[str, Any], answer_id: str) -> None:
        self.rule = rule
        self.model = str(body.get("model") or "stub")
        self.id = answer_id
        self.created = int(time.time())
        self.calls: list[dict[str, Any]] = [
            {
                "id": call.get("id") or f"call_{answer_id[-6:]}_{i}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call["arguments"]
                    if isinstance(call.get("arguments"), str)
                    else json.dumps(call.get("arguments") or {}),
                },
            }
            for i, call in enumerate(rule.tool_calls)
        ]
        prompt = sum(len(last_text([m]).split()) for m in body["messages"] if isinstance(m, dict))
        completion = len((rule.content or "").split()) + 5 * len(self.calls)
        self.usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        self.usage.update(rule.usage or {})
        self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]
        self.finish = rule.finish_reason or ("tool_calls" if self.calls else "stop")

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.rule.content}
        if self.calls:
            message["tool_calls"] = self.calls
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
            "usage": self.usage,
        }

    def anthropic_message(self) -> dict[str, Any]:
        """The answer as Anthropic's messages API gives it."""
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self._anthropic_blocks(),
            "stop_reason": _ANTHROPIC_STOP.get(self.finish, self.finish),
            "usage": {
                "input_tokens": self.usage["prompt_tokens"],
                "output_tokens": self.usage["completion_tokens"],
            },
        }

    def _anthropic_blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.rule.content:
            blocks.append({"type": "text", "text": self.rule.content})
        for call in self.calls:
            arguments = json.loads(call["function"]["arguments"] or "{}")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": call["function"]["name"],
                    "input": arguments,
                }
            )
        return blocks

    async def anthropic_events(self) -> AsyncIterator[str]:
        """The answer as Anthropic's stream of events."""
        whole = self.anthropic_message()
        start = {**whole, "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": whole["usage"]["input_tokens"], "output_tokens": 0}
        yield _sse("message_start", {"message": start})
        for index, block in enumerate(whole["content"]):
            if block["type"] == "text":
                yield _sse(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "text", "text": ""}},
                )
                words = block["text"].split(" ")
                for i, word in enumerate(words):
                    if self.rule.chunk_delay_s:
                        await asyncio.sleep(self.rule.chunk_delay_s)
                    if self.rule.break_after is not None and i >= self.rule.break_after:
                        raise ConnectionAbortedError("scripted: the stream breaks here")
                    piece = word if i == len(words) - 1 else f"{word} "
                    delta = {"type": "text_delta", "text": piece}
                    yield _sse("content_block_delta", {"index": index, "delta": delta})
            else:
                head = {**block, "input": {}}
                yield _sse("content_block_start", {"index": index, "content_block": head})
                text = json.dumps(block["input"])
                for part in (text[: len(text) // 2], text[len(text) // 2 :]):
                    delta = {"type": "input_json_delta", "partial_json": part}
                    yield _sse("content_block_delta", {"index": index, "delta": delta})
            yield _sse("content_block_stop", {"index": index})
        usage = {"output_tokens": whole["usage"]["output_tokens"]}
        yield _sse(
            "message_delta", {"delta": {"stop_reason": whole["stop_reason"]}, "usage": usage}
        )
        yield _sse("message_stop", {})

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(data)}\n\n"

    async def events(self, include_usage: bool) -> AsyncIterator[str]:
        yield self._chunk({"role": "assistant", "content": ""})
        text = self.rule.content or ""
        words = text.split(" ")
        for i, word in enumerate(words):
            if self.rule.chunk_delay_s:
                await asyncio.sleep(self.rule.chunk_delay_s)
            piece = word if i == len(words) - 1 else f"{word} "
            if self.rule.break_after is not None and i >= self.rule.break_after:
                raise ConnectionAbortedError("scripted: the stream breaks here")
            if piece:
                yield self._chunk({"content": piece})
        for i, call in enumerate(self.calls):
            fn: dict[str, str] = dict(call["function"])
            head = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": ""},
            }
            yield self._chunk({"tool_calls": [head]})
            args = fn["arguments"]
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                if part:
                    yield self._chunk(
                        {"tool_calls": [{"index": i, "function": {"arguments": part}}]}
                    )
        yield self._chunk({}, self.finish)
        if include_usage:
            data = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage,
            }
            yield f"data: {json.dumps(data)}\n\n"
        yield "data: [DONE]\n\n"


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    script: Path | None = None,
    api_key: str | None = None,
) -> None:
    """Serve until cancelled or SIGINT/SIGTERM; prints :data:`READY` and the base
    URL once listening (``port`` 0: a free one). Raises ValueError for a bad script."""
    import uvicorn

    rules = parse_script(await asyncio.to_thread(read_script, script)) if script else []
    stub = Stub(rules, api_key=api_key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(stub.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    bound = sock.getsockname()[1]

    async def announce() -> None:
        while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, not an event
            await asyncio.sleep(0.01)
        print(f"{READY}http://{host}:{bound}/v1", flush=True)

    async with asyncio.TaskGroup() as group:
        group.create_task(announce())
        group.create_task(server.serve(sockets=[sock]))


class LLMStubProcess:
    """The stub as a child process on a free port (tests, the docs)::

    with LLMStubProcess(script={"rules": [...]}) as stub:
        stub.url  # http://127.0.0.1:PORT/v1
        stub.requests()  # what it was asked
    """

    def __init__(
        self, *, script: Any = None, api_key: str | None = None, start_timeout_s: float = 20.0
    ) -> None:
        self.script = script
        self.api_key = api_key
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> LLMStubProcess:
        """Start the server and wait until it listens; raises RuntimeError."""
        command = [sys.executable, "-m", "agenticflow", "llm-stub", "--port", "0"]
        if self.api_key is not None:
            command += ["--api-key-env", "AGENTICFLOW_LLM_STUB_KEY"]
        env = {**os.environ, "AGENTICFLOW_LLM_STUB_KEY": self.api_key or ""}
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, by path
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout_s
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(READY) or not line:
                break
        if not line.startswith(READY):
            self.stop()
            raise RuntimeError(f"the LLM stub did not start: {line!r}")
        self.url = line[len(READY) :].strip()
        if self.script is not None:
            self.load(self.script)
        return self

    @property
    def root(self) -> str:
        """The server's root URL (without ``/v1``)."""
        return self.url.removesuffix("/v1")

    def load(self, script: Any) -> None:
        """Replace the script (counts start again); raises httpx.HTTPStatusError."""
        httpx.post(f"{self.root}/stub/script", json=script, timeout=10).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """Every request the server received since the last script or reset."""
        found: list[dict[str, Any]] = httpx.get(f"{self.root}/stub/requests", timeout=10).json()[
            "requests"
        ]
        return found

    async def arequests(self) -> list[dict[str, Any]]:
        """:meth:`requests` without blocking the event loop."""
        async with httpx.AsyncClient(timeout=10) as client:
            found: list[dict[str, Any]] = (await client.get(f"{self.root}/stub/requests")).json()[
                "requests"
            ]
        return found

    async def wait_for_requests(self, count: int, *, timeout: float = 30.0) -> None:
        """Return once the server has received ``count`` requests (since the
        last script or reset); raises TimeoutError."""
        async with httpx.AsyncClient(timeout=timeout + 10) as client:
            answer = await client.get(
                f"{self.root}/stub/wait", params={"count": count, "timeout": timeout}
            )
        if answer.status_code == 408:
            raise TimeoutError(
                f"the LLM stub received {answer.json()['count']} of {count} requests "
                f"within {timeout:g}s"
            )
        answer.raise_for_status()

    async def aload(self, script: Any) -> None:
        """:meth:`load` without blocking the event loop."""
        async with httpx.AsyncClient(timeout=10) as client:
            (await client.post(f"{self.root}/stub/script", json=script)).raise_for_status()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(Exception):
                    pipe.close()
        self.proc = None

    def __enter__(self) -> LLMStubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "READY",
    "LLMStubProcess",
    "Rule",
    "Stub",
    "parse_script",
    "read_script",
    "request_digest",
    "serve",
]
