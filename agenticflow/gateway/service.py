"""The gateway's cluster side: its tokens, the policy, and one
:class:`~agenticflow.client.Client` per principal; what every route asks of
it (who is calling, does the workflow exist, the request's body)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request

import agenticflow
from agenticflow.client import Client
from agenticflow.gateway.auth import ALLOWED_ROLES, Access, Tokens, check_principal
from agenticflow.gateway.feeds import Feed, Frame
from agenticflow.gateway.responses import ApiError, too_large
from agenticflow.gateway.sessions import Sessions
from agenticflow.gateway.settings import GatewaySettings
from agenticflow.shared.errors import ConfigError, MalformedMessageError, NotFoundError
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.security.seal import TRUST_FILE, Identity
from agenticflow.shared.wire.codec import MAX_DEPTH, check_depth
from agenticflow.shared.wire.events import EventType
from agenticflow.shared.wire.ids import ID_RE

if TYPE_CHECKING:
    from agenticflow.coordinator.state import WorkflowState
    from agenticflow.top import ClusterView

M = TypeVar("M", bound=BaseModel)

BODY_DEPTH = MAX_DEPTH - 8
"""How deep a body's lists and maps may nest: the event that carries it on
the bus wraps it a few levels deeper, and the bus refuses more than
:data:`~agenticflow.shared.wire.codec.MAX_DEPTH`."""


class Gateway:
    """The cluster side: the tokens, the policy and one client per principal
    (with keys, each signs as its principal). ``async with`` connects them."""

    def __init__(
        self, *, settings: Settings, config: GatewaySettings, tokens: Tokens, access: Access
    ) -> None:
        self.settings = settings
        self.config = config
        self.tokens = tokens
        self.access = access
        self.clients: dict[str, Client] = {}
        self.open_feeds = 0
        """SSE and WebSocket clients being fed now."""
        self.feeds_of: dict[str, int] = {}
        """Open feeds by principal."""
        self.waits_of: dict[str, int] = {}
        """Requests waiting (``?wait=``) by principal."""
        self.stalled = 0
        """SSE clients disconnected because a send to them did not complete in time."""
        self.readers = 0
        """Feeds whose reader still holds a bus subscription."""
        self.overflows = 0
        """Clients disconnected for reading too slowly."""
        self.sessions = Sessions(config.console_session_s)
        """The console's logins (see :mod:`agenticflow.gateway.sessions`)."""
        self.auditing = asyncio.Lock()
        """Held while an audit verification runs (one at a time: each reads it all)."""
        self.cluster_previous: ClusterView | None = None
        """The last cluster view served: the next one's rates count from it."""
        self.feeds_changed = asyncio.Event()
        """Set whenever :attr:`open_feeds`, :attr:`readers`, :attr:`overflows`,
        :attr:`stalled` or :attr:`waits_of` changes (for tests)."""

    async def start(self) -> None:
        """Connect a client per principal; raises ConfigError (e.g. no key for
        a principal in a keyed cluster), TransportError."""
        self.check_keys()
        try:
            for principal in self.tokens.principals:
                settings = self.settings.model_copy(update={"principal": principal})
                # Without keys a request names its principal: the node id is it.
                self.clients[principal] = await agenticflow.connect(
                    settings=settings, name=f"agenticflow-gateway-{principal}", node_id=principal
                )
        except BaseException:
            await self.close()
            raise

    def check_keys(self) -> None:
        """Raise ConfigError unless the gateway may act for its principals: no
        reserved name; each principal's key, if it has one, of role ``client``
        or ``admin`` (a coordinator's or worker's key would sign as the cluster
        itself); and with a trust store (signatures checked), a policy for the
        gateway's own pre-check, unless ``allow_no_policy`` says otherwise."""
        directory = self.settings.security_dir
        for principal in self.tokens.principals:
            check_principal(principal)
            key = directory / f"{principal}.key" if directory is not None else None
            if key is not None and key.exists():
                role = Identity.load(key).role
                if role not in ALLOWED_ROLES:
                    raise ConfigError(
                        f"the key of gateway principal {principal!r} ({key}) has role "
                        f"{role!r}: a gateway principal's key must have role "
                        f"{' or '.join(ALLOWED_ROLES)} (`agenticflow keys add NAME --role client`)"
                    )
        trusted = directory is not None and (directory / TRUST_FILE).exists()
        if trusted and self.access.policy is None and not self.config.allow_no_policy:
            raise ConfigError(
                f"{directory} has a trust store but the gateway found no policy "
                "(AGENTICFLOW_POLICY_FILE, or policy.toml there): every token could read "
                "and steer every workflow. Give it the cluster's policy, or set "
                "AGENTICFLOW_GATEWAY_ALLOW_NO_POLICY=true if that is intended"
            )

    async def close(self) -> None:
        """Close every client (idempotent)."""
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def app(self) -> Starlette:
        """The ASGI application (:mod:`agenticflow.gateway.app`)."""
        from agenticflow.gateway.app import application

        return application(self)

    # Per request -------------------------------------------------------
    def principal(self, conn: HTTPConnection) -> str:
        """The principal of the request's bearer token, else of its console
        session (see :mod:`agenticflow.gateway.sessions`); raises ApiError 401
        (403 for a session's request without its CSRF token)."""
        given = conn.headers.getlist("authorization")
        if not given and self.config.console:
            principal = self.sessions.principal(conn)
            if principal is not None:
                return principal
        if len(given) > 1:  # which one counts would depend on who reads it
            raise ApiError(
                401,
                "unauthenticated",
                "send one Authorization header",
                headers={"WWW-Authenticate": 'Bearer realm="agenticflow", error="invalid_request"'},
            )
        scheme, _, token = (given[0] if given else "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "unauthenticated",
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="agenticflow"'},
            )
        principal = self.tokens.principal(token.strip())
        if principal is None:
            raise ApiError(
                401,
                "unauthenticated",
                "unknown token",
                headers={"WWW-Authenticate": 'Bearer realm="agenticflow", error="invalid_token"'},
            )
        return principal

    async def session_over(self, conn: HTTPConnection) -> None:
        """Return when the console session that authenticated ``conn`` ends
        (logout, dropped, expired); never for a bearer token's request."""
        session = None if conn.headers.get("authorization") else self.sessions.of(conn)
        if session is None:
            await asyncio.Event().wait()
            return
        await session.until_over()

    def client(self, principal: str) -> Client:
        """The client acting as ``principal``; raises ApiError 503 once closed."""
        client = self.clients.get(principal)
        if client is None:
            raise ApiError(503, "unavailable", "the gateway is not connected to the cluster")
        return client

    async def known(self, client: Client, workflow_id: str) -> None:
        """Raise ApiError 404 unless the workflow was submitted: a coordinator
        recorded it, or its submission is stored (not recorded yet)."""
        with contextlib.suppress(MalformedMessageError):  # a refused snapshot: it exists
            await self.recorded(client, workflow_id)

    async def recorded(self, client: Client, workflow_id: str) -> WorkflowState | None:
        """The workflow's state, or None when it is submitted and no coordinator
        has recorded it yet. Raises ApiError 404 for an unknown workflow,
        MalformedMessageError for a snapshot that was refused."""
        if not ID_RE.match(workflow_id):
            raise ApiError(404, "not_found", f"no workflow {workflow_id!r}")
        try:
            return await client.status(workflow_id)
        except NotFoundError:
            pass
        names = client.bus.names
        submitted = names.stored_events_of_type(EventType.WORKFLOW_SUBMITTED.value, workflow_id)
        if await client.bus.last_stored(names.events_stream, submitted) is None:
            raise ApiError(404, "not_found", f"no workflow {workflow_id!r}")
        return None

    async def body(self, request: Request, model: type[M]) -> M:
        """The request's JSON body as ``model``; an empty body is ``{}``.
        Raises ApiError 413, 400 or 422."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        data = bytearray()
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                async for part in request.stream():
                    data += part
                    if len(data) > limit:
                        raise too_large(limit)
        except TimeoutError:
            raise ApiError(
                408,
                "request_timeout",
                f"the body took longer than {self.config.body_timeout_s:g} s to arrive",
                headers={"Connection": "close"},
            ) from None
        try:
            parsed = (
                json.loads(
                    data,
                    parse_constant=_not_a_number,
                    parse_float=_finite,
                    parse_int=_msgpack_int,
                )
                if data.strip()
                else {}
            )
        except NumberError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ApiError(400, "malformed_json", "the body nests too deeply") from None
        try:
            check_depth(parsed, BODY_DEPTH)
        except MalformedMessageError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        try:
            return model.model_validate(parsed)
        except ValidationError as exc:
            details = exc.errors(include_url=False, include_context=False, include_input=False)
            raise ApiError(
                422, "invalid_request", f"invalid {model.__name__} body", details=details
            ) from None

    def feed(self, source: AsyncGenerator[Frame, None], name: str) -> Feed:
        """A client's bounded feed of ``source`` (see :mod:`agenticflow.gateway.feeds`)."""
        self.readers += 1
        return Feed(
            source,
            room=self.config.client_queue,
            block_s=self.config.client_block_s,
            name=name,
            on_overflow=self._overflowed,
            on_released=self._released,
        )

    def _released(self) -> None:
        self.readers -= 1
        self.feeds_changed.set()

    def _overflowed(self) -> None:
        self.overflows += 1
        self.feeds_changed.set()

    def feed_opened(self, principal: str) -> None:
        """Count a feed opening for ``principal``; raises ApiError 429 beyond
        ``max_feeds_per_principal`` or ``max_feeds`` (then nothing is counted)."""
        mine = self.feeds_of.get(principal, 0)
        if mine >= self.config.max_feeds_per_principal:
            raise _busy(
                f"{principal} already has {mine} feeds open "
                "(AGENTICFLOW_GATEWAY_MAX_FEEDS_PER_PRINCIPAL): close one first"
            )
        if self.open_feeds >= self.config.max_feeds:
            raise _busy(
                f"the gateway already has {self.open_feeds} feeds open "
                "(AGENTICFLOW_GATEWAY_MAX_FEEDS): try again later"
            )
        self.feeds_of[principal] = mine + 1
        self.open_feeds += 1
        self.feeds_changed.set()

    def feed_closed(self, principal: str) -> None:
        """Count a feed of ``principal`` closed (after :meth:`feed_opened`)."""
        left = self.feeds_of.get(principal, 0) - 1
        if left > 0:
            self.feeds_of[principal] = left
        else:
            self.feeds_of.pop(principal, None)
        self.open_feeds -= 1
        self.feeds_changed.set()

    def stalled_client(self) -> None:
        self.stalled += 1
        self.feeds_changed.set()

    @contextlib.contextmanager
    def waiting(self, principal: str) -> Iterator[None]:
        """Count a ``?wait=`` request of ``principal`` while in the block;
        raises ApiError 429 beyond ``max_waits_per_principal``."""
        mine = self.waits_of.get(principal, 0)
        if mine >= self.config.max_waits_per_principal:
            raise _busy(
                f"{principal} already has {mine} requests waiting "
                "(AGENTICFLOW_GATEWAY_MAX_WAITS_PER_PRINCIPAL): wait for one to end"
            )
        self.waits_of[principal] = mine + 1
        self.feeds_changed.set()
        try:
            yield
        finally:
            left = self.waits_of.get(principal, 0) - 1
            if left > 0:
                self.waits_of[principal] = left
            else:
                self.waits_of.pop(principal, None)
            self.feeds_changed.set()


INT_RANGE = (-(1 << 63), (1 << 64) - 1)
"""The integers the bus's encoding (msgpack) carries."""


class NumberError(ValueError):
    """A number in a body that JSON or the bus cannot carry."""


def _not_a_number(text: str) -> float:
    raise NumberError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NumberError(f"{text[:40]} is too large for a number")
    return value


def _msgpack_int(text: str) -> int:
    low, high = INT_RANGE
    try:
        value = int(text)
    except ValueError:  # more digits than the interpreter converts
        value = high + 1
    if not low <= value <= high:
        raise NumberError(f"integers must be from -2^63 to 2^64-1, not {text[:40]}")
    return value


def _busy(message: str) -> ApiError:
    return ApiError(429, "too_many_requests", message, headers={"Retry-After": "1"})


__all__ = ["Gateway"]
