"""What bounds the server's work and memory per request: body decoding, and the budget of bodies in flight."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
import zlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from recoverable.errors import ConfigurationError
from recoverable.server import create_app
from recoverable.server._uvicorn import serve_in_background, uvicorn_config
from recoverable.storages import MemoryStorageClient
from server.support import new_store, record_url

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

GZIP = {"Content-Encoding": "gzip"}


def _error(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["message"]


# --- decoding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        (gzip.compress(b"a" * (3 << 20)) + gzip.compress(b"b"), b"a" * (3 << 20) + b"b"),
        (gzip.compress(b"one,") + b"\0" * 10 + gzip.compress(b"two") + b"\0\0", b"one,two"),
        (gzip.compress(b"") * 3 + gzip.compress(b"end"), b"end"),
        (gzip.compress(gzip.compress(b"inner")), gzip.compress(b"inner")),  # one Content-Encoding, one layer
        (b"".join(gzip.compress(bytes([i % 256])) for i in range(20_000)), bytes(i % 256 for i in range(20_000))),
        (b"", b""),
    ],
    ids=["a-then-b", "zero-padding", "empty-members", "gzip-of-gzip", "20000-members", "empty"],
)
async def test_gzip_streams_decode_exactly(api: httpx.AsyncClient, body: bytes, stored: bytes) -> None:
    store_id = await new_store(api)
    response = await api.put(record_url(store_id, "k"), content=body, headers=GZIP)
    assert response.status_code == 201, response.text
    assert (await api.get(record_url(store_id, "k"))).content == stored


def _with_trailer(data: bytes, *, crc: int | None = None, size: int | None = None) -> bytes:
    body = gzip.compress(data)
    real_crc, real_size = struct.unpack("<II", body[-8:])
    return body[:-8] + struct.pack("<II", real_crc if crc is None else crc, real_size if size is None else size)


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("gzip", gzip.compress(b"x" * 1000)[:-4], "not valid gzip data: it is truncated"),
        ("gzip", gzip.compress(b"x") + gzip.compress(b"y" * 1000)[:20], "not valid gzip data: it is truncated"),
        (
            "gzip",
            _with_trailer(b"hello", crc=1),
            "not valid gzip data: Error -3 while decompressing data: incorrect data check",
        ),
        ("gzip", _with_trailer(b"hello", size=6), "incorrect length check"),
        ("gzip", gzip.compress(b"x") + b"trailing junk", "not valid gzip data"),
        ("deflate", zlib.compress(b"x") + b"junk", "more data after the end of the deflate stream"),
        ("deflate", zlib.compress(b"x") * 2, "more data after the end of the deflate stream"),
        ("deflate", zlib.compress(b"x" * 1000)[:-2], "not valid deflate (zlib) data: it is truncated"),
    ],
    ids=[
        "truncated",
        "truncated-second-member",
        "crc-lie",
        "size-lie",
        "junk",
        "deflate-junk",
        "deflate-twice",
        "deflate-cut",
    ],
)
async def test_bodies_that_are_not_what_their_encoding_says_are_400(
    api: httpx.AsyncClient, encoding: str, body: bytes, message: str
) -> None:
    store_id = await new_store(api)
    response = await api.put(record_url(store_id, "k"), content=body, headers={"Content-Encoding": encoding})
    status, kind, text = _error(response)
    assert (status, kind) == (400, "invalid-request")
    assert message in text
    assert (await api.get(f"/v2/key-value-stores/{store_id}/keys")).json()["data"]["items"] == []


async def test_the_limit_counts_every_member(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve(max_body_size=1000) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        fits = gzip.compress(b"x" * 500) * 2
        assert (await api.put(record_url(store_id, "k"), content=fits, headers=GZIP)).status_code == 201
        status, kind, message = _error(await api.put(record_url(store_id, "k"), content=fits + fits[:10], headers=GZIP))
        assert (status, kind) == (400, "invalid-request")  # the third member is cut short in its header
        over = gzip.compress(b"x" * 500) * 3
        status, kind, message = _error(await api.put(record_url(store_id, "k"), content=over, headers=GZIP))
        assert (status, kind) == (413, "request-too-large")
        assert "the decompressed request body is larger than this server's limit of 1000 bytes" in message
        assert (await api.get(record_url(store_id, "k"))).content == b"x" * 1000


async def test_a_long_gzip_stream_leaves_the_loop_to_others(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    """The server shares this test's event loop: the test's own timer must keep firing while it decodes."""
    member = gzip.compress(b"")
    body = member * 300_000  # 6 MB of empty members: a lot of work per byte
    async with serve() as url, httpx.AsyncClient(base_url=url, timeout=60) as api:
        store_id = await new_store(api)
        gaps: list[float] = []
        loop = asyncio.get_running_loop()

        async def tick() -> None:
            last = loop.time()
            while True:
                await asyncio.sleep(0.001)
                now = loop.time()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        try:
            response = await api.put(record_url(store_id, "k"), content=body, headers=GZIP)
        finally:
            ticker.cancel()
        assert response.status_code == 201
        assert len(gaps) > 10
        # Not a timing target: a loop held for the whole decode would show one gap of seconds.
        assert max(gaps) < 0.5, max(gaps)


# --- the budget of bodies in flight -------------------------------------------------------------------


async def _start_put(
    port: int, path: str, length: int, first: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode() + first)
    await writer.drain()
    return reader, writer


async def test_bodies_past_the_budget_get_503_with_retry_after(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with serve(max_body_size=1000, max_bytes_in_flight=1500) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        port = httpx.URL(url).port
        assert port is not None
        # A body still arriving holds its Content-Length from the start.
        reader, writer = await _start_put(port, record_url(store_id, "slow"), 1000, b"s" * 10)
        await asyncio.sleep(0.1)

        busy = await api.put(record_url(store_id, "k"), content=b"x" * 600)
        status, kind, message = _error(busy)
        assert (status, kind) == (503, "server-busy")
        assert busy.headers["retry-after"] == "1"
        assert "1500 bytes" in message
        assert (await api.put(record_url(store_id, "small"), content=b"x" * 500)).status_code == 201

        writer.write(b"s" * 990)
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 201")
        writer.close()

        # Every refusal gives its share back: a body of the whole budget's worth of the limit still fits after.
        await api.put(record_url(store_id, "k"), content=gzip.compress(b"x" * 5000), headers=GZIP)
        await api.put(record_url(store_id, "k"), content=b"not gzip", headers=GZIP)
        await api.put(record_url(store_id, "k"), content=b"x" * 1001)
        results = await asyncio.gather(*(api.put(record_url(store_id, f"c{i}"), content=b"c" * 1000) for i in range(6)))
        assert {r.status_code for r in results} <= {201, 503}
        assert (await api.put(record_url(store_id, "k"), content=b"x" * 1000)).status_code == 201
        assert (await api.get(record_url(store_id, "slow"))).content == b"s" * 1000


async def test_a_decoded_body_counts_in_the_budget(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve(max_body_size=1000, max_bytes_in_flight=1500) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        port = httpx.URL(url).port
        assert port is not None
        _, writer = await _start_put(port, record_url(store_id, "slow"), 1000, b"s" * 10)
        await asyncio.sleep(0.1)
        # 20 bytes on the wire, 900 once decoded: past the 500 bytes the budget has left.
        status, kind, _ = _error(
            await api.put(record_url(store_id, "k"), content=gzip.compress(b"x" * 900), headers=GZIP)
        )
        assert (status, kind) == (503, "server-busy")
        writer.close()


@pytest.mark.parametrize(
    "options",
    [
        {"max_bytes_in_flight": 100, "max_body_size": 1000},
        {"max_bytes_in_flight": 0},
        {"max_bytes_in_flight": True},
        {"max_bytes_in_flight": 10.5},
        {"body_timeout": 0},
        {"body_timeout": -1},
        {"body_timeout": float("inf")},
        {"body_timeout": float("nan")},
        {"body_timeout": "30"},
    ],
)
def test_create_app_refuses_bad_bounds(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        create_app(storage_client=MemoryStorageClient(), **options)


@pytest.mark.parametrize("name", ["header_timeout", "send_timeout"])
@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), True])
def test_a_bad_connection_timeout_is_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigurationError, match=name):
        uvicorn_config(create_app(storage_client=MemoryStorageClient()), **{name: value})


async def test_a_body_within_the_limit_always_fits_an_idle_server(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    limit = 1 << 20
    async with serve(max_body_size=limit, max_bytes_in_flight=limit) as url, httpx.AsyncClient(base_url=url) as api:
        store_id = await new_store(api)
        # Almost a limit's worth on the wire that decodes to exactly the limit: never 503, however it is counted.
        exact = gzip.compress(bytes(range(256)) * (limit // 256 - 1), compresslevel=0) + gzip.compress(bytes(256))
        assert len(exact) < limit
        assert (await api.put(record_url(store_id, "k"), content=exact, headers=GZIP)).status_code == 201
        assert len((await api.get(record_url(store_id, "k"))).content) == limit
        bomb = gzip.compress(bytes(64 * limit), compresslevel=9)
        status, kind, _ = _error(await api.put(record_url(store_id, "k"), content=bomb, headers=GZIP))
        assert (status, kind) == (413, "request-too-large")


async def test_a_client_that_reads_nothing_of_its_answers_is_cut_off() -> None:
    backend = MemoryStorageClient()
    store = await backend.open_key_value_store_client(name="s")
    store_id = (await store.get_metadata()).id
    await store.set_record(key="big", value=b"b" * (8 << 20), content_type="application/octet-stream")
    async with serve_in_background(create_app(storage_client=backend), send_timeout=1) as url:
        port = httpx.URL(url).port
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)  # noqa: FBT003 - the socket API takes a positional flag
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = f"GET /v2/key-value-stores/{store_id}/records/big HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        await loop.sock_sendall(sock, request * 3)
        await asyncio.sleep(3)  # reading nothing of 24 MiB of answers
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10):
                received += len(chunk)
        sock.close()
    assert received < 8 << 20, received
