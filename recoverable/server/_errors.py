"""Error answers of the server: the platform's `{"error": {"type", "message"}}` envelope."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ERROR_REQUEST_TIMEOUT", "ERROR_SERVER_BUSY", "ApiError"]

ERROR_SERVER_BUSY = "server-busy"
"""503: the server holds as many request bodies as its memory budget allows; retry after `Retry-After`."""
ERROR_REQUEST_TIMEOUT = "request-timeout"
"""408: the request's head or body did not arrive in time."""


class ApiError(Exception):
    """An error answer to send: its status, kebab-case type, message and extra headers."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = dict(headers or {})
