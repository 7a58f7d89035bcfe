"""Starlette, which only the `server` extra installs: imported here once, with the message saying what to install."""

from __future__ import annotations

from recoverable.errors import MissingDependencyError

try:
    from starlette.applications import Starlette
    from starlette.convertors import Convertor, register_url_convertor
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise MissingDependencyError(
        "`recoverable serve` and recoverable.server need Starlette and uvicorn: pip install 'recoverable[server]'"
    ) from exc

__all__ = [
    "ClientDisconnect",
    "Convertor",
    "HTTPException",
    "Middleware",
    "Request",
    "Response",
    "Route",
    "Starlette",
    "register_url_convertor",
]
