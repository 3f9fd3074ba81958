"""Built-in tool ``http_request``: HTTP to an allow-list of hosts and ports (httpx).

::

    http_request = http_tool(allow_hosts=["api.example.com", "*.internal.example:8443"],
                             rate_limit="60/min", max_bytes=1_000_000)

Safety rules (refusals are :class:`~agenticflow.shared.errors.ToolRefusedError`):

- ``http``/``https`` only, and the URL's host *and port* must be on the
  allow-list. Entries: ``host`` allows the scheme's default port only (80 for
  http, 443 for https); ``host:port`` allows that port (either scheme);
  ``host:*`` any port (explicit); ``*.domain`` (with the same port forms)
  the domain's subdomains, not the domain itself; IPv6 literals in brackets
  (``[2001:db8::1]:8080``);
- **addresses are checked, not just names**: the tool resolves the host
  itself and refuses if *any* answer is loopback, private, link-local (the
  cloud metadata address 169.254.169.254 included), multicast, reserved,
  unspecified (``0.0.0.0``, ``::``), shared (100.64/10) or an IPv6 form that
  embeds one (IPv4-mapped, IPv4-compatible, NAT64, 6to4; Teredo and
  site-local are refused outright). Numeric hosts in any spelling
  (``2130706433``, ``0x7f.1``, ``127.1``) resolve like any name and are
  checked the same way. ``allow_networks=["10.1.0.0/16"]`` lets given ranges
  through (an explicit option; nothing private is reached without it);
- **no second resolution**: the connection goes to the checked address (a
  network backend pinned per request), while the URL keeps its name, so TLS
  gets the right SNI and verifies the certificate for the name, and ``Host``
  is the name: a DNS answer that changes between check and connect (DNS
  rebinding) is never used;
- **redirects**: not followed by default (a 3xx comes back with
  ``redirect_to``); with ``max_redirects=N`` each hop is checked like the
  first URL (allow-list, port, addresses), an https to http downgrade is
  refused, a cross-origin hop drops ``Authorization``, ``Cookie`` and the
  tool's fixed ``headers``, and more than N hops are refused;
- the caller may not set headers that route or frame the request (``Host``,
  ``:authority``, ``Forwarded``, ``Connection``, ``Transfer-Encoding``...);
- the body is streamed and the request aborted as soon as it passes
  ``max_bytes`` (a ``Content-Length`` over it is refused before reading);
- a timeout per request (:class:`~agenticflow.shared.errors.ToolTimeoutError`), and the
  tool's rate limit, counted across the cluster.

Clients come from a :class:`Pool` (``pool_size`` requests at a time per
worker; metrics in ``pool.metrics()``). A custom ``transport`` (tests, a
proxy) gets the checked request but connects as it likes: the pinning is the
transport's business then.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpcore
import httpx
from pydantic import BaseModel, Field

from agenticflow.shared.errors import ConfigError, ToolError, ToolRefusedError, ToolTimeoutError
from agenticflow.worker.tools.pool import Pool
from agenticflow.worker.tools.spec import BreakerPolicy, RateLimit, Tool, make_tool

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""``(host, port) -> addresses``: the system resolver unless a test brings its own."""

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

_DROPPED_CROSS_ORIGIN = frozenset({"authorization", "cookie", "proxy-authorization"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ANY_PORT = -1

_TEREDO = ipaddress.IPv6Network("2001::/32")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_COMPAT = ipaddress.IPv6Network("::/96")

_PINS: contextvars.ContextVar[Mapping[tuple[str, int], str]] = contextvars.ContextVar("http_pins")
"""Per request: the checked address for ``(host, port)``; the network backend
connects there and nowhere else."""


class HttpRequest(BaseModel):
    """Input of ``http_request``."""

    url: str = Field(description="Absolute http(s) URL on an allowed host and port")
    method: Method = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters")
    body: str | None = Field(default=None, description="Request body (text)")
    json_body: Any = Field(default=None, description="Request body as JSON")


# --- the allow-list ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostRule:
    """One allow-list entry: a host (or ``*.domain``) and a port.

    ``port`` None: the scheme's default port; ``-1``: any port."""

    host: str
    port: int | None = None
    subdomains: bool = False

    def matches(self, host: str, port: int, scheme: str) -> bool:
        """Whether ``host`` (normalised) at ``port`` is allowed by this rule."""
        return self.host_matches(host) and self.port_matches(port, scheme)

    def host_matches(self, host: str) -> bool:
        """The host part alone (for a clearer refusal)."""
        if self.subdomains:
            return host.endswith("." + self.host)
        return host == self.host

    def port_matches(self, port: int, scheme: str) -> bool:
        """The port part alone."""
        if self.port == _ANY_PORT:
            return True
        if self.port is None:
            return port == _DEFAULT_PORTS.get(scheme)
        return port == self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        host = f"*.{host}" if self.subdomains else host
        if self.port is None:
            return host
        return f"{host}:{'*' if self.port == _ANY_PORT else self.port}"


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per IPv6 address
    except ValueError:
        return host


def parse_rule(entry: str) -> HostRule:
    """One allow-list entry (see the module docstring); raises ConfigError."""
    text = entry.strip().lower()
    subdomains = text.startswith("*.")
    rest = text[2:] if subdomains else text
    port_text: str | None = None
    if rest.startswith("["):  # [IPv6] or [IPv6]:port
        close = rest.find("]")
        host, after = rest[1:close], rest[close + 1 :]
        if close < 0 or (after and not after.startswith(":")):
            raise ConfigError(f"allow_hosts entry {entry!r}: expected [IPv6] or [IPv6]:port")
        port_text = after[1:] if after else None
    elif rest.count(":") > 1:  # a bare IPv6 address
        host = rest
    elif ":" in rest:
        host, port_text = rest.split(":", 1)
    else:
        host = rest
    host = _normal_host(host)
    if not host or "*" in host or "/" in host:
        raise ConfigError(
            f"allow_hosts entry {entry!r}: expected host, host:port, host:* or *.domain"
        )
    port: int | None = None
    if port_text is not None:
        if port_text == "*":
            port = _ANY_PORT
        elif port_text.isdigit() and 1 <= int(port_text) <= 65535:
            port = int(port_text)
        else:
            raise ConfigError(
                f"allow_hosts entry {entry!r}: the port must be 1-65535 or '*', not {port_text!r}"
            )
    return HostRule(host, port, subdomains)


def parse_allow_list(entries: Iterable[str]) -> tuple[HostRule, ...]:
    """The allow-list's rules; raises ConfigError for a bad entry."""
    return tuple(dict.fromkeys(parse_rule(e) for e in entries))


def host_allowed(
    allow: Iterable[str] | Sequence[HostRule], host: str, port: int | None, scheme: str = "https"
) -> bool:
    """Whether ``host`` at ``port`` (None: the scheme's default) is allowed."""
    rules = [r if isinstance(r, HostRule) else parse_rule(r) for r in allow]
    effective = port if port is not None else _DEFAULT_PORTS.get(scheme, 0)
    name = _normal_host(host)
    return any(rule.matches(name, effective, scheme) for rule in rules)


# --- addresses -----------------------------------------------------------------------


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: Address) -> str | None:
    """Why an address may not be reached without an explicit network, or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            why = address_refusal(embedded)
            return f"{why} (as IPv4 {embedded} inside {ip})" if why else None
        if ip in _TEREDO:
            return "a Teredo tunnel address"
        if ip in _LOCAL_NAT64:
            return "a local NAT64 address"
        if ip.is_site_local:
            return "a site-local address"
    checks = (
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata lives there)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    return next((why for bad, why in checks if bad), None)


def address_allowed(ip: Address, networks: Sequence[Network]) -> str | None:
    """None if ``ip`` may be reached, else why not (``networks`` are opted in)."""
    inner = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    if any(ip in net or (inner is not None and inner in net) for net in networks):
        return None
    return address_refusal(ip)


async def system_resolve(host: str, port: int) -> Sequence[str]:
    """Every address the system resolver gives for ``host``."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the address checked for this request, never to a name."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = _PINS.get({}).get((host, port))
        if address is None:  # fail closed: nothing was checked for this host
            raise httpcore.ConnectError(f"no checked address for {host}:{port}")
        return await self._inner.connect_tcp(
            address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable through http_request")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pinned_transport(ca_bundle: str | None) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    if ca_bundle is None:
        context = httpx.create_ssl_context(trust_env=False)
    else:
        context = ssl.create_default_context(cafile=ca_bundle)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool):  # fail closed on an httpx change
        raise ConfigError("http_request: this httpx version cannot pin addresses")
    transport._pool = httpcore.AsyncConnectionPool(  # the one way to give httpx a backend
        ssl_context=context,  # verifies the certificate for the URL's name (SNI)
        max_connections=10,
        max_keepalive_connections=5,
        keepalive_expiry=5.0,
        network_backend=_PinnedBackend(),
    )
    return transport


# --- the tool ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpx.URL
    port: int
    address: str


def http_tool(
    allow_hosts: Iterable[str],
    *,
    name: str = "http_request",
    methods: Iterable[str] = ("GET", "HEAD"),
    timeout_s: float = 10.0,
    max_bytes: int = 1024 * 1024,
    max_redirects: int = 0,
    allow_networks: Iterable[str] = (),
    rate_limit: RateLimit | str | None = None,
    pool_size: int = 4,
    permission: str = "net:http",
    headers: Mapping[str, str] | None = None,
    breaker: BreakerPolicy | None = BreakerPolicy(),  # noqa: B008 - frozen
    provider: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Resolver | None = None,
    ca_bundle: str | os.PathLike[str] | None = None,
) -> Tool:
    """An ``http_request`` tool for ``allow_hosts`` (see the module docstring).

    ``methods`` lists what callers may use (GET and HEAD by default);
    ``headers`` are sent with every request (and dropped on a cross-origin
    redirect); ``allow_networks`` are CIDR ranges that may be reached although
    not public (e.g. ``["10.1.0.0/16"]``, or ``["127.0.0.0/8"]`` in tests);
    ``max_redirects`` hops are followed, each checked; ``ca_bundle`` is a PEM
    file of CAs to trust instead of the default ones (an internal CA).
    Raises ConfigError for an empty or malformed allow-list or network.
    """
    rules = parse_allow_list(allow_hosts)
    if not rules:
        raise ConfigError(f"{name}: allow_hosts is empty")
    networks = _parse_networks(name, allow_networks)
    if max_redirects < 0:
        raise ConfigError(f"{name}: max_redirects must not be negative")
    allowed_methods = frozenset(m.upper() for m in methods)
    fixed = dict(headers or {})
    resolve = resolver or system_resolve
    checker = _Checker(name, rules, networks, resolve, timeout_s)
    cafile = None if ca_bundle is None else os.fspath(ca_bundle)
    if cafile is not None and not os.path.isfile(cafile):
        raise ConfigError(f"{name}: no CA bundle at {cafile}")

    def make_client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,  # followed here, each hop checked
            trust_env=False,  # no proxy settings from the environment
            headers=fixed,
            transport=transport or _pinned_transport(cafile),
        )

    async def close_client(client: httpx.AsyncClient) -> None:
        await client.aclose()

    pool: Pool[httpx.AsyncClient] = Pool(
        name, factory=make_client, close=close_client, limit=pool_size
    )
    fetch = _Fetcher(name, checker, fixed, max_bytes=max_bytes, max_redirects=max_redirects)

    async def http_request(params: HttpRequest) -> dict[str, Any]:
        """Make an HTTP request to an allowed host; returns status, headers and text."""
        url = checker.parse(params.url)
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
            return await fetch(client, params, url)

    return make_tool(
        http_request,
        name=name,
        permissions={permission},
        timeout_s=timeout_s * (max_redirects + 1),
        rate_limit=rate_limit,
        breaker=breaker,
        provider=provider,
        once=True,
        pools=(pool,),
    )


def _parse_networks(name: str, entries: Iterable[str]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(
                f"{name}: allow_networks entry {entry!r} is not a network: {exc}"
            ) from exc
    return tuple(networks)


class _Checker:
    """Checks a URL: scheme, host and port on the allow-list, addresses."""

    def __init__(
        self,
        name: str,
        rules: tuple[HostRule, ...],
        networks: tuple[Network, ...],
        resolve: Resolver,
        timeout_s: float,
    ) -> None:
        self.name, self.rules, self.networks = name, rules, networks
        self.resolve, self.timeout_s = resolve, timeout_s

    def refuse(self, text: str) -> ToolRefusedError:
        return ToolRefusedError(f"{self.name}: {text}", tool=self.name)

    def parse(self, text: str) -> httpx.URL:
        """The URL if its scheme, host and port are allowed (no DNS yet)."""
        try:
            url = httpx.URL(text)
        except (httpx.InvalidURL, TypeError) as exc:
            raise self.refuse(f"invalid URL {text!r}: {exc}") from exc
        if url.scheme not in _DEFAULT_PORTS:
            raise self.refuse(f"only http(s) URLs, not {url.scheme!r}")
        if not url.host:
            raise self.refuse(f"URL {text!r} has no host")
        host, port = _normal_host(url.host), url.port or _DEFAULT_PORTS[url.scheme]
        if any(rule.matches(host, port, url.scheme) for rule in self.rules):
            return url
        allowed = ", ".join(str(rule) for rule in self.rules)
        if any(rule.host_matches(host) for rule in self.rules):
            raise self.refuse(
                f"port {port} of {url.host!r} is not allowed (allowed: {allowed}; an entry "
                f"'host' allows only port 80 for http and 443 for https, 'host:{port}' "
                "or 'host:*' allows others)"
            )
        raise self.refuse(f"host {url.host!r} is not allowed (allowed: {allowed})")

    async def target(self, url: httpx.URL) -> _Target:
        """Resolve the URL's host once and check every answer; the first is used."""
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        try:
            async with asyncio.timeout(self.timeout_s):
                answers = [host] if _is_address(host) else list(await self.resolve(host, port))
        except TimeoutError as exc:
            raise ToolTimeoutError(
                f"{self.name}: resolving {url.host} took too long", tool=self.name
            ) from exc
        except OSError as exc:
            raise ToolError(
                f"{self.name}: cannot resolve {url.host}: {exc}", tool=self.name
            ) from exc
        if not answers:
            raise ToolError(f"{self.name}: {url.host} has no address", tool=self.name)
        for answer in answers:
            try:
                ip = ipaddress.ip_address(answer.split("%", 1)[0])
            except ValueError as exc:
                raise self.refuse(f"{url.host} resolved to {answer!r}, not an address") from exc
            why = address_allowed(ip, self.networks)
            if why is not None:
                raise self.refuse(
                    f"{url.host} resolves to {ip}, {why}: refused (allow_networks "
                    "opts a range in explicitly)"
                )
        return _Target(url, port, answers[0].split("%", 1)[0])


class _Fetcher:
    """Sends a request (following checked redirects) and reads a capped body."""

    def __init__(
        self,
        name: str,
        checker: _Checker,
        fixed: Mapping[str, str],
        *,
        max_bytes: int,
        max_redirects: int,
    ) -> None:
        self.name, self.checker, self.max_bytes = name, checker, max_bytes
        self.max_redirects = max_redirects
        self.fixed = frozenset(h.lower() for h in fixed)

    async def __call__(
        self, client: httpx.AsyncClient, params: HttpRequest, url: httpx.URL
    ) -> dict[str, Any]:
        request = client.build_request(
            params.method,
            url,
            headers=params.headers,
            params=params.params or None,
            content=params.body,
            json=params.json_body,
        )
        hops = 0
        while True:
            try:
                target = await self.checker.target(request.url)
            except ToolRefusedError as exc:
                if not hops:
                    raise
                raise self._hop_refused(hops, request.url, exc) from exc
            response = await self._send(client, request, target)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or location is None:
                return await self._read(response, target, hops)
            if self.max_redirects == 0:
                result = await self._read(response, target, hops)
                return {**result, "redirect_to": location}
            await response.aclose()
            hops += 1
            if hops > self.max_redirects:
                raise self.checker.refuse(f"more than {self.max_redirects} redirects")
            request = self._next(client, request, response.status_code, location, hops)

    def _next(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        status: int,
        location: str,
        hop: int,
    ) -> httpx.Request:
        try:
            url = request.url.join(location)
        except (httpx.InvalidURL, TypeError) as exc:
            raise self.checker.refuse(f"redirect {hop} to an invalid URL {location!r}") from exc
        try:
            url = self.checker.parse(str(url))
        except ToolRefusedError as exc:
            raise self._hop_refused(hop, url, exc) from exc
        if request.url.scheme == "https" and url.scheme == "http":
            raise self.checker.refuse(f"redirect {hop} to {url} refused: https to http")
        method = request.method
        keep_body = status in (307, 308)
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else "HEAD"
        headers = httpx.Headers(request.headers)
        for header in ("host", "content-length", "transfer-encoding"):
            headers.pop(header, None)
        if not keep_body:
            headers.pop("content-type", None)
        if _origin(url) != _origin(request.url):
            for header in _DROPPED_CROSS_ORIGIN | self.fixed:
                headers.pop(header, None)
        new = client.build_request(
            method, url, headers=headers, content=request.content if keep_body else None
        )
        if _origin(url) != _origin(request.url):
            for header in self.fixed:  # the client adds them again: not for another origin
                new.headers.pop(header, None)
        return new

    def _hop_refused(self, hop: int, url: httpx.URL, exc: ToolRefusedError) -> ToolRefusedError:
        why = str(exc).removeprefix(f"{self.name}: ")
        return self.checker.refuse(f"redirect {hop} to {url} refused: {why}")

    async def _send(
        self, client: httpx.AsyncClient, request: httpx.Request, target: _Target
    ) -> httpx.Response:
        host = request.url.raw_host.decode("ascii")
        token = _PINS.set({(host, target.port): target.address})
        try:
            return await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise ToolTimeoutError(
                f"{self.name}: {request.url.host} did not answer in time", tool=self.name
            ) from exc
        except httpx.HTTPError as exc:
            raise ToolError(
                f"{self.name}: request to {request.url.host} failed: {exc}", tool=self.name
            ) from exc
        finally:
            _PINS.reset(token)

    async def _read(self, response: httpx.Response, target: _Target, hops: int) -> dict[str, Any]:
        name, max_bytes = self.name, self.max_bytes
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
        except httpx.TimeoutException as exc:
            raise ToolTimeoutError(
                f"{name}: {target.url.host} did not answer in time", tool=name
            ) from exc
        except httpx.HTTPError as exc:
            raise ToolError(
                f"{name}: reading from {target.url.host} failed: {exc}", tool=name
            ) from exc
        finally:
            await response.aclose()
        result: dict[str, Any] = {
            "status": response.status_code,
            "headers": dict(response.headers),
            "text": bytes(body).decode(response.encoding or "utf-8", errors="replace"),
            "bytes": len(body),
        }
        if hops:
            result["url"] = str(target.url)
            result["redirects"] = hops
        return result


def _is_address(host: str) -> bool:
    """An IP literal in its standard spelling (others go to the resolver)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.raw_host.decode("ascii"), url.port or _DEFAULT_PORTS[url.scheme]


__all__ = [
    "HostRule",
    "HttpRequest",
    "address_allowed",
    "address_refusal",
    "host_allowed",
    "http_tool",
    "parse_allow_list",
    "system_resolve",
]
