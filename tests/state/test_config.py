"""RecoverableState: which store it uses, which arguments it refuses, which kinds of state it takes."""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import TypeAdapter

from recoverable import Event, EventManager, RecoverableState
from recoverable.configuration import Configuration
from recoverable.errors import ConfigurationError, InvalidKeyError, InvalidStoreNameError, StateValidationError
from recoverable.storages import FileSystemStorageClient, KeyValueStore, MemoryStorageClient, StorageClient
from state.support import (
    KEY,
    STORE_NAME,
    DataclassProgress,
    Progress,
    emit_persist_state,
    quiet_event_manager,
    reopened_storage_client,
)

if TYPE_CHECKING:
    from pathlib import Path

SAVED = {"pagesDone": 6, "seen": ["x"], "tags": {}}


@pytest.fixture
def configuration(storage_kind: str, tmp_path: Path) -> Configuration:
    """Settings whose default storage client is of the kind under test, in this test's folder."""
    return Configuration.model_validate({"storage_dir": tmp_path / "configured", "storage_client": storage_kind})


async def save_and_teardown(state: RecoverableState[Progress]) -> None:
    await state.initialize()
    state.current_value.pages_done = 6
    state.current_value.seen.append("x")
    await state.teardown()


# --- choosing the store -----------------------------------------------------------------------------------


async def test_store_chosen_by_name(configuration: Configuration) -> None:
    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        persist_state_kvs_name="by-name",
        configuration=configuration,
        event_manager=quiet_event_manager(),
    )
    await save_and_teardown(state)
    named = await KeyValueStore.open(name="by-name", configuration=configuration)
    assert state.key_value_store is named
    assert await named.get_value(KEY) == SAVED
    default = await KeyValueStore.open(configuration=configuration)
    assert not await default.record_exists(KEY)


async def test_store_chosen_by_id(configuration: Configuration) -> None:
    target = await KeyValueStore.open(name="target", configuration=configuration)
    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        persist_state_kvs_id=target.id,
        configuration=configuration,
        event_manager=quiet_event_manager(),
    )
    await save_and_teardown(state)
    assert state.key_value_store is not None
    assert state.key_value_store.id == target.id
    assert await target.get_value(KEY) == SAVED


async def test_store_chosen_by_factory(storage_client: StorageClient) -> None:
    opened: list[KeyValueStore] = []

    async def factory() -> KeyValueStore:
        kvs = await KeyValueStore.open(name="from-factory", storage_client=storage_client)
        opened.append(kvs)
        return kvs

    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        persist_state_kvs_factory=factory,
        event_manager=quiet_event_manager(),
    )
    assert opened == []  # not before initialize()
    await save_and_teardown(state)
    assert len(opened) == 1
    assert state.key_value_store is opened[0]
    assert await opened[0].get_value(KEY) == SAVED


async def test_store_chosen_by_key_value_store(storage_client: StorageClient) -> None:
    kvs = await KeyValueStore.open(name="given", storage_client=storage_client)
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    await save_and_teardown(state)
    assert state.key_value_store is kvs
    assert await kvs.get_value(KEY) == SAVED


async def test_default_store_comes_from_the_environment(tmp_path: Path) -> None:
    # conftest points RECOVERABLE_STORAGE_DIR at tmp_path/default-storage; the file system client is the default.
    state = RecoverableState(default_state=Progress(), persist_state_key=KEY, event_manager=quiet_event_manager())
    await save_and_teardown(state)
    reader = FileSystemStorageClient(storage_dir=tmp_path / "default-storage")
    assert await (await KeyValueStore.open(storage_client=reader)).get_value(KEY) == SAVED


@pytest.mark.parametrize("store", ["default", "given"])
async def test_a_bad_storage_client_variable_is_one_clear_error_and_nothing_else(
    store: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A typo in RECOVERABLE_STORAGE_CLIENT raises ConfigurationError naming it, and leaves no coroutine behind
    that Python would report as never awaited (a RuntimeWarning printed next to the error)."""
    given = (
        {"key_value_store": await KeyValueStore.open(storage_client=FileSystemStorageClient(storage_dir=tmp_path))}
        if store == "given"
        else {}
    )
    monkeypatch.setenv("RECOVERABLE_STORAGE_CLIENT", "filesystem")  # set once the given store is open
    state = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, event_manager=quiet_event_manager(), **given
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigurationError) as raised:
            await state.initialize()
        message = str(raised.value)
        del raised  # its traceback holds the frames, and they the coroutines: let them all be collected now
        gc.collect()
    assert "RECOVERABLE_STORAGE_CLIENT='filesystem'" in message
    assert "did you mean 'file_system'?" in message
    assert "'file_system', 'memory', 'redis', 'sql', 'http'" in message
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert not state.is_initialized


def test_a_bad_storage_client_variable_warns_nothing_in_a_real_program(python: str, child_env: dict[str, str]) -> None:
    code = (
        "import asyncio\n"
        "from pydantic import BaseModel\n"
        "from recoverable import RecoverableState\n"
        "class M(BaseModel):\n"
        "    n: int = 0\n"
        "asyncio.run(RecoverableState(default_state=M(), persist_state_key='K').initialize())\n"
    )
    result = subprocess.run(
        [python, "-W", "error::RuntimeWarning", "-c", code],
        env={**child_env, "RECOVERABLE_STORAGE_CLIENT": "filesystem"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "ConfigurationError: RECOVERABLE_STORAGE_CLIENT='filesystem'" in result.stderr
    assert "never awaited" not in result.stderr
    assert "RuntimeWarning" not in result.stderr


async def _factory() -> KeyValueStore:
    raise AssertionError("never called")


@pytest.mark.parametrize(
    "given",
    [
        {"persist_state_kvs_name": "a", "persist_state_kvs_id": "b"},
        {"persist_state_kvs_name": "a", "persist_state_kvs_factory": _factory},
        {"persist_state_kvs_name": "a", "key_value_store": "KVS"},
        {"persist_state_kvs_id": "b", "persist_state_kvs_factory": _factory},
        {"persist_state_kvs_id": "b", "key_value_store": "KVS"},
        {"persist_state_kvs_factory": _factory, "key_value_store": "KVS"},
        {"persist_state_kvs_name": "a", "persist_state_kvs_id": "b", "key_value_store": "KVS"},
    ],
    ids="+".join,
)
async def test_more_than_one_store_is_refused(given: dict[str, Any]) -> None:
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=MemoryStorageClient())
    arguments: dict[str, Any] = {name: kvs if value == "KVS" else value for name, value in given.items()}
    with pytest.raises(ConfigurationError) as caught:
        RecoverableState(default_state=Progress(), persist_state_key=KEY, **arguments)
    for name in given:
        assert name in str(caught.value)


# --- arguments refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "a" * 1025, "nul\x00inside", "\ud800", 123, None])
def test_invalid_persist_state_key_is_refused(key: object) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        RecoverableState(default_state=Progress(), persist_state_key=key)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)


def test_unusual_but_valid_keys_are_accepted() -> None:
    for key in ("a", "../../etc/passwd", "with space/and slash", "ü" * 1018):  # the lease key adds 6
        assert RecoverableState(default_state=Progress(), persist_state_key=key).persist_state_key == key


@pytest.mark.parametrize("value", ["yes", "True", "explicit", 1, 0, None, 2.0])
def test_bad_persistence_enabled_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="persistence_enabled"):
        RecoverableState(default_state=Progress(), persist_state_key=KEY, persistence_enabled=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["ignore", "RAISE", None, True])
def test_bad_on_invalid_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="on_invalid"):
        RecoverableState(default_state=Progress(), persist_state_key=KEY, on_invalid=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [timedelta(0), timedelta(seconds=-1), 5, 0.5, "60"])
def test_bad_timeout_is_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        RecoverableState(default_state=Progress(), persist_state_key=KEY, timeout=value)  # type: ignore[arg-type]


class NotAModel:
    pass


@pytest.mark.parametrize(
    "default",
    [5, "text", object(), {"pagesDone": 1}, [1, 2], None, NotAModel(), Progress, DataclassProgress],
    ids=["int", "str", "object", "dict", "list", "None", "plain-class-instance", "model-class", "dataclass-class"],
)
def test_default_state_that_is_not_a_model_is_refused(default: object) -> None:
    with pytest.raises(ConfigurationError, match="default_state"):
        RecoverableState(default_state=default, persist_state_key=KEY)


# --- dataclass states -------------------------------------------------------------------------------------


async def test_dataclass_state_is_saved_and_loaded(
    storage_kind: str, storage_client: StorageClient, tmp_path: Path
) -> None:
    default = DataclassProgress(items=["seed"])
    manager = quiet_event_manager()
    kvs = await KeyValueStore.open(name=STORE_NAME, storage_client=storage_client)
    state = RecoverableState(default_state=default, persist_state_key=KEY, key_value_store=kvs, event_manager=manager)
    value = await state.initialize()
    value.count = 2
    value.items.append("more")
    assert default == DataclassProgress(items=["seed"])

    await emit_persist_state(manager)
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.content_type == "application/json"
    assert stored.value == TypeAdapter(DataclassProgress).dump_json(value, by_alias=True)
    await state.teardown()

    restarted = reopened_storage_client(storage_kind, storage_client, tmp_path)
    again = RecoverableState(
        default_state=DataclassProgress(),
        persist_state_key=KEY,
        key_value_store=await KeyValueStore.open(name=STORE_NAME, storage_client=restarted),
        persistence_enabled="explicit_only",
    )
    loaded = await again.initialize()
    assert isinstance(loaded, DataclassProgress)
    assert loaded == DataclassProgress(count=2, items=["seed", "more"])
    await again.reset()
    assert again.current_value == DataclassProgress()
    assert dataclasses.asdict(again.current_value) == {"count": 0, "items": []}


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("event_manager", "not a manager"),
        ("key_value_store", "a store name"),
        ("persist_state_kvs_factory", "not callable"),
        ("logger", "recoverable.state"),
        ("configuration", {"storage_dir": "x"}),
    ],
)
def test_arguments_of_the_wrong_kind_are_refused_at_construction(keyword: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=keyword):
        RecoverableState(default_state=Progress(), persist_state_key="K", **{keyword: value})  # type: ignore[arg-type]


class _Refusing(EventManager):
    """An event manager that refuses listeners, to fail `initialize()` after the state was loaded."""

    def on(self, *, event: Event, listener: Any) -> None:
        raise RuntimeError(f"no listeners of {event} today, not even {listener!r}")


async def test_a_failed_initialize_gives_back_the_lease_it_took(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pagesDone": "not a number"})
    first = RecoverableState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs)
    with pytest.raises(StateValidationError):
        await first.initialize()  # fails while loading
    assert not await kvs.record_exists(KEY + ".lease")
    await kvs.set_value(KEY, {"pagesDone": 2})
    refusing = RecoverableState(
        default_state=Progress(), persist_state_key=KEY, key_value_store=kvs, event_manager=_Refusing()
    )
    with pytest.raises(RuntimeError, match="no listeners of"):
        await refusing.initialize()  # fails after loading, when it starts listening
    assert not await kvs.record_exists(KEY + ".lease")
    second = RecoverableState(default_state=Progress(), persist_state_key=KEY, key_value_store=kvs)
    assert (await second.initialize()).pages_done == 2  # not refused as owned by the failed one
    await second.teardown()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"persist_state_kvs_name": 5}, InvalidStoreNameError),
        ({"persist_state_kvs_name": ""}, InvalidStoreNameError),
        ({"persist_state_kvs_name": "a/b"}, InvalidStoreNameError),
        ({"persist_state_kvs_id": b"x"}, InvalidStoreNameError),
        ({"persist_state_kvs_id": ""}, InvalidStoreNameError),
        ({"persist_state_key": "k" * 1020}, InvalidKeyError),
    ],
)
def test_store_references_and_keys_that_cannot_work_are_refused_at_construction(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    arguments: dict[str, object] = {"default_state": Progress(), "persist_state_key": KEY, **kwargs}
    with pytest.raises(error):
        RecoverableState(**arguments)  # type: ignore[arg-type]


def test_a_key_of_the_longest_length_is_fine_without_a_lease() -> None:
    RecoverableState(default_state=Progress(), persist_state_key="k" * 1024, lease_ttl=None)


async def test_a_plain_factory_returning_a_store_is_accepted_too(tmp_path: Path) -> None:
    kvs = await KeyValueStore.open(name="plain", storage_client=FileSystemStorageClient(storage_dir=tmp_path))
    state = RecoverableState(
        default_state=Progress(),
        persist_state_key=KEY,
        persist_state_kvs_factory=lambda: kvs,  # type: ignore[arg-type,return-value]
        event_manager=quiet_event_manager(),
    )
    async with state:
        assert state.key_value_store is kvs
