"""A client for an OpenAI-compatible chat-completions endpoint, made to fail clearly.

:class:`ChatClient` POSTs ``{base_url}/chat/completions`` and returns the
model's answer (:class:`ChatAnswer`). Every call is bounded, retried and
guarded:

- each attempt is bounded twice: by httpx's timeout (connect, read, write,
  pool) and by an ``asyncio.timeout`` around the whole request, so a server
  that trickles its body cannot hold it longer;
- a connection error, a timeout, a 429 or a 5xx is retried with capped
  exponential backoff, up to ``attempts`` tries;
- every attempt goes through a :class:`~agenticflow.shared.resilience.CircuitBreaker`
  (one per client): after ``breaker_failures`` failures in a row the endpoint
  is not called at all for ``breaker_recovery_s``;
- any other 4xx (a wrong key, an unknown model) fails at once with the
  server's own message. A 400 while JSON mode (``response_format``) is on is
  tried once more without it, since not every server supports it.

Everything ends as :class:`~agenticflow.shared.errors.PlannerUnavailableError` saying what
happened, where, and what to do; httpx's errors do not leave this module. An
answer whose *content* is useless (empty, not JSON) is the caller's business:
this module only checks the protocol (a JSON body with ``choices``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from agenticflow.shared.errors import PlannerUnavailableError
from agenticflow.shared.resilience import CircuitBreaker, CircuitOpenError, Sleep, retry_async

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
"""4xx answers that mean "try again later", not "you asked wrongly"."""

_HINTS = {
    401: " (check AGENTICFLOW_LLM_API_KEY)",
    403: " (check AGENTICFLOW_LLM_API_KEY)",
    404: " (check AGENTICFLOW_LLM_BASE_URL and AGENTICFLOW_LLM_MODEL)",
}
"""What to check after a refusal, by status."""


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    """The first choice of a chat completion."""

    content: str | None
    """The model's text; None when it sent none."""
    finish_reason: str | None = None
    refusal: str | None = None
    """A model's refusal, for servers that report it apart from the content."""


class _AttemptError(PlannerUnavailableError):
    """One attempt failed; ``transient`` failures are retried."""

    transient = False


class _TransientError(_AttemptError):
    """Down, slow, overloaded or failing: worth another try."""

    transient = True


class _RefusedError(_AttemptError):
    """The server refused the request itself (4xx): another try will not help."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class _ProtocolError(_AttemptError):
    """A 2xx that does not speak the chat-completions protocol."""


def completions_url(base_url: str) -> str:
    """``{base_url}/chat/completions`` (a full completions URL is kept as is)."""
    base = base_url.strip().rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


class ChatClient:
    """Calls one chat-completions endpoint with one model; see the module docstring.

    ``client`` (an ``httpx.AsyncClient``) is used as given and not closed;
    without it each :meth:`complete` opens and closes its own. ``sleep`` (the
    backoff's) is injectable so tests need not wait.
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        attempts: int = 3,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        breaker_failures: int = 5,
        breaker_recovery_s: float = 30.0,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.url = completions_url(base_url)
        self.model = model
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._api_key = api_key
        self._backoff = (backoff_initial_s, backoff_max_s)
        # Refusals (4xx) say nothing about the endpoint's health: not counted.
        self.breaker = breaker or CircuitBreaker(
            f"llm:{self.url}",
            failure_threshold=breaker_failures,
            recovery_timeout_s=breaker_recovery_s,
            excluded=(_RefusedError,),
        )
        self._client = client
        self._sleep = sleep
        self._json_mode = True
        self._last_failure = ""
        """Why the last failed attempt failed, for the open circuit's message."""
        self._ssl: ssl.SSLContext | None = None

    async def complete(
        self, messages: Sequence[Mapping[str, str]], *, json_mode: bool = True
    ) -> ChatAnswer:
        """The model's answer to ``messages``.

        Raises PlannerUnavailableError when the endpoint is unreachable, too
        slow, failing after every attempt, refuses the request (4xx), breaks
        the protocol, or its circuit is open.
        """
        body: dict[str, Any] = {"model": self.model, "messages": list(messages), "temperature": 0}
        if json_mode and self._json_mode:
            body["response_format"] = {"type": "json_object"}
        if self._client is not None:
            return await self._complete(self._client, body)
        if self._ssl is None:  # loading the CA bundle costs more than a local request
            self._ssl = httpx.create_ssl_context()
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s), verify=self._ssl
        ) as client:
            return await self._complete(client, body)

    async def _complete(self, client: httpx.AsyncClient, body: dict[str, Any]) -> ChatAnswer:
        try:
            try:
                return await self._with_retries(client, body)
            except _RefusedError as exc:
                if exc.status != 400 or "response_format" not in body:
                    raise
                # Not every server knows JSON mode; the prompt asks for JSON anyway.
                self._json_mode = False
                body = {k: v for k, v in body.items() if k != "response_format"}
                return await self._with_retries(client, body)
        except CircuitOpenError as exc:
            last = f" (last: {self._last_failure})" if self._last_failure else ""
            raise PlannerUnavailableError(
                f"the LLM endpoint {self.url} failed {self.breaker.failure_threshold} times "
                f"in a row{last}, so it is not being called; retry in {exc.retry_after_s:.0f}s"
            ) from exc
        except _TransientError as exc:
            tries = f"{self.attempts} attempts" if self.attempts > 1 else "1 attempt"
            raise PlannerUnavailableError(f"{exc} (gave up after {tries})") from exc
        except _AttemptError as exc:
            raise PlannerUnavailableError(str(exc)) from exc

    async def _with_retries(self, client: httpx.AsyncClient, body: dict[str, Any]) -> ChatAnswer:
        initial_s, max_s = self._backoff
        return await retry_async(
            lambda: self._attempt(client, body),
            attempts=self.attempts,
            initial_s=initial_s,
            max_s=max_s,
            retry_on=_TransientError,
            give_up_on=CircuitOpenError,
            sleep=self._sleep,
            what="LLM call",
        )

    async def _attempt(self, client: httpx.AsyncClient, body: dict[str, Any]) -> ChatAnswer:
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # The timeout sits inside the breaker so that it counts as a failure
        # (the breaker ignores a cancellation, which is what it is outside).
        async with self.breaker:
            try:
                async with asyncio.timeout(self.timeout_s):
                    response = await client.post(
                        self.url, json=body, headers=headers, timeout=self.timeout_s
                    )
            except (TimeoutError, httpx.TimeoutException) as exc:
                self._last_failure = f"no answer within {self.timeout_s:g}s"
                raise _TransientError(
                    f"the LLM endpoint {self.url} did not answer within {self.timeout_s:g}s"
                ) from exc
            except httpx.TransportError as exc:
                self._last_failure = _describe(exc)
                raise _TransientError(
                    f"cannot reach the LLM endpoint {self.url} ({self._last_failure})"
                ) from exc
            try:
                return _read(response, self.url)
            except _AttemptError as exc:
                self._last_failure = str(exc)
                raise


def _read(response: httpx.Response, url: str) -> ChatAnswer:
    """The answer in a response, or the failure it stands for."""
    status = response.status_code
    if status >= 500 or status in _TRANSIENT_STATUS:
        raise _TransientError(
            f"the LLM endpoint {url} answered HTTP {status}: {_message(response)}"
        )
    if status >= 400:
        hint = _HINTS.get(status, "")
        raise _RefusedError(
            f"the LLM endpoint {url} refused the request with HTTP {status}: "
            f"{_message(response)}{hint}",
            status=status,
        )
    if status >= 300:
        raise _ProtocolError(
            f"the LLM endpoint {url} answered HTTP {status} (is the base URL right?)"
        )
    try:
        data = response.json()
    except ValueError as exc:
        raise _ProtocolError(
            f"the LLM endpoint {url} answered HTTP {status} with a body that is not JSON: "
            f"{_snippet(response.text)} (is it a chat-completions endpoint?)"
        ) from exc
    choices = data.get("choices") if isinstance(data, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise _ProtocolError(
            f"the LLM endpoint {url} answered without choices[0].message: "
            f"{_snippet(response.text)} (is it a chat-completions endpoint?)"
        )
    assert isinstance(first, dict)
    content = message.get("content")
    refusal = message.get("refusal")
    reason = first.get("finish_reason")
    return ChatAnswer(
        content=content if isinstance(content, str) else None,
        finish_reason=reason if isinstance(reason, str) else None,
        refusal=refusal if isinstance(refusal, str) else None,
    )


def _message(response: httpx.Response) -> str:
    """The error message in an OpenAI-style error body, else the body's start."""
    try:
        data = response.json()
    except ValueError:
        return _snippet(response.text) or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return _snippet(str(error["message"]))
    if isinstance(error, str) and error:
        return _snippet(error)
    return _snippet(response.text)


def _snippet(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}..."


def _describe(exc: httpx.TransportError) -> str:
    """Why a connection failed, in words: httpx's own message is often only
    "All connection attempts failed"; the socket error under it says why."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve the host: {cause.strerror}"
        if isinstance(cause, OSError) and cause.errno is not None and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


__all__ = ["ChatAnswer", "ChatClient", "completions_url"]
