"""The console's logins: a gateway token exchanged once for a session cookie.

The browser never holds a NATS credential, nor (after logging in) the token:
``POST /console/api/login`` checks the token like any request's bearer token
and answers with a random session id in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` behind HTTPS) and a CSRF token. The gateway then takes the
cookie as the request's principal (:meth:`Sessions.principal`), so the console
is held to the same policy as the CLI. A state-changing request (any method
but GET/HEAD/OPTIONS) needs the session's CSRF token in ``X-CSRF-Token`` and,
when the browser sends one, an ``Origin`` of the gateway itself; a WebSocket
needs that ``Origin`` always (browsers send it, and cookies ride along
cross-site). Sessions live in the gateway's memory: a restart logs everyone
out; at most :data:`MAX_PER_PRINCIPAL` per principal and :data:`MAX_SESSIONS`
in all, the oldest dropped first. A session that ends (logout, dropped,
expired) closes the live feeds it opened.

Failed logins are limited per client address (the socket's peer: the
gateway ignores ``X-Forwarded-For`` unless ``AGENTICFLOW_GATEWAY_TRUSTED_PROXIES``
names the proxy). Bearer tokens on the API are not: they are random 256-bit
strings (at least 16 characters when set by hand), and a per-address limit
on them would let one client lock out everyone behind the same proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from agenticflow.gateway.responses import ApiError

COOKIE = "agenticflow_console"
"""The session cookie's name."""
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS = 10_000
"""Sessions held at once; a new login beyond drops the oldest."""
MAX_PER_PRINCIPAL = 32
"""Sessions one principal holds at once; its new login beyond drops its own
oldest (so no principal can log the others out by logging in many times)."""
LOGIN_FAILURES = 20
"""Failed logins from one address within :data:`LOGIN_WINDOW_S` before 429."""
LOGIN_WINDOW_S = 60.0
MAX_ADDRESSES = 10_000
"""Addresses whose recent failed logins are remembered; beyond, the one that
failed least recently is forgotten."""


@dataclass(slots=True)
class Session:
    """One logged-in browser."""

    principal: str
    csrf: str
    expires: float
    """``time.monotonic()`` after which it is void."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when it is logged out or dropped: its live feeds close."""

    async def until_over(self) -> None:
        """Return once the session is logged out, dropped or expired."""
        left = self.expires - time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), max(left, 0.0))


class Sessions:
    """Sessions by the SHA-256 of their id (the id itself is kept nowhere)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._by_digest: OrderedDict[bytes, Session] = OrderedDict()
        self._of_principal: dict[str, OrderedDict[bytes, None]] = {}
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def open(self, principal: str) -> tuple[str, Session]:
        """A new session for ``principal``: its id (for the cookie) and itself.
        Beyond :data:`MAX_PER_PRINCIPAL` the principal's oldest is dropped;
        beyond :data:`MAX_SESSIONS` the oldest of all."""
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_hex(32), time.monotonic() + self.ttl_s)
        key = _digest(session_id)
        self._by_digest[key] = session
        own = self._of_principal.setdefault(principal, OrderedDict())
        own[key] = None
        while len(own) > MAX_PER_PRINCIPAL:
            self._drop(next(iter(own)))
        while len(self._by_digest) > MAX_SESSIONS:
            self._drop(next(iter(self._by_digest)))
        return session_id, session

    def _drop(self, key: bytes) -> None:
        session = self._by_digest.pop(key, None)
        if session is None:
            return
        session.ended.set()
        own = self._of_principal.get(session.principal)
        if own is not None:
            own.pop(key, None)
            if not own:
                del self._of_principal[session.principal]

    def close(self, conn: HTTPConnection) -> None:
        """End the request's session, if any (its live feeds close too)."""
        session_id = conn.cookies.get(COOKIE)
        if session_id and len(session_id) <= 128:
            self._drop(_digest(session_id))

    def of(self, conn: HTTPConnection) -> Session | None:
        """The request's live session, or None (no cookie, unknown or expired)."""
        session_id = conn.cookies.get(COOKIE)
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        session = self._by_digest.get(key)
        if session is not None and session.expires < time.monotonic():
            self._drop(key)
            return None
        return session

    def principal(self, conn: HTTPConnection) -> str | None:
        """The principal of the request's session (None: it has none); raises
        ApiError 403 for a state-changing request without the session's CSRF
        token or from another origin, and for a WebSocket from another origin."""
        session = self.of(conn)
        if session is None:
            return None
        websocket = conn.scope["type"] == "websocket"
        origin = conn.headers.get("origin")
        if (websocket or origin is not None) and not same_origin(conn, origin):
            raise ApiError(403, "csrf", "the request comes from another site's page")
        if not websocket and conn.scope.get("method", "GET") not in SAFE_METHODS:
            given = conn.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), session.csrf.encode()):
                raise ApiError(
                    403, "csrf", f"send the session's CSRF token in {CSRF_HEADER.title()}"
                )
        return session.principal

    def failed_login(self, address: str) -> None:
        """Count a failed login from ``address``. At most :data:`MAX_ADDRESSES`
        are remembered: beyond, the one whose last failure is oldest is forgotten
        (never the one just counted)."""
        now = time.monotonic()
        recent = self._failures.setdefault(address, deque(maxlen=LOGIN_FAILURES))
        self._failures.move_to_end(address)
        recent.append(now)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def check_login_rate(self, address: str) -> None:
        """Raise ApiError 429 after :data:`LOGIN_FAILURES` failures within a minute."""
        recent = self._failures.get(address)
        now = time.monotonic()
        while recent and recent[0] < now - LOGIN_WINDOW_S:
            recent.popleft()
        if recent is not None and not recent:
            del self._failures[address]
        elif recent is not None and len(recent) >= LOGIN_FAILURES:
            raise ApiError(
                429,
                "too_many_requests",
                "too many failed logins from this address: try again in a minute",
                headers={"Retry-After": str(int(LOGIN_WINDOW_S))},
            )


def same_origin(conn: HTTPConnection, origin: str | None) -> bool:
    """Whether ``origin`` is the gateway's own (the request's ``Host``)."""
    if not origin or origin == "null":
        return False
    host = conn.headers.get("host", "")
    # Exactly scheme://host (either scheme: TLS may end at a proxy in front).
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


__all__ = ["COOKIE", "CSRF_HEADER", "Session", "Sessions", "same_origin"]
