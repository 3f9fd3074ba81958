"""Anthropic's messages API (``POST {base}/messages``) behind the same interface.

:class:`AnthropicProvider` is a :class:`~agenticflow.worker.llm_provider.ChatProvider`
(same tries, backoff, timeouts and errors) that translates the
chat-completions request ``ctx.llm`` builds into a messages request, and the
answer back to the same normalized form, so recording, caching, usage and
``run_agent`` do not know which API answered:

- ``system``/``developer`` messages become the ``system`` parameter;
- an assistant message's ``tool_calls`` become ``tool_use`` blocks, and
  ``tool`` messages ``tool_result`` blocks of one user message;
- tools become ``{name, description, input_schema}``; ``tool_choice``
  ``auto``/``required``/``none``/a function maps to ``auto``/``any``/``none``/``tool``;
- ``max_tokens`` (which the API requires) defaults to :data:`DEFAULT_MAX_TOKENS`;
  ``stop`` becomes ``stop_sequences``; ``seed`` and ``response_format``, which
  the API does not have, are left out;
- the answer's text blocks are the content, its ``tool_use`` blocks the tool
  calls; ``stop_reason`` ``end_turn``/``tool_use``/``max_tokens`` reads as
  ``stop``/``tool_calls``/``length``.

The key goes in ``x-api-key`` only, with ``anthropic-version``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from agenticflow.worker.llm_provider import ChatProvider, OnToken, TransientError, token_count

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
}
_CHOICE = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def messages_url(base_url: str) -> str:
    """``{base_url}/messages`` (a full messages URL is kept as is)."""
    base = base_url.strip().rstrip("/")
    return base if base.endswith("/messages") else base + "/messages"


def to_messages_request(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """A chat-completions request as a messages request (see the module docstring)."""
    system, turns = _turns(body["messages"])
    request: dict[str, Any] = {
        "model": body["model"],
        "messages": turns,
        "max_tokens": body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        request["system"] = "\n\n".join(system)
    if body.get("tools"):
        request["tools"] = [
            {
                "name": tool["function"]["name"],
                "description": tool["function"].get("description", ""),
                "input_schema": tool["function"].get("parameters") or {"type": "object"},
            }
            for tool in body["tools"]
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice in _CHOICE:
        request["tool_choice"] = _CHOICE[choice]
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        request["tool_choice"] = {"type": "tool", "name": choice["function"].get("name")}
    request.update({name: body[name] for name in ("temperature", "top_p") if name in body})
    if "stop" in body:
        stop = body["stop"]
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if stream:
        request["stream"] = True
    return request


def _turns(messages: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The system text, and the conversation as messages-API turns."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            system.append(_text(content))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id", "")),
                "content": _text(content),
            }
            if turns and turns[-1]["role"] == "user" and _is_results(turns[-1]["content"]):
                turns[-1]["content"].append(result)
            else:
                turns.append({"role": "user", "content": [result]})
        elif role == "assistant":
            turns.append({"role": "assistant", "content": _assistant_blocks(message) or ""})
        else:
            turns.append({"role": "user", "content": content if content is not None else ""})
    return system, turns


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.get("content"):
        blocks.append({"type": "text", "text": _text(message["content"])})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        raw = fn.get("arguments") or "{}"
        arguments = json.loads(raw) if isinstance(raw, str) else raw
        blocks.append(
            {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments}
        )
    return blocks


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _is_results(content: Any) -> bool:
    return isinstance(content, list) and all(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


class AnthropicProvider(ChatProvider):
    """Anthropic's messages API (see the module docstring)."""

    @staticmethod
    def _endpoint(base_url: str) -> str:
        return messages_url(base_url)

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _request_body(self, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        return to_messages_request(body, stream=stream)

    def _parse(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise self._malformed("it has no content blocks")
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for i, block in enumerate(data["content"]):
            if not isinstance(block, dict):
                raise self._malformed(f"content block {i} is not an object")
            if block.get("type") == "text":
                text.append(str(block.get("text", "")))
            elif block.get("type") == "tool_use":
                if not isinstance(block.get("name"), str) or not isinstance(
                    block.get("input"), dict
                ):
                    raise self._malformed(f"tool_use block {i} has no name or no object input")
                calls.append(
                    {
                        "id": str(block.get("id") or f"call_{i}"),
                        "name": block["name"],
                        "arguments": block["input"],
                    }
                )
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        reason = data.get("stop_reason")
        return {
            "content": "".join(text) if text else None,
            "tool_calls": calls,
            "finish_reason": _FINISH.get(str(reason), reason),
            "model": str(data.get("model") or ""),
            "usage": {
                "input_tokens": token_count(usage.get("input_tokens")),
                "output_tokens": token_count(usage.get("output_tokens")),
            },
        }

    async def _read_stream(self, response: httpx.Response, on_token: OnToken) -> dict[str, Any]:
        blocks: dict[int, dict[str, Any]] = {}
        message: dict[str, Any] = {"content": [], "usage": {}}
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                try:
                    event = json.loads(line[5:].strip())
                except ValueError as exc:
                    raise self._malformed("a streamed event is not JSON") from exc
                if not isinstance(event, dict):
                    raise self._malformed("a streamed event is not an object")
                if not await self._on_event(event, blocks, message, on_token):
                    break
        except httpx.TransportError as exc:
            raise TransientError(f"the stream broke: {type(exc).__name__}: {exc}") from exc
        for index in sorted(blocks):
            block = blocks[index]
            if block.get("type") == "tool_use":
                try:
                    block["input"] = json.loads(block.pop("input_json") or "{}")
                except ValueError as exc:
                    raise self._malformed("a streamed tool input is not JSON") from exc
            message["content"].append(block)
        return self._parse(message)

    async def _on_event(
        self,
        event: dict[str, Any],
        blocks: dict[int, dict[str, Any]],
        message: dict[str, Any],
        on_token: OnToken,
    ) -> bool:
        """Take one streamed event; False at the end of the message."""
        kind = event.get("type")
        if kind == "error":
            said = (event.get("error") or {}).get("message", "an error event")
            raise TransientError(f"the stream reported: {said}")
        if kind == "message_start":
            start = event.get("message") or {}
            message["model"] = start.get("model", "")
            message["usage"].update(start.get("usage") or {})
        elif kind == "content_block_start":
            block = dict(event.get("content_block") or {})
            if block.get("type") == "tool_use":
                block["input_json"] = ""
            blocks[int(event.get("index", len(blocks)))] = block
        elif kind == "content_block_delta":
            await self._delta(blocks, event, on_token)
        elif kind == "message_delta":
            message["stop_reason"] = (event.get("delta") or {}).get("stop_reason")
            message["usage"].update(event.get("usage") or {})
        return kind != "message_stop"

    async def _delta(
        self, blocks: dict[int, dict[str, Any]], event: dict[str, Any], on_token: OnToken
    ) -> None:
        block = blocks.setdefault(int(event.get("index", 0)), {"type": "text", "text": ""})
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            piece = str(delta.get("text", ""))
            block["text"] = str(block.get("text", "")) + piece
            if piece:
                await on_token(piece)
        elif delta.get("type") == "input_json_delta":
            block["input_json"] = str(block.get("input_json", "")) + str(
                delta.get("partial_json", "")
            )


__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "messages_url",
    "to_messages_request",
]
