"""`HttpStorageClient` against a real `recoverable serve`: settings, auth, compression, errors, aliases."""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import pytest
from pydantic import BaseModel

from recoverable import EventManager, RecoverableState
from recoverable.errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidStoreNameError,
    StateOwnershipError,
    StorageBackendError,
    StoreNotFoundError,
)
from recoverable.storages import HttpStorageClient, KeyValueStore, MemoryStorageClient
from recoverable.storages._http._http11 import Http11Transport

from ._support import LosingAnswers, Recorder

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractAsyncContextManager

    from recoverable.storages import FileSystemStorageClient

JSON = "application/json"
TOKEN = secrets.token_urlsafe(16)
WRONG_TOKEN = secrets.token_urlsafe(16)


# --- settings -----------------------------------------------------------------------------------------


def test_base_url_is_required() -> None:
    with pytest.raises(ConfigurationError, match="RECOVERABLE_HTTP_URL"):
        HttpStorageClient()


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "http://", "http://[::1"])
def test_invalid_base_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        HttpStorageClient(base_url=url)


def test_credentials_in_the_base_url_are_refused_without_being_shown() -> None:
    with pytest.raises(ConfigurationError, match="token=") as info:
        HttpStorageClient(base_url="http://user:password-in-url@127.0.0.1:1")
    assert "password-in-url" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "transport"), [("http://127.0.0.1:1", Http11Transport), ("https://api.example", httpx.AsyncHTTPTransport)]
)
async def test_the_url_scheme_picks_the_transport(url: str, transport: type[httpx.AsyncBaseTransport]) -> None:
    async with HttpStorageClient(base_url=url) as client:
        assert type(client._session._client._transport) is transport


def test_invalid_settings() -> None:
    with pytest.raises(ConfigurationError, match="max_retries"):
        HttpStorageClient(base_url="http://127.0.0.1:1", max_retries=-1)
    with pytest.raises(ConfigurationError, match="max_connections"):
        HttpStorageClient(base_url="http://127.0.0.1:1", max_connections=0)
    with pytest.raises(ConfigurationError, match="timeout"):
        HttpStorageClient(base_url="http://127.0.0.1:1", timeout=timedelta(0))


@pytest.mark.parametrize(("setting", "value"), [("default_store_id", "../x"), ("alias_store_name", "a/b")])
def test_store_settings_follow_the_store_rules(setting: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        HttpStorageClient(base_url="http://127.0.0.1:1", **{setting: value})  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


async def test_settings_from_the_environment(
    serve: Callable[..., AbstractAsyncContextManager[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve(token=TOKEN) as url:
        monkeypatch.setenv("RECOVERABLE_HTTP_URL", url)
        monkeypatch.setenv("RECOVERABLE_HTTP_TOKEN", TOKEN)
        async with HttpStorageClient() as client:
            store = await client.open_key_value_store_client(name="env")
            await store.set_record(key="k", value=b"1", content_type=JSON)
            assert client.base_url == f"{url}/v2"


async def test_base_url_may_end_with_v2(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve() as url:
        for base in (f"{url}/v2", f"{url}/v2/", f"{url}/"):
            async with HttpStorageClient(base_url=base) as client:
                assert client.base_url == f"{url}/v2"
                assert await client.list_key_value_stores() == []


# --- authentication and messages ----------------------------------------------------------------------


async def test_the_token_is_sent_as_a_bearer_token(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    recorders: list[Recorder] = []

    def record(app: object) -> Recorder:
        recorders.append(Recorder(app))  # type: ignore[arg-type]
        return recorders[-1]

    async with serve(token=TOKEN, wrap=record) as url, HttpStorageClient(base_url=url, token=TOKEN) as client:
        await client.open_key_value_store_client(name="auth")

    assert {r.headers["authorization"] for r in recorders[0].requests} == {f"Bearer {TOKEN}"}
    assert all("token" not in r.path for r in recorders[0].requests)


async def test_a_wrong_token_fails_at_once_without_showing_it(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with serve(token=TOKEN) as url, HttpStorageClient(base_url=url, token=WRONG_TOKEN) as client:
        with pytest.raises(StorageBackendError) as info:
            await client.open_key_value_store_client(name="auth")

    message = str(info.value)
    assert "401 token-not-valid" in message
    assert "RECOVERABLE_HTTP_TOKEN" in message
    assert f"{url}/v2/key-value-stores" in message
    assert "'auth'" in message
    assert WRONG_TOKEN not in message
    assert info.value.store == "auth"


# --- compression --------------------------------------------------------------------------------------


async def test_bodies_over_1_kib_are_sent_gzipped(
    serve: Callable[..., AbstractAsyncContextManager[str]], backend: FileSystemStorageClient
) -> None:
    recorders: list[Recorder] = []

    def record(app: object) -> Recorder:
        recorders.append(Recorder(app))  # type: ignore[arg-type]
        return recorders[-1]

    small, large = b"s" * 1024, json.dumps({"items": list(range(2000))}).encode()
    async with serve(wrap=record) as url, HttpStorageClient(base_url=url) as client:
        store = await client.open_key_value_store_client(name="gz")
        await store.set_record(key="small", value=small, content_type=JSON)
        await store.set_record(key="large", value=large, content_type=JSON)

    puts = [r for r in recorders[0].requests if r.method == "PUT"]
    assert "content-encoding" not in puts[0].headers
    assert puts[0].body == small
    assert puts[1].headers["content-encoding"] == "gzip"
    assert len(puts[1].body) < len(large) / 2
    assert gzip.decompress(puts[1].body) == large
    stored = await (await backend.open_key_value_store_client(name="gz")).get_record(key="large")
    assert stored is not None
    assert stored.value == large


# --- errors -------------------------------------------------------------------------------------------


async def test_4xx_fail_at_once_with_the_servers_error(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    recorders: list[Recorder] = []

    def record(app: object) -> Recorder:
        recorders.append(Recorder(app))  # type: ignore[arg-type]
        return recorders[-1]

    async with (
        serve(wrap=record, max_key_length=10, max_body_size=100) as url,
        HttpStorageClient(base_url=url) as client,
    ):
        store = await client.open_key_value_store_client(name="limits")
        with pytest.raises(InvalidKeyError) as key_info:
            await store.set_record(key="k" * 11, value=b"1", content_type=JSON)
        with pytest.raises(StorageBackendError) as size_info:
            await store.set_record(key="big", value=bytes(range(256)) * 5, content_type=JSON)
        with pytest.raises(InvalidStoreNameError):
            await client.open_key_value_store_client(name="-bad-")

    assert "400 invalid-record-key" in str(key_info.value)
    assert "at most 10" in str(key_info.value)
    assert key_info.value.key == "k" * 11
    assert "413 request-too-large" in str(size_info.value)
    assert "100 bytes" in str(size_info.value)
    assert len(recorders[0].paths("PUT")) == 2


async def test_missing_store_and_missing_record(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve() as url, HttpStorageClient(base_url=url) as one, HttpStorageClient(base_url=url) as other:
        store = await one.open_key_value_store_client(name="dropped-elsewhere")
        assert await store.get_record(key="missing") is None
        assert not await store.record_exists(key="missing")
        assert await store.delete_record(key="missing") is False

        await (await other.open_key_value_store_client(name="dropped-elsewhere")).drop()

        with pytest.raises(StoreNotFoundError) as info:
            await store.get_record(key="missing")
        assert info.value.store == "dropped-elsewhere"
        with pytest.raises(StoreNotFoundError):
            await store.record_exists(key="missing")
        with pytest.raises(StoreNotFoundError):
            await store.delete_record(key="missing")


async def test_a_lost_answer_to_a_conditional_write_is_not_a_conflict(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    """The write went through but its answer was lost; the retry's 412 is against our own write."""
    losing: list[LosingAnswers] = []

    def lose(app: object) -> LosingAnswers:
        losing.append(LosingAnswers(app, ("PUT", "DELETE"), times=0))  # type: ignore[arg-type]
        return losing[-1]

    async with serve(wrap=lose) as url, HttpStorageClient(base_url=url) as client:
        store = await client.open_key_value_store_client(name="cas")
        version = await store.set_record(key="k", value=b"1", content_type=JSON)

        losing[0].times += 1
        new_version = await store.set_record(key="k", value=b"2", content_type=JSON, if_version=version)
        losing[0].times += 1
        created = await store.set_record(key="new", value=b"3", content_type=JSON, if_absent=True)
        losing[0].times += 1
        deleted = await store.delete_record(key="k", if_version=new_version)

        record = await store.get_record(key="new")
        assert record is not None
        assert (record.value, record.version) == (b"3", created)
        assert new_version != version
        assert losing[0].lost == 3
        assert deleted is True
        assert await store.get_record(key="k") is None


# --- aliases ------------------------------------------------------------------------------------------


async def test_aliases_are_shared_by_the_clients_of_a_server(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with serve(token=TOKEN) as url:
        clients = [HttpStorageClient(base_url=url, token=TOKEN) for _ in range(4)]
        try:
            # Four clients racing to create the same alias end up with one store.
            opened = await asyncio.gather(*(c.open_key_value_store_client(alias="race") for c in clients))
            ids = {(await s.get_metadata()).id for s in opened}
            assert len(ids) == 1
            defaults = {(await (await c.open_key_value_store_client()).get_metadata()).id for c in clients}
            assert len(defaults) == 1
            assert defaults != ids

            listed = await clients[0].list_key_value_stores()
            assert {m.id for m in listed} == ids | defaults
            assert all(m.name is None for m in listed)
            with pytest.raises(InvalidStoreNameError, match="reserved"):
                await clients[0].open_key_value_store_client(name="recoverable-aliases")
        finally:
            for client in clients:
                await client.aclose()


async def test_dropping_an_aliased_store_frees_the_alias(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with serve() as url, HttpStorageClient(base_url=url) as client:
        first = await client.open_key_value_store_client(alias="scratch")
        first_id = (await first.get_metadata()).id
        await first.drop()
        second = await client.open_key_value_store_client(alias="scratch")
        second_id = (await second.get_metadata()).id

        # Dropped by id, the alias is left stale: the next open notices and gives it a new store.
        await (await client.open_key_value_store_client(id=second_id)).drop()
        third_id = (await (await client.open_key_value_store_client(alias="scratch")).get_metadata()).id

    assert len({first_id, second_id, third_id}) == 3


async def test_a_default_store_id_replaces_the_default_alias(
    serve: Callable[..., AbstractAsyncContextManager[str]],
) -> None:
    async with serve() as url, HttpStorageClient(base_url=url) as setup:
        run_store = await setup.open_key_value_store_client(name="run-default")
        run_id = (await run_store.get_metadata()).id
        async with HttpStorageClient(base_url=url, default_store_id=run_id) as client:
            kvs = await KeyValueStore.open(storage_client=client)
            assert kvs.id == run_id
            other = await client.open_key_value_store_client(alias="other")
            assert (await other.get_metadata()).id != run_id


async def test_facade_over_a_memory_backend(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    async with serve(storage_client=MemoryStorageClient()) as url, HttpStorageClient(base_url=url) as client:
        kvs = await KeyValueStore.open(name="facade", storage_client=client)
        await kvs.set_value("state", {"pages": 3})
        assert await kvs.get_value("state") == {"pages": 3}
        assert [info.key for info in await kvs.list_keys()] == ["state"]


class _Progress(BaseModel):
    pages: int = 0


async def test_one_owner_per_state_across_http_clients(serve: Callable[..., AbstractAsyncContextManager[str]]) -> None:
    """RecoverableState's lease needs atomic conditional writes: the server's If-Match / If-None-Match."""
    async with serve() as url, HttpStorageClient(base_url=url) as first, HttpStorageClient(base_url=url) as second:
        events = EventManager(persist_state_interval=timedelta(hours=1))
        async with events:
            owner = RecoverableState(
                default_state=_Progress(),
                persist_state_key="CRAWL",
                key_value_store=await KeyValueStore.open(name="owned", storage_client=first),
                event_manager=events,
            )
            async with owner:
                owner.current_value.pages = 7
                await owner.persist_state()
                rival = RecoverableState(
                    default_state=_Progress(),
                    persist_state_key="CRAWL",
                    key_value_store=await KeyValueStore.open(name="owned", storage_client=second),
                    event_manager=events,
                )
                with pytest.raises(StateOwnershipError):
                    await rival.initialize()

            successor = RecoverableState(
                default_state=_Progress(),
                persist_state_key="CRAWL",
                key_value_store=await KeyValueStore.open(name="owned", storage_client=second),
                event_manager=events,
            )
            async with successor:
                assert successor.current_value.pages == 7
