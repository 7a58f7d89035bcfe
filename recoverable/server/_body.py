"""Reading request bodies: within a size limit, a memory budget shared by all requests, and a pace.

A body is decoded while it arrives (gzip, including streams of several members, or deflate), in slices
of bounded work with the event loop given back between them, so no body can hold the loop for long:
not a decode bomb (cut as soon as its output passes the limit), not a stream of many tiny members.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from typing import TYPE_CHECKING, Any, Self

from recoverable._kv_api import (
    ERROR_INVALID_REQUEST,
    ERROR_REQUEST_TOO_LARGE,
    ERROR_UNSUPPORTED_MEDIA_TYPE,
)
from recoverable.server._errors import ERROR_REQUEST_TIMEOUT, ERROR_SERVER_BUSY, ApiError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.requests import Request

__all__ = ["MIN_BODY_RATE", "BodyBudget", "BodyHold", "read_body"]

MIN_BODY_RATE = 64 * 1024
"""Bytes per second a body must arrive at, on average, once its first `body_timeout` has passed."""

RETRY_AFTER_SECS = 1
"""What a 503 for a spent budget asks the client to wait."""

_IN_SLICE = 64 * 1024
"""Most compressed input handed to zlib at once: bounds the work of one call and the copies of its leftover."""
_OUT_SLICE = 256 * 1024
"""Most output of one zlib call: a decode bomb produces its output in slices of this, checked one by one."""
_SLICES_PER_YIELD = 4
"""zlib calls between two yields to the event loop (well under a millisecond each)."""
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyBudget:
    """The bytes of request bodies the server holds at once, across all requests.

    Each request takes a `BodyHold` and grows it as its body arrives (by its Content-Length up front, by
    its decoded size as that grows); a hold that would take the total past `capacity` is refused with
    503 and `Retry-After`, before the bytes are kept.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0

    def hold(self) -> BodyHold:
        """A new, empty share of the budget; release it (or use it as a context manager) when done."""
        return BodyHold(self)


class BodyHold:
    """One request's share of a `BodyBudget`."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self._writer: asyncio.Future[Any] | None = None
        self.size = 0

    def reserve(self, total: int) -> None:
        """Make this hold at least `total` bytes.

        Raises:
            ApiError: 503 when the budget cannot cover it; the hold keeps what it had.
        """
        need = total - self.size
        if need <= 0:
            return
        budget = self._budget
        if budget.in_use + need > budget.capacity:
            raise ApiError(
                503,
                ERROR_SERVER_BUSY,
                f"the server is already holding {budget.in_use} bytes of request bodies, and this one would take "
                f"it past its limit of {budget.capacity} bytes (--max-bytes-in-flight); retry in a moment",
                {"retry-after": str(RETRY_AFTER_SECS)},
            )
        budget.in_use += need
        self.size = total

    def shrink(self, total: int) -> None:
        """Give back what this hold has beyond `total` bytes."""
        if total < self.size:
            self._budget.in_use -= self.size - total
            self.size = total

    def keep_until_done(self, writer: asyncio.Future[Any]) -> None:
        """Keep the hold until `writer`, the write of the body, is done, even when the request ends first."""
        self._writer = writer
        writer.add_done_callback(lambda _: self.shrink(0))

    def release(self) -> None:
        """Give everything back, now or when the write it is kept for is done; releasing twice is harmless."""
        if self._writer is None or self._writer.done():
            self.shrink(0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def too_large(limit: int, what: str = "the request body") -> ApiError:
    return ApiError(
        413,
        ERROR_REQUEST_TOO_LARGE,
        f"{what} is larger than this server's limit of {limit} bytes; store smaller records, or start the "
        "server with a higher --max-body-size",
    )


def _too_slow(message: str) -> ApiError:
    # The rest of a body that crawls in is not worth draining: the connection is closed after the answer.
    return ApiError(408, ERROR_REQUEST_TIMEOUT, message, {"connection": "close"})


async def read_body(request: Request, *, limit: int, hold: BodyHold, body_timeout: float) -> bytes:
    """Read the whole body, at most `limit` bytes raw and decoded, and return it decoded.

    The body must keep arriving: no pause longer than `body_timeout` seconds, and once it has taken that
    long, at least `MIN_BODY_RATE` bytes per second on average. Every byte kept counts in `hold`.

    Raises:
        ApiError: 413 when the body (raw or decoded) exceeds `limit`; 415 for an unknown Content-Encoding;
            400 when the body is not what its Content-Encoding says; 408 when it arrives too slowly; 503
            when the server's budget for bodies in flight cannot hold it.
        ClientDisconnect: The client went away.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    _admit(request, encoding, limit, hold)
    decoder = _Decoder(encoding) if encoding in _WBITS else None
    out = io.BytesIO()  # grows in place, and getvalue() hands its buffer over without a copy
    received = 0
    async for chunk in _chunks(request, body_timeout):
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        if decoder is None:
            hold.reserve(received)
            out.write(chunk)
        else:
            await _decode_into(out, decoder, chunk, limit, hold)
    if decoder is not None:
        decoder.finish()
        hold.shrink(out.tell())  # the compressed bytes are gone; the decoded ones stay until the write is done
    return out.getvalue()


def _admit(request: Request, encoding: str, limit: int, hold: BodyHold) -> None:
    """Refuse a body before reading it when its headers already say it cannot be taken.

    Raises:
        ApiError: 415 for an unknown Content-Encoding; 413 for a Content-Length over `limit`; 503 when the
            budget cannot hold that Content-Length.
    """
    if encoding not in ("", "identity", *_WBITS):
        raise ApiError(
            415,
            ERROR_UNSUPPORTED_MEDIA_TYPE,
            f"Content-Encoding {encoding!r} is not supported: send the body as it is, or with gzip or deflate",
        )
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit():
        if int(declared) > limit:
            raise too_large(limit)
        hold.reserve(int(declared))


async def _chunks(request: Request, body_timeout: float) -> AsyncIterator[bytes]:
    """The parts of the body as they arrive, at the pace `read_body` asks for.

    Raises:
        ApiError: 408 when the body pauses too long, or arrives too slowly.
        ClientDisconnect: The client went away.
    """
    from starlette.requests import ClientDisconnect  # noqa: PLC0415 - only the server extra has it

    loop = asyncio.get_running_loop()
    started = last = loop.time()
    received = 0
    more = True
    while more:
        deadline = min(last + body_timeout, started + body_timeout + received / MIN_BODY_RATE)
        try:
            async with asyncio.timeout_at(deadline):
                message = await request.receive()
        except TimeoutError:
            if loop.time() >= last + body_timeout:
                raise _too_slow(f"no part of the request body arrived for {body_timeout:g} s") from None
            raise _too_slow(
                f"the request body arrives too slowly: {received} bytes in {loop.time() - started:.0f} s, while "
                f"at least {MIN_BODY_RATE} bytes per second are needed once it has taken {body_timeout:g} s"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        last = loop.time()
        received += len(chunk)
        yield chunk


async def _decode_into(out: io.BytesIO, decoder: _Decoder, chunk: bytes, limit: int, hold: BodyHold) -> None:
    """Decode one chunk of the body into `out`, yielding to the event loop every few slices of work."""
    for calls, piece in enumerate(decoder.feed(chunk), start=1):
        if piece:
            size = out.tell() + len(piece)
            if size > limit:
                raise too_large(limit, "the decompressed request body")
            # Never more than the limit for one body (the compressed chunk being decoded is not counted),
            # so that a body within the limit always fits a server that holds no other.
            hold.reserve(size)
            out.write(piece)
        if calls % _SLICES_PER_YIELD == 0:
            await asyncio.sleep(0)


class _Decoder:
    """Decodes a gzip body (any number of members, as gzip itself and HTTP clients accept) or a deflate one.

    `feed` yields the output in pieces of at most `_OUT_SLICE` bytes, one per call of zlib, each of which
    takes at most `_IN_SLICE` bytes of input; every call consumes input or produces output, so the loop
    always ends.
    """

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._wbits = _WBITS[encoding]
        self._member: zlib._Decompress | None = None
        self._members = 0

    def _error(self, message: str) -> ApiError:
        name = "deflate (zlib)" if self._encoding == "deflate" else "gzip"
        return ApiError(400, ERROR_INVALID_REQUEST, f"the request body is not valid {name} data: {message}")

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Decode `chunk`, the next part of the body.

        Raises:
            ApiError: 400 when the data is not valid.
        """
        view = memoryview(chunk)
        for start in range(0, len(view), _IN_SLICE):
            yield from self._feed(view[start : start + _IN_SLICE].tobytes())

    def _feed(self, data: bytes) -> Iterator[bytes]:
        while True:
            member = self._member
            if member is None:
                data = self._between_members(data)
                if not data:
                    return
                member = self._member = zlib.decompressobj(self._wbits)
                self._members += 1
            try:
                piece = member.decompress(data, _OUT_SLICE)
            except zlib.error as exc:
                raise self._error(str(exc)) from None
            yield piece
            if member.eof:
                data = member.unused_data
                self._member = None
                continue
            left = member.unconsumed_tail
            if not piece and (not left or len(left) == len(data)):
                if left:  # no output and no input taken: never seen, but it must not loop for ever
                    raise self._error("the decoder makes no progress")
                return
            data = left

    def _between_members(self, data: bytes) -> bytes:
        """What of `data` starts the next member: gzip(1) and Python's gzip skip zero padding between members.

        Raises:
            ApiError: 400 for data after the end of a deflate stream (which has one member).
        """
        if not self._members:
            return data
        if self._encoding == "deflate":
            if data:
                raise self._error("there is more data after the end of the deflate stream")
            return data
        return data.lstrip(b"\0")

    def finish(self) -> None:
        """Check that the body ended at the end of a member.

        Raises:
            ApiError: 400 when the last member is cut short.
        """
        if self._member is not None:
            raise self._error("it is truncated (the stream ends before its end marker and checksum)")
