"""The console's routes on the gateway: the page and its assets, the login,
and the security headers every answer carries.

The page is static (``static/``: HTML, ES modules and CSS shipped in the
package, no build step) and reads everything through the gateway's own JSON
routes, signed in by the session cookie (:mod:`agenticflow.gateway.sessions`). Content Security
Policy: scripts and styles only from the gateway itself, no inline script or
style, no frames, no plug-ins, no form posts elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agenticflow.gateway.models import Login
from agenticflow.gateway.responses import JSON, ApiError
from agenticflow.gateway.service import Gateway
from agenticflow.gateway.sessions import COOKIE, same_origin

log = structlog.get_logger("agenticflow.console")

STATIC = Path(__file__).parent / "static"
"""The page's files."""
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'; "
    # The browser itself refuses any string put into an HTML sink (innerHTML...).
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
"""The Content-Security-Policy of the page and its assets."""
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def console_routes(gw: Gateway) -> list[BaseRoute]:
    """The page, its assets and the session routes."""

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def to_page(_request: Request) -> Response:
        return RedirectResponse("/console/", 307)

    async def login(request: Request) -> Response:
        sessions = gw.sessions
        address = request.client.host if request.client else "?"
        sessions.check_login_rate(address)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # A cross-site form can post only form types: JSON needs a CORS preflight.
            raise ApiError(415, "unsupported_media_type", "send the token as JSON")
        origin = request.headers.get("origin")
        if origin is not None and not same_origin(request, origin):
            raise ApiError(403, "csrf", "the login comes from another site's page")
        body = await gw.body(request, Login)
        principal = gw.tokens.principal(body.token.strip())
        if principal is None:
            sessions.failed_login(address)
            log.info("console login refused", address=address)
            raise ApiError(401, "unauthenticated", "unknown token")
        sessions.close(request)  # a browser's earlier session ends with a new login
        session_id, session = sessions.open(principal)
        log.info("console login", principal=principal)
        answer = JSON({"principal": principal, "csrf": session.csrf})
        answer.set_cookie(
            COOKIE,
            session_id,
            max_age=int(sessions.ttl_s),
            path="/",
            secure=_secure(request),
            httponly=True,
            samesite="strict",
        )
        return answer

    async def session(request: Request) -> Response:
        found = gw.sessions.of(request)
        if found is None:
            raise ApiError(401, "unauthenticated", "log in with a gateway token")
        return JSON({"principal": found.principal, "csrf": found.csrf})

    async def logout(request: Request) -> Response:
        principal = gw.principal(request)  # the session's, with its CSRF token
        gw.sessions.close(request)
        log.info("console logout", principal=principal)
        answer = JSON({})
        answer.delete_cookie(
            COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict"
        )
        return answer

    return [
        Route("/", to_page, methods=["GET"]),
        Route("/console", to_page, methods=["GET"]),
        Route("/console/", page, methods=["GET"]),
        Route("/console/api/login", login, methods=["POST"]),
        Route("/console/api/session", session, methods=["GET"]),
        Route("/console/api/logout", logout, methods=["POST"]),
        Mount("/console/static", app=StaticFiles(directory=STATIC), name="console-static"),
    ]


def _secure(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly or through a proxy
    that says so): then the cookie is ``Secure``."""
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.lower() == "https"


class PageHeaders:
    """ASGI middleware: the console's security headers on every answer under
    ``/console`` (the JSON routes set their own, stricter ones), and
    ``nosniff``, ``DENY`` framing and no referrer on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = str(scope.get("path", "")).startswith("/console")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in PAGE_HEADERS.items():
                    key = name.lower().encode()
                    if key in present:
                        continue
                    if page or name != "Content-Security-Policy":
                        headers.append((key, value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["PAGE_HEADERS", "PAGE_POLICY", "PageHeaders", "console_routes"]
