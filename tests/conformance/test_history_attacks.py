"""Every storage client: a state's history is found by a listing by prefix, whatever the state key holds."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import BaseModel

from recoverable import RecoverableState
from recoverable._history import history_prefix, kept_versions
from recoverable.events import EventManager

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore

# Wildcards of Redis MATCH (*, ?, [..], \\) and SQL LIKE (%, _), each next to a key it would match unescaped.
KEYS = ["ab", "a_", "a%", "a?", "a*", "a[b]", "a\\b", "[b]b"]


class Crawl(BaseModel):
    pages: int = 0


async def test_keys_with_wildcards_of_the_backends_list_only_their_own_copies(kvs: KeyValueStore) -> None:
    for index, key in enumerate(KEYS):
        state = RecoverableState(
            default_state=Crawl(),
            persist_state_key=key,
            key_value_store=kvs,
            event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
        )
        async with state:
            for pages in range(1, 3):
                state.current_value.pages = 10 * index + pages
                await state.persist_state()
    for index, key in enumerate(KEYS):
        kept = await kept_versions(kvs.client, key)
        assert [version.version for version in kept] == [2, 1], (key, [version.key for version in kept])
        assert all(version.key.startswith(history_prefix(key)) for version in kept), key
        stored = await kvs.client.get_record(key=kept[0].key)
        assert stored is not None
        assert Crawl.model_validate_json(stored.value).pages == 10 * index + 2
