"""Faults: a server down at start or during a persist, 429 storms, 5xx, truncated answers, a slow server."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from recoverable import EventManager, RecoverableState
from recoverable.errors import StorageBackendError
from recoverable.storages import HttpStorageClient, KeyValueStore

from ._support import Refusing, Slow, TruncatingServer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from recoverable.storages import FileSystemStorageClient

JSON = "application/json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _retry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "recoverable.storages.http" and "retrying" in r.getMessage()
    ]


# --- server down --------------------------------------------------------------------------------------


async def test_server_down_at_start(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    async with HttpStorageClient(base_url=url, max_retries=3, max_retry_time=timedelta(seconds=5)) as client:
        with pytest.raises(StorageBackendError) as info:
            await client.open_key_value_store_client(name="crawl")

    message = str(info.value)
    assert "could not open or create key-value store 'crawl'" in message
    assert f"{url}/v2/key-value-stores" in message
    assert "cannot connect" in message
    assert "gave up after 4 attempt(s)" in message
    assert "Check that the server is running and reachable" in message
    assert time.monotonic() - started < 5
    assert len(_retry_warnings(caplog)) == 3


class _Progress(BaseModel):
    pages: int = 0


async def test_server_down_during_a_periodic_persist(
    serve: Callable[..., AbstractAsyncContextManager[str]],
    backend: FileSystemStorageClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _free_port()

    async def saved_pages() -> int | None:
        store = await backend.open_key_value_store_client(name="crawl")
        record = await store.get_record(key="PROGRESS")
        return None if record is None else _Progress.model_validate_json(record.value).pages

    async def saved(pages: int) -> bool:
        return await saved_pages() == pages

    async def failed_saves() -> bool:
        return any("saving state 'PROGRESS' failed" in r.getMessage() for r in caplog.records)

    async def wait_until(condition: Callable[[], Awaitable[bool]]) -> None:
        for _ in range(200):
            if await condition():
                return
            await asyncio.sleep(0.05)
        pytest.fail("timed out waiting")

    client = HttpStorageClient(
        base_url=f"http://127.0.0.1:{port}", max_retries=1, max_retry_time=timedelta(seconds=0.3)
    )
    async with client, EventManager(persist_state_interval=timedelta(seconds=0.1)) as events:
        async with serve(port=port):
            kvs = await KeyValueStore.open(name="crawl", storage_client=client)
            state = RecoverableState(
                default_state=_Progress(), persist_state_key="PROGRESS", key_value_store=kvs, event_manager=events
            )
            await state.initialize()
            state.current_value.pages = 1
            await wait_until(lambda: saved(1))

        # The server is down: persists fail, are logged, and the state stays in memory.
        state.current_value.pages = 2
        await wait_until(failed_saves)
        assert state.current_value.pages == 2
        assert await saved_pages() == 1

        async with serve(port=port):
            await wait_until(lambda: saved(2))
        await state.teardown()


# --- 429 and 5xx --------------------------------------------------------------------------------------


async def test_a_429_storm_is_waited_out_as_retry_after_asks(
    serve: Callable[..., AbstractAsyncContextManager[str]], caplog: pytest.LogCaptureFixture
) -> None:
    refusing: list[Refusing] = []

    def refuse(app: object) -> Refusing:
        refusing.append(Refusing(app, times=0, retry_after="0.2"))  # type: ignore[arg-type]
        return refusing[-1]

    async with serve(wrap=refuse) as url, HttpStorageClient(base_url=url) as client:
        store = await client.open_key_value_store_client(name="limited")
        refusing[0].times = 3
        started = time.monotonic()
        await store.set_record(key="k", value=b"1", content_type=JSON)
        elapsed = time.monotonic() - started
        record = await store.get_record(key="k")

    assert record is not None
    assert record.value == b"1"
    assert refusing[0].refused == 3
    assert elapsed >= 0.6
    warnings = _retry_warnings(caplog)
    assert len(warnings) == 3
    assert all("HTTP 429 rate-limit-exceeded" in w for w in warnings)


async def test_a_429_storm_longer_than_the_retry_time_fails(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    def refuse(app: object) -> Refusing:
        return Refusing(app, times=10**6, retry_after="0.1")  # type: ignore[arg-type]

    async with (
        serve(wrap=refuse) as url,
        HttpStorageClient(base_url=url, max_retries=100, max_retry_time=timedelta(seconds=1)) as client,
    ):
        started = time.monotonic()
        with pytest.raises(StorageBackendError) as info:
            await client.open_key_value_store_client(name="limited")
        elapsed = time.monotonic() - started

    assert 0.2 < elapsed < 2.5  # gives up as soon as the next wait would pass the limit
    message = str(info.value)
    assert "HTTP 429 rate-limit-exceeded: try again later" in message
    assert "the retry time limit is 1.0 s" in message
    assert "try again later" in message


async def test_a_retry_after_beyond_the_retry_time_fails_at_once(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    def refuse(app: object) -> Refusing:
        return Refusing(app, times=10**6, retry_after="120")  # type: ignore[arg-type]

    async with (
        serve(wrap=refuse) as url,
        HttpStorageClient(base_url=url, max_retry_time=timedelta(seconds=5)) as client,
    ):
        started = time.monotonic()
        with pytest.raises(StorageBackendError, match=r"asked to wait 120\.0 s more"):
            await client.open_key_value_store_client(name="limited")
        assert time.monotonic() - started < 1


async def test_retry_after_as_an_http_date(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)

    def refuse(app: object) -> Refusing:
        return Refusing(app, times=1, retry_after=when)  # type: ignore[arg-type]

    async with serve(wrap=refuse) as url, HttpStorageClient(base_url=url) as client:
        started = time.monotonic()
        await client.open_key_value_store_client(name="limited")
        assert time.monotonic() - started > 0.9


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_are_retried(serve: Callable[..., AbstractAsyncContextManager[str]], status: int) -> None:
    def refuse(app: object) -> Refusing:
        return Refusing(app, times=2, status=status)  # type: ignore[arg-type]

    async with serve(wrap=refuse) as url, HttpStorageClient(base_url=url) as client:
        store = await client.open_key_value_store_client(name="flaky")
        await store.set_record(key="k", value=b"1", content_type=JSON)
        assert await store.record_exists(key="k")


# --- truncated and slow answers -----------------------------------------------------------------------


async def test_a_truncated_answer_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    server = TruncatingServer(truncated=2)
    async with server.running() as url, HttpStorageClient(base_url=url) as client:
        store = await client.open_key_value_store_client(id="someStoreId000000")
        record = await store.get_record(key="k")

    assert record is not None
    assert (record.value, record.version, record.content_type) == (b"hello world", "v1", "text/plain")
    assert server.record_requests == 3
    assert all("cut off" in w for w in _retry_warnings(caplog))


async def test_answers_that_are_always_truncated_fail() -> None:
    server = TruncatingServer(truncated=10**6)
    async with (
        server.running() as url,
        HttpStorageClient(base_url=url, max_retries=2, max_retry_time=timedelta(seconds=5)) as client,
    ):
        store = await client.open_key_value_store_client(id="someStoreId000000")
        with pytest.raises(StorageBackendError) as info:
            await store.get_record(key="k")

    assert "the answer was cut off" in str(info.value)
    assert "record 'k' of key-value store 'someStoreId000000'" in str(info.value)
    assert server.record_requests == 3


async def test_a_server_slower_than_the_timeout(
    serve: Callable[..., AbstractAsyncContextManager[str]], backend: FileSystemStorageClient
) -> None:
    def slow(app: object) -> Slow:
        return Slow(app, delay=30)  # type: ignore[arg-type]

    async with (
        serve(wrap=slow, uvicorn_options={"timeout_graceful_shutdown": 0.1}) as url,
        HttpStorageClient(
            base_url=url, timeout=timedelta(seconds=0.3), max_retries=1, max_retry_time=timedelta(seconds=5)
        ) as client,
    ):
        store = await client.open_key_value_store_client(name="slow")
        started = time.monotonic()
        with pytest.raises(StorageBackendError) as info:
            await store.get_record(key="k")
        elapsed = time.monotonic() - started

    assert "no answer within the timeout of 0.3 s" in str(info.value)
    assert "gave up after 2 attempt(s)" in str(info.value)
    assert elapsed < 2


async def test_warnings_name_the_url_but_never_the_token(
    serve: Callable[..., AbstractAsyncContextManager[str]], caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(app: object) -> Refusing:
        return Refusing(app, times=1, status=503)  # type: ignore[arg-type]

    caplog.set_level(logging.DEBUG)
    secret = secrets.token_urlsafe(16)
    async with (
        serve(wrap=refuse, token=secret) as url,
        HttpStorageClient(base_url=url, token=secret) as client,
    ):
        await client.open_key_value_store_client(name="quiet")
    assert _retry_warnings(caplog)
    assert all(secret not in r.getMessage() for r in caplog.records)
