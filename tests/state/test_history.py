"""A state keeps its last saves beside it, lists them, rolls back to one, and falls back to a good one."""

from __future__ import annotations

import json
import logging
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from recoverable import KeyedRecoverableState, RecoverableSet, RecoverableState
from recoverable._history import kept_key, rollback_record
from recoverable.errors import ConfigurationError, StateHistoryError, StateValidationError
from recoverable.events import Event, EventMigratingData
from state.history_support import JSON, Crawl, make_state, save_pages
from state.support import KEY, emit_persist_state, quiet_event_manager

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore


async def history_keys(kvs: KeyValueStore) -> list[str]:
    return [info.key for info in await kvs.list_keys() if ".history." in info.key]


# --- keeping ---------------------------------------------------------------------------------------------


async def test_each_save_is_kept_and_only_the_last_n(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3, 4, 5)
        versions = await state.history()
    assert [v.version for v in versions] == [5, 4, 3]  # the teardown had nothing new to save
    assert len(await history_keys(kvs)) == 3
    for version, pages in ((5, 5), (4, 4), (3, 3)):
        (kept,) = [v for v in versions if v.version == version]
        stored = await kvs.client.get_record(key=kept.key)
        assert stored is not None
        assert stored.value == f'{{"pages":{pages},"urls":[]}}'.encode()
        assert stored.content_type == JSON


async def test_history_lists_version_time_trigger_size_and_checksum_newest_first(kvs: KeyValueStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3, 4)
        versions = await state.history()
        record = await kvs.client.get_record(key=KEY)

    assert record is not None
    assert [v.version for v in versions] == [4, 3, 2]
    assert [v.current for v in versions] == [True, False, False]
    assert all(v.trigger == "manual" for v in versions)
    times = [v.saved_at for v in versions]
    assert all(t is not None and before <= t <= datetime.now(UTC) for t in times)
    assert times == sorted(times, reverse=True)  # type: ignore[type-var]
    assert versions[0].size == len(record.value)
    assert versions[0].checksum == f"{zlib.crc32(record.value):08x}"
    assert len({v.checksum for v in versions}) == 3


async def test_an_unchanged_save_copies_nothing(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1)
        keys = await history_keys(kvs)
        for _ in range(3):
            await state.persist_state()
        await emit_persist_state(state._event_manager)  # type: ignore[arg-type]
        assert await history_keys(kvs) == keys
    assert await history_keys(kvs) == keys  # nor does the teardown of an unchanged state


async def test_history_0_keeps_nothing_and_writes_the_record_as_always(kvs: KeyValueStore) -> None:
    async with make_state(kvs, history=0) as state:
        await save_pages(state, 1, 2)
        assert await state.history() == [
            # the current record, which no history describes
            (await state.history())[0]
        ]
        (current,) = await state.history()
        assert (current.version, current.current, current.trigger) == (0, True, None)
    assert await history_keys(kvs) == []
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert (stored.value, stored.content_type) == (b'{"pages":2,"urls":[]}', JSON)


async def test_the_record_itself_is_written_exactly_as_without_history(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 7)
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert (stored.value, stored.content_type) == (b'{"pages":7,"urls":[]}', JSON)


async def test_every_trigger_is_named(kvs: KeyValueStore) -> None:
    manager = quiet_event_manager()
    async with make_state(kvs, manager=manager, lease_ttl=None, history=10) as state:
        state.current_value.pages = 1
        await emit_persist_state(manager)
        state.current_value.pages = 2
        await emit_persist_state(manager, is_migrating=True)
        state.current_value.pages = 3
        await state.persist_state()
        await state.rollback(1)
        state.current_value.pages = 5
    async with make_state(kvs, history=10) as state:
        triggers = [(v.version, v.trigger) for v in await state.history()]
    assert triggers == [(5, "teardown"), (4, "rollback"), (3, "manual"), (2, "migrating"), (1, "periodic")]


async def test_a_stop_saves_as_migrating_or_teardown(kvs: KeyValueStore) -> None:
    manager = quiet_event_manager()
    state = make_state(kvs, manager=manager)
    await state.initialize()
    state.current_value.pages = 1
    manager.emit(event=Event.MIGRATING, event_data=EventMigratingData())
    await manager.wait_for_all_listeners_to_complete()
    versions = await state.history()
    await state.teardown()
    assert [(v.version, v.trigger) for v in versions] == [(1, "migrating")]


async def test_an_upgrade_on_load_is_kept_as_an_upgrade(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=b'{"pages": 2, "links": ["a"]}', content_type=JSON)

    def rename(record: dict[str, Any]) -> dict[str, Any]:
        return {"pages": record["pages"], "urls": record["links"]}

    async with make_state(kvs, schema_version=2, migrations={1: rename}) as state:
        versions = await state.history()
    assert [(v.version, v.trigger, v.current) for v in versions] == [(1, "upgrade", True)]


async def test_numbering_goes_on_after_a_restart(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2)
    async with make_state(kvs) as state:
        assert state.current_value.pages == 2
        await save_pages(state, 3)
        versions = await state.history()
    assert [v.version for v in versions] == [3, 2, 1]


async def test_a_smaller_history_trims_the_older_copies_at_the_next_save(kvs: KeyValueStore) -> None:
    async with make_state(kvs, history=5) as state:
        await save_pages(state, 1, 2, 3, 4, 5)
    async with make_state(kvs, history=2) as state:
        await save_pages(state, 6)
        versions = await state.history()
    assert [v.version for v in versions] == [6, 5]
    assert len(await history_keys(kvs)) == 2


async def test_a_record_written_by_hand_is_listed_as_current_version_0(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1)
    await kvs.client.set_record(key=KEY, value=b'{"pages": 50}', content_type=JSON)
    async with make_state(kvs) as state:
        assert state.current_value.pages == 50  # a hand-made record that fits the model loads as it is
        versions = await state.history()
        assert (versions[0].version, versions[0].current, versions[0].key) == (0, True, KEY)
        await save_pages(state, 51)
        assert [v.version for v in await state.history()] == [2, 1]


# --- rolling back ----------------------------------------------------------------------------------------


async def test_rollback_restores_a_version_as_a_new_save(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3)
        before = state.current_value
        restored = await state.rollback(2)
        assert restored == Crawl(pages=2)
        assert state.current_value is restored
        assert state.current_value is not before
        versions = await state.history()
        assert [(v.version, v.trigger) for v in versions] == [(4, "rollback"), (3, "manual"), (2, "manual")]
        assert versions[0].checksum == versions[2].checksum
        await state.rollback(3)  # a rollback is rolled back like any save
        assert state.current_value.pages == 3
    async with make_state(kvs) as state:
        assert state.current_value.pages == 3


async def test_rollback_to_a_version_not_kept_names_those_that_are(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3, 4)
        with pytest.raises(StateHistoryError, match=r"no saved version 1: the versions kept are 4, 3, 2"):
            await state.rollback(1)
        for bad in (-1, True, "2", 2.0):
            with pytest.raises(StateHistoryError, match="a version is a save number"):
                await state.rollback(bad)  # type: ignore[arg-type]
        assert state.current_value.pages == 4
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.value == b'{"pages":4,"urls":[]}'


async def test_rollback_refuses_a_damaged_copy_and_writes_nothing(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2)
        (oldest,) = [v for v in await state.history() if v.version == 1]
        await kvs.client.set_record(key=oldest.key, value=b'{"pages":9,"urls":[]}', content_type=JSON)
        with pytest.raises(StateHistoryError, match=r"does not match the checksum saved with it"):
            await state.rollback(1)
        assert state.current_value.pages == 2
        assert [v.version for v in await state.history()] == [2, 1]


async def test_rollback_refuses_a_version_the_model_does_not_fit(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1)
        unfit = b'{"pages": "many"}'
        await kvs.client.set_record(key=kept_key(KEY, 7, "manual", unfit), value=unfit, content_type=JSON)
        with pytest.raises(StateValidationError, match=r"version 7 of state .* Nothing was written"):
            await state.rollback(7)
        assert state.current_value.pages == 1
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.value == b'{"pages":1,"urls":[]}'


async def test_rollback_and_history_need_an_initialized_state(kvs: KeyValueStore) -> None:
    state = make_state(kvs)
    with pytest.raises(Exception, match="before `initialize\\(\\)`"):
        await state.history()
    with pytest.raises(Exception, match="before `initialize\\(\\)`"):
        await state.rollback(1)


# --- falling back: on_invalid="previous" -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"pages": "many"}', "pages"),
        (b"", "is empty"),
        (b'{"pages": 3, "renamed_urls": []}', "renamed_urls"),
    ],
)
async def test_a_bad_record_is_quarantined_and_the_newest_good_version_loaded(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture, bad: bytes, problem: str
) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2)
    await kvs.client.set_record(key=KEY, value=bad, content_type=JSON)

    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        async with make_state(kvs, on_invalid="previous") as state:
            assert state.current_value == Crawl(pages=2)
            versions = await state.history()

    (quarantine,) = [info.key for info in await kvs.list_keys() if ".quarantine-" in info.key]
    stored = await kvs.client.get_record(key=quarantine)
    assert stored is not None
    assert stored.value == bad
    assert quarantine in caplog.text
    assert problem in caplog.text
    assert "version 2" in caplog.text
    assert [(v.version, v.trigger) for v in versions] == [(3, "rollback"), (2, "manual"), (1, "manual")]
    restored = await kvs.client.get_record(key=KEY)
    assert restored is not None
    assert restored.value == b'{"pages":2,"urls":[]}'


async def test_a_damaged_copy_is_passed_over_for_an_older_good_one(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3)
        versions = {v.version: v for v in await state.history()}
    await kvs.client.set_record(key=versions[3].key, value=b'{"pages":33,"urls":[]}', content_type=JSON)
    await kvs.client.set_record(key=KEY, value=b"garbage", content_type=JSON)
    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        async with make_state(kvs, on_invalid="previous") as state:
            assert state.current_value.pages == 2
    # The warning says which version was passed over, and why.
    assert "passed over: version 3 does not match the checksum saved with it" in caplog.text


async def test_with_no_good_version_nothing_is_changed_and_the_error_says_so(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1)
    for info in await kvs.list_keys():
        if ".history." in info.key:
            await kvs.client.set_record(key=info.key, value=b"[]", content_type=JSON)
    await kvs.client.set_record(key=KEY, value=b"garbage", content_type=JSON)
    keys_before = sorted(info.key for info in await kvs.list_keys())

    state = make_state(kvs, on_invalid="previous")
    with pytest.raises(StateValidationError, match=r"none of the 1 older versions its history keeps loads either"):
        await state.initialize()
    assert sorted(info.key for info in await kvs.list_keys()) == keys_before
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert stored.value == b"garbage"


async def test_raise_stays_the_default_and_reset_stays_as_it_was(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1)
    await kvs.client.set_record(key=KEY, value=b"garbage", content_type=JSON)
    with pytest.raises(StateValidationError, match="on_invalid='previous'"):
        await make_state(kvs).initialize()
    async with make_state(kvs, on_invalid="reset") as state:
        assert state.current_value == Crawl()
    assert any(".invalid-" in info.key for info in await kvs.list_keys())


# --- arguments -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [-1, True, "3", 2.5, 1001, None])
async def test_a_history_that_is_not_a_count_is_refused(kvs: KeyValueStore, history: object) -> None:
    with pytest.raises(ConfigurationError, match="history must be the number of saved versions to keep"):
        make_state(kvs, history=history)  # type: ignore[arg-type]


async def test_previous_needs_a_history(kvs: KeyValueStore) -> None:
    with pytest.raises(ConfigurationError, match="history=0 keeps none"):
        make_state(kvs, history=0, on_invalid="previous")


async def test_keyed_states_need_a_history_for_previous_too(kvs: KeyValueStore) -> None:
    with pytest.raises(ConfigurationError, match="history=0 keeps none"):
        KeyedRecoverableState(
            value_type=int, persist_state_key="K", key_value_store=kvs, on_invalid="previous", history=0
        )
    with pytest.raises(ConfigurationError, match="history=0 keeps none"):
        RecoverableSet(persist_state_key="S", key_value_store=kvs, on_invalid="previous", history=0)
    with pytest.raises(ConfigurationError, match="history must be the number of saved versions"):
        RecoverableSet(persist_state_key="S", key_value_store=kvs, history=-1)


# --- rolling back without the model (what `recoverable rollback` does) -----------------------------------


async def test_rollback_record_writes_a_kept_version_as_a_new_save(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2, 3)
    written = await rollback_record(kvs.client, KEY, 2)
    assert (written.version, written.trigger, written.current) == (4, "rollback", True)
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert (stored.value, stored.content_type) == (b'{"pages":2,"urls":[]}', JSON)
    async with make_state(kvs) as state:
        assert state.current_value.pages == 2
        assert [v.version for v in await state.history()][:2] == [4, 3]
    with pytest.raises(StateHistoryError, match="no saved version 9"):
        await rollback_record(kvs.client, KEY, 9)


async def test_the_keys_of_the_copies_are_keys_the_apify_platform_accepts(kvs: KeyValueStore) -> None:
    async with make_state(kvs) as state:
        await save_pages(state, 1, 2)
        versions = await state.history()
    platform_key = re.compile(r"[a-zA-Z0-9!\-_.'()]{1,256}")
    assert all(platform_key.fullmatch(version.key) for version in versions), [v.key for v in versions]


class Seen(BaseModel):
    seen: set[str] = set()


async def test_a_run_that_changed_nothing_saves_nothing_though_its_sets_iterate_in_another_order(
    kvs: KeyValueStore,
) -> None:
    urls = [f"https://example.com/{i}" for i in range(40)]
    # As another process wrote it: the same set, in an order this process would not iterate it in.
    order = sorted(urls, key=lambda url: url[::-1])
    await kvs.client.set_record(key=KEY, value=json.dumps({"seen": order}).encode(), content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    assert before is not None
    state = RecoverableState(
        default_state=Seen(), persist_state_key=KEY, key_value_store=kvs, event_manager=quiet_event_manager()
    )
    async with state:
        assert state.current_value.seen == set(urls)
        assert kvs.client is not None
        await state.persist_state()
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    assert after.version == before.version, "a run that changed nothing wrote the record"
    assert await history_keys(kvs) == []
    async with state:
        state.current_value.seen.add("https://example.com/new")
    assert await history_keys(kvs) != []  # a real change is saved, and kept
    stored = await kvs.client.get_record(key=KEY)
    assert stored is not None
    assert "https://example.com/new" in json.loads(stored.value)["seen"]
