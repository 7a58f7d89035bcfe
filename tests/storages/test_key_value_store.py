"""The `KeyValueStore` facade: opening, naming rules, the default storage client, auto-saved values."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

import recoverable.storages._key_value_store
from recoverable import RecoverableState
from recoverable.configuration import Configuration
from recoverable.errors import (
    ConfigurationError,
    DeserializationError,
    InvalidKeyError,
    InvalidStoreNameError,
    RecoverableError,
    StorageError,
)
from recoverable.events import Event, EventManager, EventPersistStateData
from recoverable.events._default import DefaultEvents
from recoverable.storages import (
    MAX_KEY_LENGTH,
    MAX_NAME_LENGTH,
    FileSystemStorageClient,
    KeyValueStore,
    MemoryStorageClient,
    StorageClient,
    default_storage_client,
)

VALID_NAMES = ["a", "A", "0", "my-crawl-1", "a-b-c", "x" * MAX_NAME_LENGTH, "Crawl2024"]
INVALID_NAMES = [
    "",
    "-a",
    "a-",
    "-",
    "a_b",
    "a b",
    "a.b",
    "a/b",
    "..",
    ".",
    "ü",
    "🔑",
    "x" * (MAX_NAME_LENGTH + 1),
    " a",
]
INVALID_ALIASES: list[object] = ["", ".", "..", "a/b", "../x", "a\\b", "a\x00b", "x" * (MAX_KEY_LENGTH + 1), "\ud800"]
# Crawlee's alias rule: anything but these. Each is its own store, whatever it looks like.
VALID_ALIASES = [
    "-a",
    "a_b",
    "a b",
    "a.b",
    "ü",
    "🔑",
    " a",
    "..x",
    "...",
    ".hidden",
    "%2e%2e",
    "%2F",
    "a:b",
    "x" * 300,
    "x" * MAX_KEY_LENGTH,
    "__x",
    "_alias_x",
    "__metadata__.json",
    ".~tmp.x",
    "a\nb",
    "日本語の別名",
    "alias.with.dots",
    "CamelCaseAlias",
]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": "abc", "name": "n"},
        {"id": "abc", "alias": "a"},
        {"name": "n", "alias": "a"},
        {"id": "abc", "name": "n", "alias": "a"},
    ],
)
async def test_open_with_more_than_one_of_id_name_alias(kwargs: dict[str, str], storage_client: StorageClient) -> None:
    with pytest.raises(ConfigurationError) as info:
        await KeyValueStore.open(storage_client=storage_client, **kwargs)  # type: ignore[arg-type]

    for given in kwargs:
        assert f'"{given}"' in str(info.value)
    # Crawlee raises a ValueError: code catching that keeps working.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RecoverableError)
    assert await storage_client.list_key_value_stores() == []


@pytest.mark.parametrize(("bad_id", "rule"), [("", "is invalid"), ("../x", "is invalid"), (17, "must be a str")])
async def test_open_with_an_invalid_id(bad_id: object, rule: str, storage_client: StorageClient) -> None:
    with pytest.raises(InvalidStoreNameError, match=f"store id .*{rule}"):
        await KeyValueStore.open(id=bad_id, storage_client=storage_client)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", VALID_NAMES)
async def test_valid_names_and_aliases(name: str, storage_client: StorageClient) -> None:
    named = await KeyValueStore.open(name=name, storage_client=storage_client)
    aliased = await KeyValueStore.open(alias=name, storage_client=storage_client)

    assert named.name == name
    assert aliased.name is None
    assert named.id != aliased.id


@pytest.mark.parametrize("name", INVALID_NAMES)
async def test_invalid_names_are_refused(name: str, storage_client: StorageClient) -> None:
    with pytest.raises(InvalidStoreNameError) as info:
        await KeyValueStore.open(name=name, storage_client=storage_client)

    message = str(info.value)
    assert repr(name) in message
    assert "store name" in message
    assert f"1 to {MAX_NAME_LENGTH} letters, digits and hyphens" in message
    assert "no hyphen at either end" in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, StorageError)
    assert await storage_client.list_key_value_stores() == []


@pytest.mark.parametrize("alias", INVALID_ALIASES, ids=lambda a: repr(a)[:20])
async def test_invalid_aliases_are_refused(alias: str, storage_client: StorageClient) -> None:
    with pytest.raises(InvalidStoreNameError, match="store alias") as info:
        await KeyValueStore.open(alias=alias, storage_client=storage_client)
    assert "without '/', '\\' or NUL" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert await storage_client.list_key_value_stores() == []


@pytest.mark.parametrize("alias", VALID_ALIASES, ids=lambda a: repr(a[:20]))
async def test_aliases_follow_crawlee_s_rule(alias: str, storage_client: StorageClient) -> None:
    store = await KeyValueStore.open(alias=alias, storage_client=storage_client)
    await store.set_value("which", alias)
    other = await KeyValueStore.open(alias="other", storage_client=storage_client)
    default = await KeyValueStore.open(storage_client=storage_client)

    assert store.name is None
    assert len({store.id, other.id, default.id}) == 3
    assert await KeyValueStore.open(alias=alias, storage_client=storage_client) is store
    assert await store.get_value("which") == alias


@pytest.mark.parametrize("alias", ["default", "__default__"])
async def test_the_default_aliases_open_the_default_store(alias: str, storage_client: StorageClient) -> None:
    default = await KeyValueStore.open(storage_client=storage_client)

    assert await KeyValueStore.open(alias=alias, storage_client=storage_client) is default


async def test_the_name_default_is_refused(storage_client: StorageClient) -> None:
    with pytest.raises(InvalidStoreNameError, match="reserved for the default store") as info:
        await KeyValueStore.open(name="default", storage_client=storage_client)
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidStoreNameError):
        await KeyValueStore.open(name="__default__", storage_client=storage_client)
    assert await storage_client.list_key_value_stores() == []


async def test_a_name_and_an_alias_of_the_same_text_are_two_stores(storage_client: StorageClient) -> None:
    named = await KeyValueStore.open(name="same-text", storage_client=storage_client)
    await named.set_value("k", "named")
    aliased = await KeyValueStore.open(alias="same-text", storage_client=storage_client)
    await aliased.set_value("k", "aliased")

    assert named is not aliased
    assert (named.name, aliased.name) == ("same-text", None)
    assert (await named.get_value("k"), await aliased.get_value("k")) == ("named", "aliased")


async def test_name_none_means_not_given(storage_client: StorageClient) -> None:
    assert await KeyValueStore.open(name=None, storage_client=storage_client) is await KeyValueStore.open(
        storage_client=storage_client
    )


@pytest.mark.parametrize("name", [5, b"bytes"])
async def test_names_must_be_str(name: object, storage_client: StorageClient) -> None:
    with pytest.raises(InvalidStoreNameError, match="must be a str"):
        await KeyValueStore.open(name=name, storage_client=storage_client)  # type: ignore[arg-type]


async def test_concurrent_opens_give_one_instance(storage_client: StorageClient) -> None:
    stores = await asyncio.gather(*(KeyValueStore.open(name="racy", storage_client=storage_client) for _ in range(20)))

    assert all(store is stores[0] for store in stores)
    assert len(await storage_client.list_key_value_stores()) == 1


async def test_open_on_different_clients_gives_different_instances() -> None:
    first = await KeyValueStore.open(name="s", storage_client=MemoryStorageClient())
    second = await KeyValueStore.open(name="s", storage_client=MemoryStorageClient())
    assert first is not second
    assert first.id != second.id


async def test_async_with_closes_the_store(kvs: KeyValueStore) -> None:
    async with kvs as entered:
        assert entered is kvs
        await kvs.set_value("k", 1)
    assert await kvs.get_value("k") == 1


# --- the default storage client -----------------------------------------------------------------------


async def test_default_client_is_the_file_system_under_recoverable_storage_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_DIR", str(tmp_path / "from-env"))

    kvs = await KeyValueStore.open()
    await kvs.set_value("k", {"a": 1})

    assert isinstance(kvs.storage_client, FileSystemStorageClient)
    assert kvs.storage_client.storage_dir == tmp_path / "from-env"
    assert (tmp_path / "from-env" / "key_value_stores" / "default" / "k.json").is_file()
    assert await KeyValueStore.open() is kvs


async def test_default_client_is_memory_when_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "memory")
    monkeypatch.setenv("RECOVERABLE_STORAGE_DIR", str(tmp_path / "unused"))

    kvs = await KeyValueStore.open(name="mem")
    await kvs.set_value("k", 1)

    assert isinstance(kvs.storage_client, MemoryStorageClient)
    assert default_storage_client() is kvs.storage_client
    assert await KeyValueStore.open(name="mem") is kvs
    assert not (tmp_path / "unused").exists()


async def test_invalid_storage_client_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "floppy")
    with pytest.raises(ConfigurationError, match="RECOVERABLE_STORAGE_CLIENT"):
        await KeyValueStore.open()


async def test_explicit_configuration_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "memory")
    configuration = Configuration(storage_dir=tmp_path / "explicit")

    kvs = await KeyValueStore.open(name="conf", configuration=configuration)
    await kvs.set_value("k", "v")

    assert isinstance(kvs.storage_client, FileSystemStorageClient)
    assert (tmp_path / "explicit" / "key_value_stores" / "conf" / "k.txt").read_text() == "v"
    assert default_storage_client(configuration) is kvs.storage_client
    assert default_storage_client(Configuration(storage_dir=tmp_path / "other")) is not kvs.storage_client


async def test_passed_storage_client_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "memory")
    client = FileSystemStorageClient(storage_dir=tmp_path / "passed")

    kvs = await KeyValueStore.open(storage_client=client)

    assert kvs.storage_client is client


# --- auto-saved values --------------------------------------------------------------------------------


class _Counter(BaseModel):
    n: int = 0


async def _persist(events: EventManager) -> None:
    events.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=False))
    await events.wait_for_all_listeners_to_complete()


async def test_auto_saved_value_is_saved_on_persist_state(kvs: KeyValueStore) -> None:
    events = EventManager()

    value = await kvs.get_auto_saved_value("auto", {"count": 0}, event_manager=events)
    assert value == {"count": 0}
    assert await kvs.get_value("auto") is None

    value["count"] = 1
    await _persist(events)
    assert await kvs.get_value("auto") == {"count": 1}

    value["count"] = 2
    value["new"] = [1]
    await _persist(events)
    assert await kvs.get_value("auto") == {"count": 2, "new": [1]}


async def test_auto_saved_value_is_one_object(kvs: KeyValueStore) -> None:
    events = EventManager()
    default = {"count": 0}

    first = await kvs.get_auto_saved_value("auto", default, event_manager=events)
    second = await kvs.get_auto_saved_value("auto", {"other": 1}, event_manager=events)

    assert second is first
    first["count"] = 5
    assert default == {"count": 0}


async def test_auto_saved_value_loads_the_stored_record(kvs: KeyValueStore) -> None:
    await kvs.set_value("auto", {"count": 41})

    value = await kvs.get_auto_saved_value("auto", {"count": 0}, event_manager=EventManager())

    assert value == {"count": 41}


async def test_auto_saved_value_of_a_non_dict_record(kvs: KeyValueStore) -> None:
    await kvs.set_value("auto", [1, 2])

    with pytest.raises(DeserializationError, match="not a JSON object"):
        await kvs.get_auto_saved_value("auto", event_manager=EventManager())
    assert await kvs.get_value("auto") == [1, 2]


async def test_auto_saved_value_refuses_invalid_keys(kvs: KeyValueStore) -> None:
    with pytest.raises(InvalidKeyError):
        await kvs.get_auto_saved_value("", event_manager=EventManager())


async def test_close_saves_and_stops_listening(kvs: KeyValueStore) -> None:
    events = EventManager()
    value = await kvs.get_auto_saved_value("auto", event_manager=events)
    value["saved"] = "on close"

    await kvs.close()

    assert await kvs.get_value("auto") == {"saved": "on close"}
    value["saved"] = "after close"
    await _persist(events)
    assert await kvs.get_value("auto") == {"saved": "on close"}


async def test_persist_auto_saved_values(kvs: KeyValueStore) -> None:
    a = await kvs.get_auto_saved_value("a", {"n": 1}, event_manager=EventManager())
    b = await kvs.get_auto_saved_value("b", {"n": 2})
    a["n"] = 10
    b["n"] = 20

    await kvs.persist_auto_saved_values()

    assert (await kvs.get_value("a"), await kvs.get_value("b")) == ({"n": 10}, {"n": 20})
    await kvs.close()


async def test_persist_autosaved_values_is_crawlee_s_spelling(kvs: KeyValueStore) -> None:
    value = await kvs.get_auto_saved_value("auto", {"n": 1}, event_manager=EventManager())
    value["n"] = 2

    await kvs.persist_autosaved_values()

    assert await kvs.get_value("auto") == {"n": 2}
    await kvs.close()


async def test_deleted_auto_saved_value_is_not_saved_again(kvs: KeyValueStore) -> None:
    events = EventManager()
    value = await kvs.get_auto_saved_value("auto", {"n": 1}, event_manager=events)
    await _persist(events)

    await kvs.delete_value("auto")
    value["n"] = 2
    await _persist(events)

    assert await kvs.get_value("auto") is None


async def test_store_started_event_manager_saves_on_close(kvs: KeyValueStore) -> None:
    value = await kvs.get_auto_saved_value("auto", {"n": 0})
    value["n"] = 7

    await kvs.close()

    assert await kvs.get_value("auto") == {"n": 7}


async def test_auto_saved_value_saves_on_the_default_events_without_closing(storage_client: StorageClient) -> None:
    # The default events run at the pace of the configuration the store was opened with (the environment's is 60 s).
    configuration = Configuration(persist_state_interval=timedelta(milliseconds=50))
    kvs = await KeyValueStore.open(name="auto-store", storage_client=storage_client, configuration=configuration)
    value = await kvs.get_auto_saved_value("auto", {"n": 0})
    value["n"] = 3

    deadline = asyncio.get_running_loop().time() + 10
    while await kvs.get_value("auto") != {"n": 3}:
        assert asyncio.get_running_loop().time() < deadline, "not saved by a PERSIST_STATE event"
        await asyncio.sleep(0.02)
    await kvs.close()
    assert DefaultEvents._by_loop.get(asyncio.get_running_loop()) is None  # let go of at close


async def test_an_event_manager_of_the_wrong_kind_is_refused_for_auto_saved_values(kvs: KeyValueStore) -> None:
    with pytest.raises(ConfigurationError, match="event_manager must be an EventManager or None, not str"):
        await kvs.get_auto_saved_value("auto", {"n": 0}, event_manager="not a manager")


def test_the_store_facade_does_not_import_the_events() -> None:
    source = Path(recoverable.storages._key_value_store.__file__).read_text(encoding="utf-8")
    assert "recoverable.events" not in source


async def test_auto_saved_values_and_states_share_the_default_events(kvs: KeyValueStore) -> None:
    state = RecoverableState(default_state=_Counter(), persist_state_key="state", key_value_store=kvs)
    async with state:
        value = await kvs.get_auto_saved_value("auto", {"n": 0})
        default = state._default_events
        assert default is not None
        assert default.users == 2  # the state and the store's auto-saved values
        value["n"] = 1
        state.current_value.n = 2
        default.manager.emit(event=Event.PERSIST_STATE, event_data=EventPersistStateData(is_migrating=False))
        await default.manager.wait_for_all_listeners_to_complete()
        assert (await kvs.get_value("auto"), await kvs.get_value("state")) == ({"n": 1}, {"n": 2})
        await kvs.close()
        assert default.users == 1  # the state still uses them
        assert default.manager.active
    assert not default.manager.active


# --- purge_on_start -------------------------------------------------------------------------------------


async def _fill(storage_client: StorageClient) -> None:
    """Records in the default store, an alias store and a named store, written before the program opens them."""
    for kwargs in ({}, {"alias": "run"}, {"name": "kept"}):
        store = await storage_client.open_key_value_store_client(**kwargs)
        await store.set_record(key="data", value=b'"before"', content_type="application/json")


async def test_purge_on_start_is_off_by_default(storage_client: StorageClient) -> None:
    await _fill(storage_client)

    for kwargs in ({}, {"alias": "run"}, {"name": "kept"}):
        store = await KeyValueStore.open(storage_client=storage_client, configuration=Configuration(), **kwargs)
        assert await store.get_value("data") == "before"


async def test_purge_on_start_empties_unnamed_stores_at_their_first_open(storage_client: StorageClient) -> None:
    await _fill(storage_client)
    purging = Configuration(purge_on_start=True)

    default = await KeyValueStore.open(storage_client=storage_client, configuration=purging)
    run = await KeyValueStore.open(alias="run", storage_client=storage_client, configuration=purging)
    kept = await KeyValueStore.open(name="kept", storage_client=storage_client, configuration=purging)

    assert await default.get_value("data") is None
    assert await run.get_value("data") is None
    assert await kept.get_value("data") == "before"
    # Only the first open purges: what the program wrote since stays.
    await default.set_value("data", "since")
    assert await KeyValueStore.open(storage_client=storage_client, configuration=purging) is default
    assert await default.get_value("data") == "since"


async def test_purge_on_start_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, storage_client: StorageClient
) -> None:
    await _fill(storage_client)
    monkeypatch.setenv("RECOVERABLE_PURGE_ON_START", "true")

    assert Configuration.from_env().purge_on_start is True
    default = await KeyValueStore.open(storage_client=storage_client)
    assert await default.get_value("data") is None

    monkeypatch.setenv("RECOVERABLE_PURGE_ON_START", "maybe")
    with pytest.raises(ConfigurationError, match="RECOVERABLE_PURGE_ON_START"):
        Configuration.from_env()
