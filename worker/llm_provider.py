"""One request to an OpenAI-compatible chat-completions endpoint, over httpx.

:class:`ChatProvider` POSTs ``{base_url}/chat/completions`` and returns the
answer as plain data (:func:`normalize`): the text, the tool calls with their
arguments decoded, the finish reason, the model and the token usage. With
``on_token`` it asks for a stream (Server-Sent Events) and hands each piece
of text to ``on_token`` as it arrives, assembling the same answer.

Each try is bounded by httpx's timeout and an ``asyncio.timeout`` around the
whole request (a server that trickles its body cannot hold it longer). A
connection error, a timeout, a 408/409/425/429 or a 5xx is tried again with
capped exponential backoff (a 429's ``Retry-After`` is honoured, up to the
cap), up to ``attempts`` tries -- but not once a stream has handed tokens on,
which another try would repeat -- then raises LLMUnavailableError; any other 4xx
raises LLMRequestError with the provider's own message; a 2xx that is not a
chat completion raises LLMResponseError. httpx's errors do not leave this
module. The API key goes in the ``Authorization`` header only: it is never
logged, put in an error, or returned.

Durability (recording, caching, breakers) is the caller's:
:mod:`agenticflow.worker.llm`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from agenticflow.shared.errors import LLMRequestError, LLMResponseError, LLMUnavailableError
from agenticflow.shared.resilience import Sleep

OnToken = Callable[[str], Awaitable[None]]
"""Receives each piece of text of a streamed answer."""

_TRANSIENT = frozenset({408, 409, 425, 429})
"""4xx answers that mean "try again later", not "you asked wrongly"."""
_MAX_RETRY_AFTER_S = 30.0


def completions_url(base_url: str) -> str:
    """``{base_url}/chat/completions`` (a full completions URL is kept as is)."""
    base = base_url.strip().rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def provider_name(base_url: str) -> str:
    """The endpoint's host and port, as named in errors and breaker keys."""
    parts = urlsplit(base_url if "://" in base_url else f"http://{base_url}")
    return parts.netloc or base_url


class TransientError(Exception):
    """One try failed in a way worth another (down, slow, 429, 5xx, a broken
    stream); it never leaves a provider: :meth:`ChatProvider.send` raises
    LLMUnavailableError once the tries are spent."""

    def __init__(self, message: str, status: int | None = None, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ChatProvider:
    """One OpenAI-compatible endpoint (see the module docstring).

    ``client`` (an ``httpx.AsyncClient``) is used as given and not closed;
    without it each :meth:`send` opens its own."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = self._endpoint(base_url)
        self.provider = provider_name(base_url)
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._api_key = api_key
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._client = client
        self._sleep = sleep

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.url!r})"

    # What differs between APIs (see agenticflow.worker.llm_anthropic) ---------
    @staticmethod
    def _endpoint(base_url: str) -> str:
        return completions_url(base_url)

    def _request_body(self, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        """The request as this API takes it (``body`` is a chat-completions request)."""
        if not stream:
            return body
        return {**body, "stream": True, "stream_options": {"include_usage": True}}

    def _parse(self, data: Any) -> dict[str, Any]:
        """A whole answer, normalized (:func:`normalize`); raises LLMResponseError."""
        return normalize(data, provider=self.provider)

    async def send(
        self, body: dict[str, Any], *, on_token: OnToken | None = None
    ) -> dict[str, Any]:
        """The answer to ``body`` (a chat-completions request), normalized.

        Raises LLMUnavailableError, LLMRequestError, LLMResponseError."""
        body = self._request_body(body, stream=on_token is not None)
        if self._client is not None:
            return await self._send(self._client, body, on_token)
        async with httpx.AsyncClient() as client:
            return await self._send(client, body, on_token)

    async def _send(
        self, client: httpx.AsyncClient, body: dict[str, Any], on_token: OnToken | None
    ) -> dict[str, Any]:
        delay, cap = self._backoff
        last: TransientError | None = None
        streamed = [False]
        counted: OnToken | None = None
        if on_token is not None:
            streaming = on_token

            async def counted(piece: str) -> None:
                streamed[0] = True
                await streaming(piece)

        tries = 0
        for attempt in range(1, self.attempts + 1):
            tries = attempt
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await self._once(client, body, counted)
            except TimeoutError:
                last = TransientError(f"no answer within {self.timeout_s:g}s")
            except TransientError as exc:
                last = exc
            if streamed[0]:
                break  # tokens already went to readers: another try would repeat them
            if attempt < self.attempts:
                await self._sleep(min(max(delay, last.retry_after), cap))
                delay = min(delay * 2, cap)
        assert last is not None
        raise LLMUnavailableError(
            f"the LLM endpoint {self.provider} failed {tries} "
            f"tr{'y' if tries == 1 else 'ies'}: {last}",
            provider=self.provider,
            status=last.status,
            retry_after_s=last.retry_after,
        )

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        return headers

    async def _once(
        self, client: httpx.AsyncClient, body: dict[str, Any], on_token: OnToken | None
    ) -> dict[str, Any]:
        request = client.build_request(
            "POST", self.url, json=body, headers=self._headers(), timeout=self.timeout_s
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:  # connect, read, write, pool, protocol
            raise TransientError(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
        try:
            if response.status_code >= 300:
                await response.aread()
                self._refuse(response)
            if on_token is not None and "text/event-stream" in response.headers.get(
                "content-type", ""
            ):
                return await self._read_stream(response, on_token)
            try:
                data = json.loads(await response.aread())
            except ValueError as exc:
                raise self._malformed("the answer is not JSON") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"{type(exc).__name__}: {exc or 'no detail'}") from exc
            answer = self._parse(data)
            if on_token is not None and answer["content"]:
                await on_token(answer["content"])  # a server that does not stream
            return answer
        finally:
            await response.aclose()

    def _refuse(self, response: httpx.Response) -> None:
        status = response.status_code
        said = _error_message(response)
        if status in _TRANSIENT or status >= 500:
            raise TransientError(f"HTTP {status}: {said}", status, _retry_after(response))
        hint = " (check AGENTICFLOW_LLM_API_KEY)" if status in (401, 403) else ""
        raise LLMRequestError(
            f"the LLM endpoint {self.provider} refused the request (HTTP {status}): {said}{hint}",
            provider=self.provider,
            status=status,
        )

    def _malformed(self, why: str) -> LLMResponseError:
        return LLMResponseError(
            f"the LLM endpoint {self.provider} answered with no chat completion: {why}",
            provider=self.provider,
        )

    async def _read_stream(self, response: httpx.Response, on_token: OnToken) -> dict[str, Any]:
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish: str | None = None
        model = ""
        usage: Any = None
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError as exc:
                    raise self._malformed("a streamed event is not JSON") from exc
                if not isinstance(chunk, dict):
                    raise self._malformed("a streamed event is not an object")
                model = str(chunk.get("model") or model)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    piece = delta.get("content")
                    if isinstance(piece, str) and piece:
                        text.append(piece)
                        await on_token(piece)
                    for part in delta.get("tool_calls") or []:
                        _merge_call(calls, part)
        except httpx.TransportError as exc:
            raise TransientError(f"the stream broke: {type(exc).__name__}: {exc}") from exc
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
        if calls:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
        data = {
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }
        return normalize(data, provider=self.provider)


def _merge_call(calls: dict[int, dict[str, Any]], part: Any) -> None:
    if not isinstance(part, dict):
        return
    index = part.get("index", 0)
    call = calls.setdefault(
        index if isinstance(index, int) else 0,
        {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
    )
    if part.get("id"):
        call["id"] = str(part["id"])
    fn = part.get("function") or {}
    if isinstance(fn, dict):
        call["function"]["name"] += str(fn.get("name") or "")
        call["function"]["arguments"] += str(fn.get("arguments") or "")


def normalize(data: Any, *, provider: str = "") -> dict[str, Any]:
    """A chat completion as plain data: ``content``, ``tool_calls`` (``id``,
    ``name``, ``arguments`` as a dict), ``finish_reason``, ``model`` and
    ``usage`` (``input_tokens``, ``output_tokens``). Raises LLMResponseError."""

    def bad(why: str) -> LLMResponseError:
        return LLMResponseError(
            f"the LLM endpoint {provider} answered with no chat completion: {why}",
            provider=provider,
        )

    if not isinstance(data, dict):
        raise bad("the answer is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad("it has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise bad("its first choice has no message")
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if content is not None and not isinstance(content, str):
        raise bad("the message's content is not text")
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad(f"tool call {i} has no function name")
        raw = fn.get("arguments") or "{}"
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise bad(f"the arguments of tool call {i} ({fn['name']}) are not JSON") from exc
        if not isinstance(arguments, dict):
            raise bad(f"the arguments of tool call {i} ({fn['name']}) are not a JSON object")
        calls.append(
            {"id": str(call.get("id") or f"call_{i}"), "name": fn["name"], "arguments": arguments}
        )
    found = data.get("usage")
    usage: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        "content": content,
        "tool_calls": calls,
        "finish_reason": choices[0].get("finish_reason"),
        "model": str(data.get("model") or ""),
        "usage": {
            "input_tokens": token_count(usage.get("prompt_tokens", usage.get("input_tokens"))),
            "output_tokens": token_count(
                usage.get("completion_tokens", usage.get("output_tokens"))
            ),
        },
    }


def token_count(value: Any) -> int:
    """A token count from an answer (0 for anything but a non-negative integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _error_message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    return str(data)[:300]


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", 0)), _MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


__all__ = [
    "ChatProvider",
    "OnToken",
    "TransientError",
    "completions_url",
    "normalize",
    "provider_name",
    "token_count",
]
