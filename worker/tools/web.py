"""Built-in tool ``http_request``: HTTP to an allow-list of hosts (httpx).

::

    http_request = http_tool(allow_hosts=["api.example.com", "*.internal.example"],
                             rate_limit="60/min", max_bytes=1_000_000)

Safety rules (refusals are :class:`~shared.errors.ToolRefusedError`):

- ``http``/``https`` only, and the URL's host must be on the allow-list
  (``host``, ``host:port``, or ``*.domain`` for its subdomains); redirects are
  not followed (a 3xx comes back as is), so one cannot lead elsewhere; the
  caller may not set headers that route or frame the request (``Host``,
  ``:authority``, ``Forwarded``, ``Connection``, ``Transfer-Encoding``...);
- the body is streamed and the request aborted as soon as it passes
  ``max_bytes`` (a ``Content-Length`` over it is refused before reading);
- a timeout per request (:class:`~shared.errors.ToolTimeoutError`), and the
  tool's rate limit, counted across the cluster.

The allow-list checks names, not addresses: a listed name that resolves to
an internal address is still reached. Clients come from a :class:`Pool`
(``pool_size`` requests at a time per worker; metrics in ``pool.metrics()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from shared.errors import ConfigError, ToolError, ToolRefusedError, ToolTimeoutError
from worker.tools.pool import Pool
from worker.tools.spec import BreakerPolicy, RateLimit, Tool, make_tool

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_CALLER_MAY_NOT_SET = frozenset(
    {
        "host",
        ":authority",
        "forwarded",
        "x-forwarded-host",
        "connection",
        "transfer-encoding",
        "content-length",
        "te",
        "upgrade",
        "proxy-authorization",
    }
)
"""Headers that route or frame a request: set by the client, never by the caller
(a ``Host`` would reach another virtual host behind an allowed address)."""


class HttpRequest(BaseModel):
    """Input of ``http_request``."""

    url: str = Field(description="Absolute http(s) URL on an allowed host")
    method: Method = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters")
    body: str | None = Field(default=None, description="Request body (text)")
    json_body: Any = Field(default=None, description="Request body as JSON")


def host_allowed(allow: frozenset[str], host: str, port: int | None) -> bool:
    """Whether ``host`` (and ``port``) is on the allow-list."""
    host = host.lower().rstrip(".")
    if host in allow or (port is not None and f"{host}:{port}" in allow):
        return True
    return any(entry.startswith("*.") and host.endswith(entry[1:]) for entry in allow)


def http_tool(
    allow_hosts: Iterable[str],
    *,
    name: str = "http_request",
    methods: Iterable[str] = ("GET", "HEAD"),
    timeout_s: float = 10.0,
    max_bytes: int = 1024 * 1024,
    rate_limit: RateLimit | str | None = None,
    pool_size: int = 4,
    permission: str = "net:http",
    headers: Mapping[str, str] | None = None,
    breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen
    provider: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Tool:
    """An ``http_request`` tool for ``allow_hosts`` (see the module docstring).

    ``methods`` lists what callers may use (GET and HEAD by default);
    ``headers`` are sent with every request. Raises ConfigError for an empty
    allow-list.
    """
    allow = frozenset(h.lower().rstrip(".") for h in allow_hosts)
    if not allow:
        raise ConfigError(f"{name}: allow_hosts is empty")
    allowed_methods = frozenset(m.upper() for m in methods)
    fixed = dict(headers or {})

    def make_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            trust_env=False,  # no proxy settings from the environment
            headers=fixed,
            transport=transport,
        )

    async def close_client(client: httpx.AsyncClient) -> None:
        await client.aclose()

    pool: Pool[httpx.AsyncClient] = Pool(
        name, factory=make_client, close=close_client, limit=pool_size
    )

    async def http_request(params: HttpRequest) -> dict[str, Any]:
        """Make an HTTP request to an allowed host; returns status, headers and text."""
        try:
            url = httpx.URL(params.url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ToolRefusedError(f"{name}: invalid URL {params.url!r}: {exc}", tool=name) from exc
        if url.scheme not in ("http", "https"):
            raise ToolRefusedError(f"{name}: only http(s) URLs, not {url.scheme!r}", tool=name)
        if not url.host or not host_allowed(allow, url.host, url.port):
            raise ToolRefusedError(
                f"{name}: host {url.host!r} is not allowed (allowed: {', '.join(sorted(allow))})",
                tool=name,
            )
        routing = sorted(h for h in params.headers if h.lower() in _CALLER_MAY_NOT_SET)
        if routing:
            raise ToolRefusedError(
                f"{name}: the caller may not set header(s) {', '.join(routing)}: they choose "
                "where or how the request goes, which the allow-list decides",
                tool=name,
            )
        if params.method not in allowed_methods:
            raise ToolRefusedError(
                f"{name}: method {params.method} is not allowed "
                f"(allowed: {', '.join(sorted(allowed_methods))})",
                tool=name,
            )
        async with pool.acquire() as client:
            return await _fetch(client, params, url, name=name, max_bytes=max_bytes)

    return make_tool(
        http_request,
        name=name,
        permissions={permission},
        timeout_s=timeout_s,
        rate_limit=rate_limit,
        breaker=breaker,
        provider=provider,
        once=True,
        pools=(pool,),
    )


async def _fetch(
    client: httpx.AsyncClient, params: HttpRequest, url: httpx.URL, *, name: str, max_bytes: int
) -> dict[str, Any]:
    request = client.build_request(
        params.method,
        url,
        headers=params.headers,
        params=params.params or None,
        content=params.body,
        json=params.json_body,
    )
    try:
        response = await client.send(request, stream=True)
        try:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ToolRefusedError(
                    f"{name}: response of {declared} bytes is over the {max_bytes}-byte limit",
                    tool=name,
                )
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise ToolRefusedError(
                        f"{name}: response is over the {max_bytes}-byte limit (aborted)",
                        tool=name,
                    )
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        raise ToolTimeoutError(f"{name}: {url.host} did not answer in time", tool=name) from exc
    except httpx.HTTPError as exc:
        raise ToolError(f"{name}: request to {url.host} failed: {exc}", tool=name) from exc
    return {
        "status": response.status_code,
        "headers": dict(response.headers),
        "text": bytes(body).decode(response.encoding or "utf-8", errors="replace"),
        "bytes": len(body),
    }


__all__ = ["HttpRequest", "host_allowed", "http_tool"]
