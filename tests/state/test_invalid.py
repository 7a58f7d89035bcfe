"""RecoverableState: saved records that cannot be loaded, `on_invalid`, and records Crawlee's reset leaves."""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field

from recoverable import RecoverableState
from recoverable.errors import StateValidationError
from state.support import (
    KEY,
    STORE_NAME,
    Progress,
    emit_persist_state,
    open_instrumented_store,
    quiet_event_manager,
    state_keys,
)

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore, StorageClient

JSON = "application/json"
NO_LONGER_VALID = b'{"pagesDone": "many", "seen": "not a list", "tags": {}}'
NOT_JSON = [b'{"pagesDone": 3, "seen": [', b"\xff\xfe not utf-8", b"{'single': 'quotes'}"]
BACKUP_KEY = re.compile(re.escape(KEY) + r"\.invalid-\d{8}T\d{12}Z")


def make_state(kvs: KeyValueStore, on_invalid: Literal["raise", "reset"] = "raise") -> RecoverableState[Progress]:
    return RecoverableState(
        default_state=Progress(seen=["default"]),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=quiet_event_manager(),
        on_invalid=on_invalid,
    )


# --- raise (the default) ----------------------------------------------------------------------------------


async def test_record_that_no_longer_validates_raises(storage_client: StorageClient) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    await kvs.client.set_record(key=KEY, value=NO_LONGER_VALID, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    writes = client.set_calls

    state = make_state(kvs)
    with pytest.raises(StateValidationError) as caught:
        await state.initialize()

    error = caught.value
    assert error.key == KEY
    assert error.store == STORE_NAME
    assert sorted(e["loc"] for e in error.errors) == [("pagesDone",), ("seen",)]  # type: ignore[type-var]
    assert all({"loc", "msg", "type"} <= set(e) for e in error.errors)
    message = str(error)
    for part in (KEY, STORE_NAME, "Progress", "pagesDone", "seen", "on_invalid"):
        assert part in message

    # Left exactly as it was, and nothing else written (no backup in raise mode).
    after = await kvs.client.get_record(key=KEY)
    assert after == before
    assert client.set_calls == writes
    assert await state_keys(kvs) == [KEY]

    # Not initialized: events and teardown write nothing over the record.
    assert not state.is_initialized
    await state.teardown()
    assert await kvs.client.get_record(key=KEY) == before


async def test_nested_failing_field_is_named(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=b'{"pagesDone": 1, "seen": [], "tags": {"a": "x"}}', content_type=JSON)
    with pytest.raises(StateValidationError, match=r"tags\.a") as caught:
        await make_state(kvs).initialize()
    assert [e["loc"] for e in caught.value.errors] == [("tags", "a")]


@pytest.mark.parametrize("raw", NOT_JSON)
async def test_invalid_json_raises(kvs: KeyValueStore, raw: bytes) -> None:
    await kvs.client.set_record(key=KEY, value=raw, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    with pytest.raises(StateValidationError, match="not valid JSON") as caught:
        await make_state(kvs).initialize()
    assert caught.value.key == KEY
    assert caught.value.store == STORE_NAME
    assert KEY in str(caught.value)
    assert await kvs.client.get_record(key=KEY) == before


async def test_json_of_another_shape_raises(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=b"[1, 2, 3]", content_type=JSON)
    with pytest.raises(StateValidationError, match="does not fit the model"):
        await make_state(kvs).initialize()


# --- reset --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [NO_LONGER_VALID, *NOT_JSON])
async def test_on_invalid_reset_starts_from_default_and_keeps_a_backup(
    kvs: KeyValueStore, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await kvs.client.set_record(key=KEY, value=raw, content_type=JSON)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(seen=["default"]),
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=manager,
        on_invalid="reset",
    )
    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        value = await state.initialize()
    assert value == Progress(seen=["default"])

    keys = await state_keys(kvs)
    backups = [key for key in keys if key != KEY]
    assert len(backups) == 1
    assert BACKUP_KEY.fullmatch(backups[0])
    backup = await kvs.client.get_record(key=backups[0])
    assert backup is not None
    assert backup.value == raw
    assert backup.content_type == JSON
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(backups[0] in message and KEY in message for message in warnings)

    # The main record is replaced by the next save, even though the state is still the default.
    await emit_persist_state(manager)
    main = await kvs.client.get_record(key=KEY)
    assert main is not None
    assert main.value == Progress.__pydantic_serializer__.to_json(Progress(seen=["default"]), by_alias=True)
    assert (await kvs.client.get_record(key=backups[0])) == backup
    await state.teardown()


async def test_on_invalid_reset_with_a_valid_record_loads_it(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pagesDone": 2, "seen": [], "tags": {}})
    state = make_state(kvs, on_invalid="reset")
    assert (await state.initialize()).pages_done == 2
    assert await state_keys(kvs) == [KEY]
    await state.teardown()


# --- records of Crawlee's reset ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"null", JSON), (b" null\n", JSON), (b"", "application/x-none")],
    ids=["json-null", "json-null-padded", "x-none"],
)
async def test_null_record_loads_as_default(kvs: KeyValueStore, raw: bytes, content_type: str) -> None:
    await kvs.client.set_record(key=KEY, value=raw, content_type=content_type)
    manager = quiet_event_manager()
    state = RecoverableState(
        default_state=Progress(seen=["default"]), persist_state_key=KEY, key_value_store=kvs, event_manager=manager
    )
    assert await state.initialize() == Progress(seen=["default"])
    assert await state_keys(kvs) == [KEY]  # no backup: nothing was wrong
    await emit_persist_state(manager)
    assert await kvs.get_value(KEY) == {"pagesDone": 0, "seen": ["default"], "tags": {}}
    await state.teardown()


# --- empty records ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b" ", b"\n\t \r\n"], ids=["empty", "space", "white-space"])
async def test_an_empty_record_is_invalid_and_stays_untouched(storage_client: StorageClient, raw: bytes) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    await kvs.client.set_record(key=KEY, value=raw, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    writes = client.set_calls

    state = make_state(kvs)
    with pytest.raises(StateValidationError, match=r"is empty|only white space") as caught:
        await state.initialize()
    assert caught.value.key == KEY
    assert f"({len(raw)} bytes)" in str(caught.value)
    assert client.set_calls == writes
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    assert before is not None
    assert (after.value, after.version) == (before.value, before.version)
    assert not state.is_initialized


async def test_an_empty_record_with_on_invalid_reset_is_kept_as_a_backup(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=b"  ", content_type=JSON)
    state = make_state(kvs, on_invalid="reset")
    assert await state.initialize() == Progress(seen=["default"])
    keys = await state_keys(kvs)
    backups = [k for k in keys if BACKUP_KEY.fullmatch(k)]
    assert len(backups) == 1, keys
    backup = await kvs.client.get_record(key=backups[0])
    assert backup is not None
    assert backup.value == b"  "
    await state.teardown()


# --- fields the model does not know -------------------------------------------------------------------------


class _Renamed(BaseModel):
    """Progress after `seen` was renamed `seen_urls`."""

    pages_done: int = Field(default=0, alias="pagesDone")
    seen_urls: list[str] = []
    model_config = ConfigDict(populate_by_name=True)


class _MayDrop(_Renamed):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


async def test_a_record_with_fields_the_model_does_not_know_is_refused_and_left_untouched(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pagesDone": 3, "seen": ["https://a", "https://b"]})
    before = await kvs.client.get_record(key=KEY)
    state = RecoverableState(
        default_state=_Renamed(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    with pytest.raises(StateValidationError, match=r"does not know: seen \(renamed or removed") as caught:
        await state.initialize()
    assert [e["loc"] for e in caught.value.errors] == [("seen",)]
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    assert before is not None
    assert (after.value, after.version) == (before.value, before.version)


async def test_a_model_that_says_unknown_fields_may_be_dropped_loads_without_them(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pagesDone": 3, "seen": ["https://a"]})
    state = RecoverableState(
        default_state=_MayDrop(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    loaded = await state.initialize()
    assert type(loaded) is _MayDrop
    assert (loaded.pages_done, loaded.seen_urls) == (3, [])
    await state.teardown()


async def test_a_state_loaded_with_the_check_is_of_the_models_own_class(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pagesDone": 5, "seen_urls": ["https://a"]})
    state = RecoverableState(
        default_state=_Renamed(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    loaded = await state.initialize()
    assert type(loaded) is _Renamed
    assert loaded == _Renamed(pages_done=5, seen_urls=["https://a"])
    loaded.pages_done = 6
    await state.teardown()
    assert await kvs.get_value(KEY) == {"pagesDone": 6, "seen_urls": ["https://a"]}


class _WithComputed(BaseModel):
    pages: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def count(self) -> int:
        return len(self.pages)


async def test_a_model_with_a_computed_field_loads_what_it_saved(kvs: KeyValueStore) -> None:
    async with RecoverableState(
        default_state=_WithComputed(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    ) as state:
        state.current_value.pages.append("https://a")
    assert await kvs.get_value(KEY) == {"pages": ["https://a"], "count": 1}
    async with RecoverableState(
        default_state=_WithComputed(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    ) as again:
        assert again.current_value.pages == ["https://a"]
        assert again.current_value.count == 1


async def test_a_computed_field_does_not_hide_a_field_the_model_does_not_know(kvs: KeyValueStore) -> None:
    await kvs.set_value(KEY, {"pages": ["https://a"], "count": 1, "old": 5})
    state = RecoverableState(
        default_state=_WithComputed(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    with pytest.raises(StateValidationError, match="does not know: old"):
        await state.initialize()


class _Scores(BaseModel):
    best: float = 0.0
    by_page: dict[str, Any] = {}


async def test_nan_and_infinities_are_saved_and_loaded_back(kvs: KeyValueStore) -> None:
    async with RecoverableState(
        default_state=_Scores(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    ) as state:
        state.current_value.best = math.nan
        state.current_value.by_page = {"a": math.inf, "b": -math.inf}
    record = await kvs.client.get_record(key=KEY)
    assert record is not None
    assert record.value == b'{"best":NaN,"by_page":{"a":Infinity,"b":-Infinity}}'
    async with RecoverableState(
        default_state=_Scores(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    ) as again:
        assert math.isnan(again.current_value.best)
        assert again.current_value.by_page == {"a": math.inf, "b": -math.inf}
