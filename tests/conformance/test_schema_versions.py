"""Every storage client carries a state's schema version, so migrations work the same on each of them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from recoverable import RecoverableState
from recoverable.errors import StateValidationError
from recoverable.events import LocalEventManager
from recoverable.storages import KeyValueStore, StorageClient

Reopen = Callable[[], Awaitable[StorageClient]]
KEY = "CRAWL"
STORE = "schema-versions"


class Before(BaseModel):
    pages: int = 0
    urls: list[str] = []


class After(BaseModel):
    pages: int = 0
    seen_urls: list[str] = []


def rename_urls(record: dict[str, Any]) -> dict[str, Any]:
    return {"pages": record["pages"], "seen_urls": record["urls"]}


async def test_a_record_saved_by_the_release_before_is_upgraded_after_a_restart(
    storage_client: StorageClient, reopen_storage_client: Reopen
) -> None:
    manager = LocalEventManager(persist_state_interval=None, system_info_interval=None, handle_signals=False)
    kvs = await KeyValueStore.open(name=STORE, storage_client=storage_client)
    async with RecoverableState(
        default_state=Before(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    ) as before:
        before.current_value.pages = 3
        before.current_value.urls = ["https://a", "https://b"]

    # The next deploy, on a new client of the same storage.
    kvs = await KeyValueStore.open(name=STORE, storage_client=await reopen_storage_client())
    async with RecoverableState(
        default_state=After(),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=manager,
        schema_version=2,
        migrations={1: rename_urls},
    ) as after:
        assert after.current_value == After(pages=3, seen_urls=["https://a", "https://b"])
        after.current_value.pages = 4

    kvs = await KeyValueStore.open(name=STORE, storage_client=await reopen_storage_client())
    record = await kvs.client.get_record(key=KEY)
    assert record is not None
    assert record.content_type == "application/json; schema-version=2"
    assert await kvs.get_value(KEY) == {"pages": 4, "seen_urls": ["https://a", "https://b"]}
    assert await kvs.get_value(f"{KEY}.schema-v1-backup") == {"pages": 3, "urls": ["https://a", "https://b"]}

    # A rollback to the release before refuses the newer record and leaves it as it is.
    with pytest.raises(StateValidationError, match="newer than this program's 1"):
        await RecoverableState(
            default_state=Before(), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
        ).initialize()
    again = await kvs.client.get_record(key=KEY)
    assert again is not None
    assert (again.value, again.content_type, again.version) == (record.value, record.content_type, record.version)
