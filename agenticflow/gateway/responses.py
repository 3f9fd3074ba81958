"""JSON in and out: every answer, an error included, is a JSON document, so
whatever a user wrote (a workflow name, a reason, a result) reaches a browser
as data, never as HTML or script."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python
from starlette.responses import Response

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
    even a page that embeds it verbatim reads data, not markup."""
    text = json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


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


__all__ = ["JSON", "SAFE_HEADERS", "ApiError", "dumps", "jsonable"]
