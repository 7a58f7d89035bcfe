"""Reading request bodies within a size limit, and undoing their Content-Encoding."""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

from recoverable.server._errors import ApiError
from recoverable.storages._http._protocol import (
    ERROR_INVALID_REQUEST,
    ERROR_REQUEST_TOO_LARGE,
    ERROR_UNSUPPORTED_MEDIA_TYPE,
)

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["read_body"]

_DECODE_OFF_LOOP_ABOVE = 256 * 1024
_CHUNK = 1024 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def too_large(limit: int, what: str = "the request body") -> ApiError:
    return ApiError(
        413,
        ERROR_REQUEST_TOO_LARGE,
        f"{what} is larger than this server's limit of {limit} bytes; store smaller records, or start the "
        "server with a higher --max-body-size",
    )


async def read_body(request: Request, *, limit: int) -> bytes:
    """Read the whole body, at most `limit` bytes once decoded, and return it decoded.

    Raises:
        ApiError: 413 when the body (raw or decoded) exceeds `limit`; 415 for an unknown Content-Encoding;
            400 when the body is not what its Content-Encoding says.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity", *_WBITS):
        raise ApiError(
            415,
            ERROR_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported: send the body as it is, or with gzip or deflate",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if encoding not in _WBITS:
        return body
    if len(body) > _DECODE_OFF_LOOP_ABOVE:
        return await asyncio.to_thread(_decode, body, encoding, limit)
    return _decode(body, encoding, limit)


def _decode(body: bytes, encoding: str, limit: int) -> bytes:
    """Decompress every member of a gzip or zlib body, refusing more than `limit` bytes of output."""
    out: list[bytes] = []
    size = 0
    data = body
    try:
        while data:
            decompressor = zlib.decompressobj(_WBITS[encoding])
            while data:
                chunk = decompressor.decompress(data, _CHUNK)
                size += len(chunk)
                if size > limit:
                    raise too_large(limit, "the decompressed request body")
                out.append(chunk)
                data = decompressor.unconsumed_tail
            if not decompressor.eof:
                raise ApiError(400, ERROR_INVALID_REQUEST, f"the {encoding} request body is truncated")
            data = decompressor.unused_data
            if encoding == "deflate":
                break
    except zlib.error as exc:
        raise ApiError(400, ERROR_INVALID_REQUEST, f"the request body is not valid {encoding} data: {exc}") from None
    return b"".join(out)
