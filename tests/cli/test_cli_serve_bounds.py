"""`recoverable serve` stays bounded against hostile clients: gzip streams, many large uploads, slow senders.

Every test runs the real command as a child process on a loopback port, and talks to it over sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from recoverable.storages import HttpStorageClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from cli._child import ServeChild

MiB = 1024 * 1024
TWO_MEMBERS = gzip.compress(bytes(8 * MiB), mtime=0) * 2
"""Two gzip members of 8 MiB of zeros each: about 16 KB that expand to 16 MiB."""
A_THEN_B = gzip.compress(b"a" * 3 * MiB, mtime=0) + gzip.compress(b"b", mtime=0)


def _record(store_id: str, key: str) -> str:
    return f"/v2/key-value-stores/{store_id}/records/{key}"


async def _store_id(api: httpx.AsyncClient) -> str:
    response = await api.post("/v2/key-value-stores", params={"name": "bounds"})
    store_id: str = response.json()["data"]["id"]
    return store_id


@contextlib.asynccontextmanager
async def _pinging(url: str) -> AsyncIterator[list[float]]:
    """Ask the server for the store list over and over while the block runs; yields the answer times (s)."""
    times: list[float] = []
    stop = asyncio.Event()

    async def ping() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            while not stop.is_set():
                started = time.monotonic()
                response = await client.get("/v2/key-value-stores")
                assert response.status_code == 200
                times.append(time.monotonic() - started)
                await asyncio.sleep(0.01)

    task = asyncio.create_task(ping())
    try:
        yield times
    finally:
        stop.set()
        await task  # a ping that got no answer within 5 s raised


class _PeakRss:
    """The peak resident memory of a process, sampled with psutil (and read from VmHWM on Linux)."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._pid = pid
        self.start = self._process.memory_info().rss
        self.sampled = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(psutil.Error):
                self.sampled = max(self.sampled, self._process.memory_info().rss)

    def growth(self) -> int:
        """Peak RSS since this object was made, minus the RSS then."""
        self._stop.set()
        self._thread.join()
        peak = self.sampled
        status = Path(f"/proc/{self._pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        return peak - self.start


# --- gzip --------------------------------------------------------------------------------------------


async def test_concatenated_gzip_members_decode_while_the_server_keeps_answering(
    start: Callable[..., ServeChild],
) -> None:
    serve = start("--storage-client", "memory", "--log-level", "warning")
    serve.wait_ready(token=None)
    async with httpx.AsyncClient(base_url=serve.url, timeout=10) as api, _pinging(serve.url) as pings:
        store_id = await _store_id(api)
        for key, body, expected in (
            ("two-members", TWO_MEMBERS, bytes(16 * MiB)),
            ("a-then-b", A_THEN_B, b"a" * 3 * MiB + b"b"),
        ):
            response = await api.put(_record(store_id, key), content=body, headers={"Content-Encoding": "gzip"})
            assert response.status_code == 201, response.text
            assert (await api.get(_record(store_id, key))).content == expected
        await asyncio.sleep(0.2)
    assert len(TWO_MEMBERS) < 20_000
    assert pings  # the server answered other requests meanwhile, each within the ping's timeout
    assert serve.stop() == 0


async def test_a_gzip_bomb_is_cut_at_the_limit(start: Callable[..., ServeChild]) -> None:
    serve = start("--storage-client", "memory", "--max-body-size", "1MiB", "--log-level", "warning")
    serve.wait_ready(token=None)
    async with httpx.AsyncClient(base_url=serve.url, timeout=10) as api:
        store_id = await _store_id(api)
        rss = _PeakRss(serve.process.pid)
        for body in (gzip.compress(bytes(256 * MiB), mtime=0), gzip.compress(bytes(MiB // 2), mtime=0) * 3):
            response = await api.put(_record(store_id, "bomb"), content=body, headers={"Content-Encoding": "gzip"})
            error = response.json()["error"]
            assert (response.status_code, error["type"]) == (413, "request-too-large")
            assert "decompressed request body is larger than this server's limit of 1048576 bytes" in error["message"]
        growth = rss.growth()
        assert (await api.get(f"/v2/key-value-stores/{store_id}/keys")).json()["data"]["items"] == []
    assert growth < 32 * MiB, f"the server grew by {growth / MiB:.0f} MiB decoding a bomb cut at 1 MiB"
    assert serve.stop() == 0


# --- memory across requests ----------------------------------------------------------------------------


async def test_concurrent_large_uploads_stay_within_the_budget(
    start: Callable[..., ServeChild], tmp_path: Path
) -> None:
    budget = 32 * MiB
    serve = start(
        "--storage-dir",
        str(tmp_path / "served"),
        "--max-body-size",
        "16MiB",
        "--max-bytes-in-flight",
        "32MiB",
        "--log-level",
        "warning",
    )
    serve.wait_ready(token=None)
    body = b"x" * (15 * MiB)
    async with httpx.AsyncClient(
        base_url=serve.url, timeout=60, limits=httpx.Limits(max_connections=16, max_keepalive_connections=16)
    ) as api:
        store_id = await _store_id(api)
        await api.put(_record(store_id, "warm-up"), content=b"x" * MiB)
        rss = _PeakRss(serve.process.pid)
        responses = await asyncio.gather(*(api.put(_record(store_id, f"k{i}"), content=body) for i in range(16)))
        growth = rss.growth()

    statuses = sorted(response.status_code for response in responses)
    assert set(statuses) == {201, 503}, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            error = response.json()["error"]
            assert error["type"] == "server-busy"
            assert "--max-bytes-in-flight" in error["message"]
    # Without the budget all 16 bodies (240 MiB) would be held at once.
    assert growth < 3 * budget, f"the server grew by {growth / MiB:.0f} MiB with a budget of {budget / MiB:.0f} MiB"
    assert serve.stop() == 0


async def test_the_http_client_waits_out_a_busy_server(start: Callable[..., ServeChild], tmp_path: Path) -> None:
    budget = 32 * MiB
    serve = start(
        "--storage-dir",
        str(tmp_path / "served"),
        "--max-body-size",
        "16MiB",
        "--max-bytes-in-flight",
        "32MiB",
        "--log-level",
        "error",
    )
    serve.wait_ready(token=None)
    # The client gzips these: 15 MiB each once decoded, which is what the budget counts.
    values = [bytes([65 + i]) * (15 * MiB) for i in range(8)]
    async with HttpStorageClient(base_url=serve.url) as client:
        store = await client.open_key_value_store_client(name="busy")
        rss = _PeakRss(serve.process.pid)
        await asyncio.gather(
            *(
                store.set_record(key=f"k{i}", value=value, content_type="application/octet-stream")
                for i, value in enumerate(values)
            )
        )
        growth = rss.growth()
        for i, value in enumerate(values):
            record = await store.get_record(key=f"k{i}")
            assert record is not None
            assert record.value == value
    assert growth < 3 * budget + 15 * MiB, f"the server grew by {growth / MiB:.0f} MiB"
    assert serve.stop() == 0


# --- slow clients -------------------------------------------------------------------------------------


async def _read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection (fails the test if it does not)."""
    try:
        return await asyncio.wait_for(reader.read(), within)
    except ConnectionResetError:
        return b""


async def test_connections_that_never_finish_their_headers_are_closed(start: Callable[..., ServeChild]) -> None:
    serve = start("--storage-client", "memory", "--header-timeout", "1", "--log-level", "warning")
    serve.wait_ready(token=None)
    silent, partial = [], []
    for i in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", serve.port)
        if i % 2:
            writer.write(b"GET /v2/key-value-stores HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            partial.append((reader, writer))
        else:
            silent.append((reader, writer))

    # One more sends a byte of its header every 0.2 s: being busy does not extend the deadline.
    trickle_reader, trickle_writer = await asyncio.open_connection("127.0.0.1", serve.port)

    async def trickle() -> None:
        head = b"GET /v2/key-value-stores HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Padding: " + b"a" * 1000
        with contextlib.suppress(ConnectionError):
            for byte in head:
                trickle_writer.write(bytes([byte]))
                await trickle_writer.drain()
                await asyncio.sleep(0.2)

    trickling = asyncio.create_task(trickle())
    async with httpx.AsyncClient(base_url=serve.url, timeout=5) as api:
        assert (await api.get("/v2/key-value-stores")).status_code == 200  # others are served meanwhile

    started = time.monotonic()
    answers = await asyncio.gather(*(_read_until_closed(reader, 10) for reader, _ in silent + partial))
    trickled = await _read_until_closed(trickle_reader, 10)
    await trickling
    waited = time.monotonic() - started

    assert set(answers[: len(silent)]) == {b""}  # nothing was asked, nothing is answered
    for answer in [*answers[len(silent) :], trickled]:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error == {"type": "request-timeout", "message": "the request line and headers did not arrive within 1 s"}
    assert waited < 8
    for _, writer in [*silent, *partial, (trickle_reader, trickle_writer)]:
        writer.close()
    assert serve.stop() == 0


async def _put_slowly(port: int, path: str, length: int, parts: Iterator[tuple[bytes, float]]) -> bytes:
    """Send a PUT of `length` bytes as the (part, pause) pairs say; return all the server sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for part, pause in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(pause)

    sending = asyncio.create_task(send())
    try:
        return await _read_until_closed(reader, 15)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.close()


def _stalled() -> Iterator[tuple[bytes, float]]:
    yield b"x" * 1000, 60


def _dribbled() -> Iterator[tuple[bytes, float]]:
    while True:
        yield b"x" * 100, 0.05


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (_stalled, "no part of the request body arrived for 1 s"),
        (_dribbled, "the request body arrives too slowly"),
    ],
)
async def test_a_body_that_arrives_too_slowly_gets_408(
    start: Callable[..., ServeChild], parts: Callable[[], Iterator[tuple[bytes, float]]], message: str
) -> None:
    serve = start(
        "--storage-client", "memory", "--body-timeout", "1", "--max-bytes-in-flight", "64MiB", "--log-level", "warning"
    )
    serve.wait_ready(token=None)
    async with httpx.AsyncClient(base_url=serve.url, timeout=10) as api:
        store_id = await _store_id(api)
        answer = await _put_slowly(serve.port, _record(store_id, "slow"), 60 * MiB, parts())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["type"] == "request-timeout"
        assert message in error["message"]
        # The slow body's share of the budget is back: a body as large as the whole budget fits again.
        response = await api.put(_record(store_id, "fast"), content=b"y" * (60 * MiB))
        assert response.status_code == 201, response.text
    assert serve.stop() == 0
