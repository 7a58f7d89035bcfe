"""`Http11Transport` against raw servers on loopback that frame their answers every legal way."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
import pytest

from recoverable.storages._http._http11 import Http11Transport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@dataclass(frozen=True)
class _Seen:
    """A request the scripted server received: its number (from 1), method and target."""

    n: int
    method: bytes
    target: bytes


@dataclass
class _Scripted:
    """A raw HTTP/1.1 server: `answer(seen)` gives the bytes to send for each request it receives.

    `close_after` closes the connection after each answer; None as an answer closes it without one.
    """

    answer: Callable[[_Seen], bytes | None]
    close_after: bool = False
    delay: float = 0.0
    requests: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            yield f"http://127.0.0.1:{port}"
        finally:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                method, target, _ = head.split(b"\r\n", 1)[0].split(b" ")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.requests += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = self.answer(_Seen(self.requests, method, target))
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _fixed(answer: bytes | None) -> Callable[[_Seen], bytes | None]:
    return lambda _seen: answer


def _ok(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + b"".join(extra) + b"\r\n" + body


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=Http11Transport(max_connections=4), timeout=5) as client:
        yield client


async def test_keep_alive_reuses_one_connection(client: httpx.AsyncClient) -> None:
    server = _Scripted(lambda seen: _ok(f"answer {seen.n} to {seen.target.decode()}".encode()))
    async with server.running() as url:
        bodies = [(await client.get(f"{url}/x?n={i}")).text for i in range(20)]

    assert bodies == [f"answer {i + 1} to /x?n={i}" for i in range(20)]
    assert server.connections == 1
    assert server.heads[0].startswith(b"GET /x?n=0 HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:" in server.heads[0].lower()


async def test_a_request_is_written_in_one_piece_with_its_body(client: httpx.AsyncClient) -> None:
    server = _Scripted(_fixed(_ok(b"")))
    async with server.running() as url:
        response = await client.put(f"{url}/r", content=b"x" * 100_000, headers={"Content-Type": "a/b"})
    assert response.status_code == 200
    assert b"content-length: 100000" in server.heads[0].lower()


async def test_chunked_answers(client: httpx.AsyncClient) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"
    )
    server = _Scripted(_fixed(chunked))
    async with server.running() as url:
        first = await client.get(f"{url}/a")
        second = await client.get(f"{url}/b")
    assert first.content == second.content == b"hello 0123456789"
    assert server.connections == 1


async def test_answers_delimited_by_closing_the_connection(client: httpx.AsyncClient) -> None:
    server = _Scripted(_fixed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end"), close_after=True)
    async with server.running() as url:
        first = await client.get(f"{url}/a")
        second = await client.get(f"{url}/b")
    assert first.content == second.content == b"to the end"
    assert server.connections == 2


async def test_http_1_0_answers_close_unless_kept_alive(client: httpx.AsyncClient) -> None:
    server = _Scripted(_fixed(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), close_after=True)
    async with server.running() as url:
        assert (await client.get(f"{url}/a")).text == "ok"
        assert (await client.get(f"{url}/b")).text == "ok"
    assert server.connections == 2

    kept = _Scripted(_fixed(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"))
    async with kept.running() as url:
        assert (await client.get(f"{url}/a")).text == "ok"
        assert (await client.get(f"{url}/b")).text == "ok"
    assert kept.connections == 1


async def test_bodiless_answers(client: httpx.AsyncClient) -> None:
    def answer(seen: _Seen) -> bytes:
        if seen.method == b"HEAD":
            return b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: "v"\r\n\r\n'
        if seen.target == b"/empty":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        return b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + _ok(b"after interim")

    server = _Scripted(answer)
    async with server.running() as url:
        head = await client.head(f"{url}/r")
        empty = await client.delete(f"{url}/empty")
        interim = await client.get(f"{url}/r")

    assert (head.status_code, head.content, head.headers["etag"]) == (200, b"", '"v"')
    assert (empty.status_code, empty.content) == (204, b"")
    assert (interim.status_code, interim.content) == (200, b"after interim")
    assert server.connections == 1


async def test_compressed_answers_are_decoded(client: httpx.AsyncClient) -> None:
    server = _Scripted(_fixed(_ok(gzip.compress(b"squeezed" * 100), b"Content-Encoding: gzip\r\n")))
    async with server.running() as url:
        assert (await client.get(f"{url}/a")).content == b"squeezed" * 100


async def test_a_connection_the_server_closed_is_not_reused(client: httpx.AsyncClient) -> None:
    server = _Scripted(_fixed(_ok(b"fresh")), close_after=True)
    async with server.running() as url:
        assert (await client.get(f"{url}/a")).text == "fresh"
        await asyncio.sleep(0.05)
        assert (await client.get(f"{url}/b")).text == "fresh"
    assert server.connections == 2


async def test_idle_connections_expire() -> None:
    server = _Scripted(_fixed(_ok(b"x")))
    transport = Http11Transport(max_connections=1, keepalive_expiry=0.05)
    async with server.running() as url, httpx.AsyncClient(transport=transport) as client:
        await client.get(f"{url}/a")
        await asyncio.sleep(0.1)
        await client.get(f"{url}/b")
    assert server.connections == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SMTP ready\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", "CRLF"),
    ],
)
async def test_malformed_answers(client: httpx.AsyncClient, answer: bytes, message: str) -> None:
    server = _Scripted(_fixed(answer), close_after=True)
    async with server.running() as url:
        with pytest.raises(httpx.RemoteProtocolError, match=message):
            await client.get(f"{url}/a")


async def test_cut_off_answers(client: httpx.AsyncClient) -> None:
    for answer, message in (
        (None, "without answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf", "in the middle"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "in the middle"),
        (b"HTTP/1.1 200 OK\r\nContent-", "in the middle"),
    ):
        server = _Scripted(_fixed(answer), close_after=True)
        async with server.running() as url:
            with pytest.raises(httpx.RemoteProtocolError, match=message):
                await client.get(f"{url}/a")


async def test_timeouts_and_refusals() -> None:
    slow = _Scripted(_fixed(_ok(b"late")), delay=5)
    transport = Http11Transport(max_connections=1)
    async with slow.running() as url, httpx.AsyncClient(transport=transport, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{url}/a")
        # The timed-out connection is closed, not handed to the next request.
        slow.delay = 0
        assert (await client.get(f"{url}/b")).text == "late"
        assert slow.connections == 2

    async with httpx.AsyncClient(transport=Http11Transport(max_connections=1)) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{await _closed_port()}/a")
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", "https://127.0.0.1:1/"))


async def test_the_pool_limit_and_its_timeout() -> None:
    server = _Scripted(_fixed(_ok(b"x")), delay=0.3)
    transport = Http11Transport(max_connections=1)
    timeout = httpx.Timeout(5, pool=0.1)
    async with server.running() as url, httpx.AsyncClient(transport=transport, timeout=timeout) as client:
        first = asyncio.create_task(client.get(f"{url}/a"))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await client.get(f"{url}/b")
        assert (await first).text == "x"
        assert (await client.get(f"{url}/c")).text == "x"
    assert server.connections == 1


async def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool(client: httpx.AsyncClient) -> None:
    server = _Scripted(_fixed(_ok(b"x")), delay=0.5)
    async with server.running() as url:
        task = asyncio.create_task(client.get(f"{url}/a"))
        await asyncio.sleep(0.1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.delay = 0
        assert (await client.get(f"{url}/b")).text == "x"
    assert server.connections == 2


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda _reader, _writer: None, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port
