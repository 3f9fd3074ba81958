"""JSON in and out: every answer, an error included, is a JSON document, so
whatever a user wrote (a workflow name, a reason, a result) reaches a browser
as data, never as HTML or script."""

from __future__ import annotations

import json
import math
from typing import Any

import structlog
from pydantic_core import to_jsonable_python
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from agenticflow.shared.errors import (
    AgenticFlowError,
    ConfigError,
    InterventionRefusedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    TransportError,
    WorkflowDefinitionError,
)

log = structlog.get_logger("agenticflow.gateway")

SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
"""On every answer: no MIME sniffing (JSON is never run as a page), nothing cached."""


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: bytes as base64, models by their fields,
    anything else unknown as its ``str``."""
    return to_jsonable_python(value, bytes_mode="base64", fallback=str)


def dumps(value: Any) -> str:
    """Compact JSON text with ``<``, ``>`` and ``&`` escaped as ``\\u003c``...:
    even a page that embeds it verbatim reads data, not markup. Strict JSON:
    a NaN or an infinity (a task's output may hold one) becomes ``null``."""
    data = jsonable(value)
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(item) for key, item in data.items()}
    if isinstance(data, list):
        return [_finite(item) for item in data]
    return data


class JSON(Response):
    """A JSON answer with the safe headers."""

    media_type = "application/json"

    def __init__(
        self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(content, status_code, {**SAFE_HEADERS, **(headers or {})})

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


class ApiError(Exception):
    """An answer other than success: HTTP status, a stable ``code``, a message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def response(self) -> JSON:
        """The error as ``{"error": {"code", "message"[, "details"]}}``."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return JSON({"error": body}, self.status, self.headers)


def too_large(limit: int) -> ApiError:
    """413 for a body over ``limit`` bytes."""
    return ApiError(413, "too_large", f"the body is larger than {limit} bytes")


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(
        exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
    ).response()


async def _server_error(_request: Request, exc: Exception) -> Response:
    log.error("gateway request failed", error_type=type(exc).__name__, error=str(exc))
    return ApiError(500, "internal", "the gateway failed; see its log").response()


def mapped(exc: AgenticFlowError | TimeoutError | ValueError) -> ApiError:
    """Our errors as HTTP answers."""
    message = str(exc)
    if isinstance(exc, InterventionRefusedError):
        status = {"forbidden": 403, "unknown_workflow": 404}.get(exc.code, 409)
        return ApiError(status, exc.code, message)
    table: list[tuple[type[BaseException], int, str]] = [
        (NotFoundError, 404, "not_found"),
        (PermissionDeniedError, 403, "forbidden"),
        (PayloadTooLargeError, 413, "too_large"),
        (WorkflowDefinitionError, 422, "invalid_workflow"),
        (ConfigError, 422, "invalid_request"),
        (ValueError, 422, "invalid_request"),
        (TransportError, 503, "unavailable"),
        (TimeoutError, 504, "timeout"),
    ]
    for kind, status, code in table:
        if isinstance(exc, kind):
            return ApiError(status, code, message)
    return ApiError(500, getattr(exc, "code", "internal"), message)


def error_handlers() -> dict[Any, Any]:
    """Starlette's exception handlers: every error answered as JSON."""
    return {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}


__all__ = [
    "JSON",
    "SAFE_HEADERS",
    "ApiError",
    "dumps",
    "error_handlers",
    "jsonable",
    "mapped",
    "too_large",
]
