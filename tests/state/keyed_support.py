"""Helpers of the keyed state tests: small parts and an early compaction, the manifest and records read raw."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from recoverable import KeyedRecoverableState, RecoverableSet
from recoverable._keyed_manifest import Manifest
from state.support import quiet_event_manager

if TYPE_CHECKING:
    import pytest

    from recoverable.storages import KeyValueStore

KEY = "DOMAINS"


class Domain(BaseModel):
    pages: int = 0
    errors: int = 0


def make_keyed(kvs: KeyValueStore, **kwargs: Any) -> KeyedRecoverableState[Domain]:
    kwargs.setdefault("event_manager", quiet_event_manager())
    kwargs.setdefault("value_type", Domain)
    kwargs.setdefault("persist_state_key", KEY)
    return KeyedRecoverableState(key_value_store=kvs, **kwargs)


def make_set(kvs: KeyValueStore, **kwargs: Any) -> RecoverableSet[str]:
    kwargs.setdefault("event_manager", quiet_event_manager())
    kwargs.setdefault("persist_state_key", "SEEN")
    return RecoverableSet(key_value_store=kvs, **kwargs)


def shrink(monkeypatch: pytest.MonkeyPatch, *, part_size: int = 8, min_log: int = 4, max_log: int = 6) -> None:
    """Parts of a few entries and a compaction after a few saves, so that small tests split and compact."""
    monkeypatch.setattr("recoverable._keyed_parts.PART_SIZE", part_size)
    monkeypatch.setattr("recoverable._keyed_state.COMPACT_MIN_ENTRIES", min_log)
    monkeypatch.setattr("recoverable._keyed_state.MAX_LOG_RECORDS", max_log)


async def manifest_of(kvs: KeyValueStore, key: str = KEY) -> Manifest:
    record = await kvs.client.get_record(key=key)
    assert record is not None
    return Manifest.model_validate_json(record.value)


async def record_json(kvs: KeyValueStore, key: str) -> Any:
    record = await kvs.client.get_record(key=key)
    assert record is not None, key
    return json.loads(record.value)


async def side_records(kvs: KeyValueStore, key: str = KEY) -> set[str]:
    """The keys of the records of the keyed state `key` other than its manifest, its lease and its history's copies."""
    return {info.key for info in await kvs.list_keys(prefix=f"{key}.~") if ".history." not in info.key}


async def kept_records(kvs: KeyValueStore, key: str = KEY) -> set[str]:
    """The records named by the current manifest of the keyed state `key` and by every copy its history keeps."""
    named = (await manifest_of(kvs, key)).records() if await kvs.client.get_record(key=key) else set()
    for info in await kvs.list_keys(prefix=f"{key}.history."):
        named |= (await manifest_of(kvs, info.key)).records()
    return named


SHORT_TTL = timedelta(milliseconds=300)
