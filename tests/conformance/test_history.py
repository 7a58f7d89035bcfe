"""Every storage client keeps a state's history: saves kept, listed after a restart, rolled back, fallen back to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from recoverable import RecoverableState
from recoverable.events import LocalEventManager
from recoverable.storages import KeyValueStore, StorageClient

Reopen = Callable[[], Awaitable[StorageClient]]
KEY = "CRAWL"
STORE = "history"


class Crawl(BaseModel):
    pages: int = 0


def make_state(kvs: KeyValueStore, **more: object) -> RecoverableState[Crawl]:
    manager = LocalEventManager(persist_state_interval=None, system_info_interval=None, handle_signals=False)
    return RecoverableState(
        default_state=Crawl(),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=manager,
        **more,  # type: ignore[arg-type]
    )


async def test_history_rollback_and_fall_back_after_restarts(
    storage_client: StorageClient, reopen_storage_client: Reopen
) -> None:
    kvs = await KeyValueStore.open(name=STORE, storage_client=storage_client)
    async with make_state(kvs) as state:
        for pages in range(1, 6):
            state.current_value.pages = pages
            await state.persist_state()

    # A new client of the same storage, as after a restart, sees the same history.
    kvs = await KeyValueStore.open(name=STORE, storage_client=await reopen_storage_client())
    async with make_state(kvs) as state:
        versions = await state.history()
        assert [(v.version, v.current, v.trigger) for v in versions] == [
            (5, True, "manual"),
            (4, False, "manual"),
            (3, False, "manual"),
        ]
        assert await state.rollback(3) == Crawl(pages=3)
    kept = [info.key for info in await kvs.list_keys() if ".history." in info.key]
    assert len(kept) == 3

    # The record is damaged; the next start sets it aside and loads the newest good version.
    await kvs.client.set_record(key=KEY, value=b'{"pages": "three"}', content_type="application/json")
    kvs = await KeyValueStore.open(name=STORE, storage_client=await reopen_storage_client())
    async with make_state(kvs, on_invalid="previous") as state:
        assert state.current_value == Crawl(pages=3)
        assert [v.trigger for v in await state.history()][:2] == ["rollback", "rollback"]
    quarantined = [info.key for info in await kvs.list_keys() if ".quarantine-" in info.key]
    assert len(quarantined) == 1
    stored = await kvs.client.get_record(key=quarantined[0])
    assert stored is not None
    assert stored.value == b'{"pages": "three"}'
