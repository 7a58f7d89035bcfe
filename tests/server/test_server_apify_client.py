"""The official `apify-client` works against `recoverable serve`, and sees what `HttpStorageClient` sees."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from apify_client import ApifyClientAsync

from recoverable.storages import HttpStorageClient, KeyValueStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from contextlib import AbstractAsyncContextManager


@pytest.fixture
async def url(serve: Callable[..., AbstractAsyncContextManager[str]], token: str) -> AsyncIterator[str]:
    async with serve(token=token) as url:
        yield url


async def test_apify_client_round_trip(url: str, token: str) -> None:
    apify = ApifyClientAsync(token, api_url=url, max_retries=0)
    store = await apify.key_value_stores().get_or_create(name="shared")
    again = await apify.key_value_stores().get_or_create(name="shared")
    assert again.id == store.id
    records = apify.key_value_store(store.id)

    await records.set_record("json", {"pages": [1, 2, 3]})
    await records.set_record("text", "héllo", content_type="text/plain; charset=utf-8")
    await records.set_record("bytes", b"\x00\xff", content_type="application/octet-stream")
    await records.set_record("big", {"blob": "x" * 50_000})  # gzip-compressed by apify-client
    await records.set_record("a/b 🔑", {"odd": "key"})

    assert (await records.get_record("json") or {})["value"] == {"pages": [1, 2, 3]}
    assert (await records.get_record("text") or {})["value"] == "héllo"
    assert (await records.get_record("bytes") or {})["value"] == b"\x00\xff"
    assert (await records.get_record("a/b 🔑") or {})["value"] == {"odd": "key"}
    assert await records.get_record("missing") is None
    assert await records.record_exists("json")
    assert not await records.record_exists("missing")
    listing = await records.list_keys(limit=2)
    assert [item.key for item in listing.items] == ["a/b 🔑", "big"]
    assert listing.is_truncated
    assert [item.key async for item in records.iterate_keys()] == ["a/b 🔑", "big", "bytes", "json", "text"]

    async with HttpStorageClient(base_url=url, token=token) as ours:
        kvs = await KeyValueStore.open(name="shared", storage_client=ours)
        assert kvs.id == store.id
        assert await kvs.get_value("json") == {"pages": [1, 2, 3]}
        assert await kvs.get_value("text") == "héllo"
        assert await kvs.get_value("bytes") == b"\x00\xff"
        assert await kvs.get_value("big") == {"blob": "x" * 50_000}
        assert await kvs.get_value("a/b 🔑") == {"odd": "key"}
        await kvs.set_value("ours", {"from": "recoverable"})

    assert (await records.get_record("ours") or {})["value"] == {"from": "recoverable"}
    await records.delete_record("json")
    assert await records.get_record("json") is None
    assert [item.key async for item in records.iterate_keys()] == ["a/b 🔑", "big", "bytes", "ours", "text"]

    listed = await apify.key_value_stores().list()
    assert [s.id for s in listed.items] == [store.id]
    await records.delete()
    assert await apify.key_value_store(store.id).get() is None


async def test_apify_client_without_token_is_refused(url: str) -> None:
    from apify_client.errors import ApifyApiError  # noqa: PLC0415

    apify = ApifyClientAsync(api_url=url, max_retries=0)
    with pytest.raises(ApifyApiError) as info:
        await apify.key_value_stores().get_or_create(name="nope")
    assert info.value.status_code == 401
    assert info.value.type == "token-not-provided"
