"""A lean HTTP/1.1 transport for httpx over asyncio streams, used for `http://` servers.

httpx's default transport (httpcore over anyio) costs about 0.4 ms of CPU per request, more than
`recoverable serve` itself takes to answer a small record on loopback, and its pool slows down with many
requests in flight. The session of `HttpStorageClient` sends through this transport for `http://` URLs (a
`recoverable serve` on the same network); `https://` (the Apify platform) keeps httpx's default transport,
with TLS and everything else it does (`SCHEME_TRANSPORTS` in `_transports`).

What it does: persistent connections (at most `max_connections`, idle ones closed after
`keepalive_expiry`), one request at a time per connection, each request written in one piece (no Nagle
delay between head and body), answers framed by Content-Length, chunked transfer coding or the end of
the connection (RFC 9112, section 6.3), interim 1xx answers skipped. The body is read whole, and decoded
from any Content-Encoding by httpx, before the response is returned. Failures are raised as the httpx
exceptions httpcore would raise (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout, PoolTimeout,
ReadError, WriteError, RemoteProtocolError), so callers cannot tell the transports apart. No proxies,
no TLS, no HTTP/2, no request body streaming (a streamed body is read first).
"""

from __future__ import annotations

import asyncio
import time

import httpx
from typing_extensions import override

__all__ = ["Http11Transport"]

_HEAD_LIMIT = 1024 * 1024
"""Longest status line plus headers accepted, and the stream buffer size."""

_NO_BODY_STATUSES = frozenset({204, 304})
_CONTINUE = 100
_SWITCHING_PROTOCOLS = 101
_OK = 200


class _Connection:
    """One keep-alive connection to an origin."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()

    def usable(self, expiry: float) -> bool:
        """Whether an idle connection may carry another request (not expired, not closed by the server)."""
        return time.monotonic() - self.idle_since < expiry and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams for `http://` URLs: a keep-alive pool with little per-request work.

    Args:
        max_connections: Most connections open at once (all origins together); further requests wait for
            one to be free, up to the pool timeout.
        keepalive_expiry: Seconds an idle connection is kept; below uvicorn's default of 5 s so that the
            client, not the server, closes idle connections.
    """

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 4.0) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._keepalive_expiry = keepalive_expiry
        self._closed = False

    @override
    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    @override
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"this transport speaks http:// only, not {request.url.scheme}://")
        if self._closed:
            raise RuntimeError("the transport was closed")
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.host, request.url.port or 80)
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection became free within the pool timeout") from None
        else:
            await self._slots.acquire()  # at once: a slot is free
        try:
            connection = self._take_idle(origin) or await self._connect(origin, timeouts.get("connect"))
            done = False
            try:
                status, reason, headers, content, keep_alive = await self._exchange(connection, request, body, timeouts)
                done = True
            finally:
                if not done or not keep_alive or self._closed:
                    connection.close()
                else:
                    connection.idle_since = time.monotonic()
                    self._idle.setdefault(origin, []).append(connection)
        finally:
            self._slots.release()
        response = httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )
        # Decoded here, by httpx's synchronous path, rather than by the client's async iteration later.
        response.read()
        return response

    def _take_idle(self, origin: tuple[str, int]) -> _Connection | None:
        connections = self._idle.get(origin)
        while connections:
            connection = connections.pop()
            if connection.usable(self._keepalive_expiry):
                return connection
            connection.close()
        return None

    @staticmethod
    async def _connect(origin: tuple[str, int], connect_timeout: float | None) -> _Connection:
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(origin[0], origin[1], limit=_HEAD_LIMIT)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {origin[0]}:{origin[1]} within {connect_timeout} s") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, body: bytes, timeouts: dict[str, float | None]
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        """Send the request and read its answer: status, reason, headers, body, and whether to keep the connection."""
        head = [request.method.encode("ascii") + b" " + request.url.raw_path + b" HTTP/1.1"]
        head.extend(name + b": " + value for name, value in request.headers.raw)
        message = b"\r\n".join(head) + b"\r\n\r\n" + body
        try:
            connection.writer.write(message)
            if connection.writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeouts.get("write")):
                    await connection.writer.drain()
        except TimeoutError:
            raise httpx.WriteTimeout("the request could not be sent within the write timeout") from None
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc

        reader = _Reader(connection.reader, timeouts.get("read"))
        try:
            while True:
                version, status, reason, headers = _parse_head(await reader.until(b"\r\n\r\n"))
                if status == _SWITCHING_PROTOCOLS or not _CONTINUE <= status < _OK:
                    break
            fields = _Fields(headers)
            keep_alive = _keep_alive(version, fields)
            if request.method == "HEAD" or status in _NO_BODY_STATUSES:
                content = b""
            elif "chunked" in fields.tokens(b"transfer-encoding"):
                content = await reader.chunked()
            elif (length := fields.content_length()) is not None:
                content = await reader.exactly(length)
            else:
                content = await reader.to_end()
                keep_alive = False
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:  # TimeoutError is an OSError
            error = reader.error(exc)
            # Only an OSError of the socket says more than the message of the httpx exception.
            raise error from (exc if isinstance(error, httpx.ReadError) else None)
        return status, reason, headers, content, keep_alive


class _Fields:
    """Case-insensitive access to the response headers that frame the body."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._headers = headers

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self._headers if key.lower() == name]

    def tokens(self, name: bytes) -> set[str]:
        return {
            token.strip().lower()
            for value in self.values(name)
            for token in value.decode("latin-1").split(",")
            if token.strip()
        }

    def content_length(self) -> int | None:
        values = {value.strip() for value in self.values(b"content-length")}
        if not values:
            return None
        if len(values) > 1 or not next(iter(values)).isdigit():
            raise httpx.RemoteProtocolError(f"invalid Content-Length in the answer: {sorted(values)}")
        return int(next(iter(values)))


def _keep_alive(version: bytes, fields: _Fields) -> bool:
    connection = fields.tokens(b"connection")
    if "close" in connection:
        return False
    return version == b"HTTP/1.1" or "keep-alive" in connection


def _parse_head(head: bytes) -> tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]:
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():  # noqa: PLR2004 - 3 digits
        raise httpx.RemoteProtocolError(f"the answer does not start with an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"malformed header line in the answer: {line[:80]!r}")
        headers.append((name, value.strip()))
    return version, int(code), reason, headers


class _Reader:
    """Reads of one answer, each within the read timeout, failures turned into httpx exceptions."""

    def __init__(self, reader: asyncio.StreamReader, timeout: float | None) -> None:
        self._reader = reader
        self._timeout = timeout

    def error(self, exc: OSError | asyncio.IncompleteReadError | asyncio.LimitOverrunError) -> httpx.TransportError:
        """The httpx exception for a failed read of the answer."""
        if isinstance(exc, TimeoutError):
            return httpx.ReadTimeout(f"no answer within the read timeout of {self._timeout} s")
        if isinstance(exc, asyncio.IncompleteReadError):
            if exc.partial or exc.expected is not None:
                return httpx.RemoteProtocolError("the server closed the connection in the middle of the answer")
            return httpx.RemoteProtocolError("the server closed the connection without answering")
        if isinstance(exc, asyncio.LimitOverrunError):
            return httpx.RemoteProtocolError(f"the answer's head is longer than {_HEAD_LIMIT} bytes")
        return httpx.ReadError(str(exc) or type(exc).__name__)

    async def until(self, separator: bytes) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await self._reader.readuntil(separator)

    async def exactly(self, size: int) -> bytes:
        async with asyncio.timeout(self._timeout):
            return await self._reader.readexactly(size)

    async def to_end(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            async with asyncio.timeout(self._timeout):
                chunk = await self._reader.read(_HEAD_LIMIT)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    async def chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = await self.until(b"\r\n")
            size_text = line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"malformed chunk size in the answer: {size_text[:20]!r}") from None
            if size == 0:
                # Trailer fields, then an empty line.
                while await self.until(b"\r\n") != b"\r\n":
                    pass
                return b"".join(chunks)
            chunks.append(await self.exactly(size))
            if await self.exactly(2) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk of the answer is not followed by CRLF")
