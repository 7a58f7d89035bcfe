"""How the server answers: the platform's `{"data": ...}` and `{"error": {"type", "message"}}` envelopes."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from recoverable._kv_api import (
    ERROR_INVALID_RECORD_KEY,
    ERROR_INVALID_REQUEST,
    ERROR_INVALID_VALUE,
    ERROR_METHOD_NOT_ALLOWED,
    ERROR_NOT_FOUND,
    ERROR_PAGE_NOT_FOUND,
    ERROR_SERVER,
)
from recoverable.errors import InvalidKeyError, InvalidStoreNameError, StorageError, StoreNotFoundError
from recoverable.server._errors import ApiError
from recoverable.server._starlette import HTTPException, Response

if TYPE_CHECKING:
    from recoverable.server._starlette import Request
    from recoverable.storages._models import KeyValueStoreMetadata

__all__ = ["error_answer", "http_exception_answer", "json_answer", "storage_error_answer", "store_json"]

logger = logging.getLogger("recoverable.server")

_JSON = "application/json; charset=utf-8"


async def http_exception_answer(request: Request, exc: Exception) -> Response:
    """The answer to a request Starlette refused itself (no such route, a method not allowed)."""
    del request
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    if status == 405:  # noqa: PLR2004 - HTTP status
        return error_answer(ApiError(405, ERROR_METHOD_NOT_ALLOWED, "this method is not allowed here", headers))
    if status == 404:  # noqa: PLR2004 - HTTP status
        return error_answer(ApiError(404, ERROR_PAGE_NOT_FOUND, "no such API endpoint; the API lives under /v2/"))
    return error_answer(ApiError(status, ERROR_INVALID_REQUEST, str(getattr(exc, "detail", exc))))


def json_answer(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, UTF-8, compact."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, headers={"content-type": _JSON, **(headers or {})})


def error_answer(error: ApiError) -> Response:
    """The platform's error envelope."""
    return json_answer({"error": {"type": error.type, "message": error.message}}, error.status, error.headers)


def store_json(metadata: KeyValueStoreMetadata) -> dict[str, Any]:
    """A store's metadata as the platform spells it."""
    return metadata.model_dump(mode="json", by_alias=True)


def storage_error_answer(exc: StorageError, request: Request) -> ApiError:
    """The answer to an error of the storage backend."""
    if isinstance(exc, StoreNotFoundError):
        return ApiError(404, ERROR_NOT_FOUND, str(exc))
    if isinstance(exc, InvalidKeyError):
        return ApiError(400, ERROR_INVALID_RECORD_KEY, str(exc))
    if isinstance(exc, InvalidStoreNameError):
        return ApiError(400, ERROR_INVALID_VALUE, str(exc))
    logger.error("%s %s failed in the storage backend", request.method, request.url.path, exc_info=exc)
    return ApiError(500, ERROR_SERVER, f"the storage backend failed: {exc}")
