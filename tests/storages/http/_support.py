"""Helpers of the HTTP storage client tests: ASGI middlewares that record requests or misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LosingAnswers", "PlatformLike", "Recorder", "Refusing", "Seen", "Slow", "TruncatingServer"]


@dataclass
class Seen:
    """A request as the server received it (the body as sent on the wire, before any decoding)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """An ASGI middleware keeping every request it passes on."""

    app: ASGIApp
    requests: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        seen = Seen(
            method=scope["method"],
            path=scope["path"],
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body=b"".join(chunks),
        )
        self.requests.append(seen)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": seen.body, "more_body": False}

        await self.app(scope, replay, send)

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _envelope(kind: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message}}).encode()


@dataclass
class Refusing:
    """Answers the first `times` requests with `status` (and `Retry-After`, when given) instead of serving them."""

    app: ASGIApp
    times: int
    status: int = 429
    retry_after: str | None = None
    refused: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.refused >= self.times:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        headers = [(b"retry-after", self.retry_after.encode())] if self.retry_after is not None else []
        kind = "rate-limit-exceeded" if self.status == 429 else "internal-server-error"
        await _answer(send, self.status, _envelope(kind, "try again later"), headers)


@dataclass
class LosingAnswers:
    """Serves the first `times` requests of the `methods`, then throws each answer away and answers 500 instead.

    The request took effect, but the client cannot know: the case of an answer lost on the way back.
    """

    app: ASGIApp
    methods: tuple[str, ...]
    times: int = 1
    lost: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods or self.lost >= self.times:
            await self.app(scope, receive, send)
            return
        self.lost += 1

        async def discard(message: Message) -> None:
            del message

        await self.app(scope, receive, discard)
        await _answer(send, 500, _envelope("internal-server-error", "the answer was lost"))


@dataclass
class Slow:
    """Waits `delay` seconds before serving requests whose path contains `part`."""

    app: ASGIApp
    delay: float
    part: str = "/records/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.part in scope["path"]:
            await asyncio.sleep(self.delay)
        await self.app(scope, receive, send)


@dataclass
class PlatformLike:
    """Makes `recoverable serve` answer as the Apify platform does: no ETag, no server header, no conditions.

    It also lists at most `page_size` keys per request, as a server may return fewer keys than asked for.
    """

    app: ASGIApp
    page_size: int = 2

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dropped = {b"if-match", b"if-none-match"}
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k not in dropped]}
        if scope["path"].endswith("/keys"):
            query = [(k, v) for k, v in parse_qsl(scope["query_string"].decode()) if k != "limit"]
            query.append(("limit", str(self.page_size)))
            scope["query_string"] = urlencode(query).encode()

        async def strip(message: Message) -> None:
            if message["type"] == "http.response.start":
                hidden = {b"etag", b"x-recoverable-server"}
                message = {**message, "headers": [(k, v) for k, v in message["headers"] if k not in hidden]}
            await send(message)

        await self.app(scope, receive, strip)


class TruncatingServer:
    """A raw HTTP/1.1 server on loopback whose first `truncated` record answers stop halfway.

    It answers any store request with a store object, and any record request with `hello world`; a
    truncated answer promises 11 bytes, sends 5 and closes the connection.
    """

    def __init__(self, *, truncated: int) -> None:
        self.truncated_left = truncated
        self.record_requests = 0
        self._writers: set[asyncio.StreamWriter] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            host, port = server.sockets[0].getsockname()[:2]
            yield f"http://{host}:{port}"
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = head.split("\r\n")
                target = lines[0].split(" ")[1].split("?")[0]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                if "/records/" in target:
                    self.record_requests += 1
                    start = b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: "v1"\r\nContent-Length: 11\r\n\r\n'
                    if self.truncated_left > 0:
                        self.truncated_left -= 1
                        writer.write(start + b"hello")
                        await writer.drain()
                        return
                    writer.write(start + b"hello world")
                else:
                    store_id = target.rstrip("/").rsplit("/", 1)[-1]
                    now = "2024-01-01T00:00:00.000Z"
                    store = {"id": store_id, "name": None, "createdAt": now, "modifiedAt": now, "accessedAt": now}
                    body = json.dumps({"data": store}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        + f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
