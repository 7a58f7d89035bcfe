"""RecoverableState: schema versions and migrations of saved records between deploys."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import pytest
from pydantic import BaseModel
from typing_extensions import override

from recoverable import RecoverableState
from recoverable.errors import ConfigurationError, StateValidationError
from state.support import (
    KEY,
    InstrumentedKeyValueStoreClient,
    open_instrumented_store,
    quiet_event_manager,
    state_keys,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from recoverable._schema import Migration
    from recoverable.storages import KeyValueStore, StorageClient

JSON = "application/json"
V2 = "application/json; schema-version=2"
V3 = "application/json; schema-version=3"
BACKUP_V1 = f"{KEY}.schema-v1-backup"
OLD_RECORD = b'{"pages":3,"urls":["https://a","https://b"]}'


class CrawlV1(BaseModel):
    pages: int = 0
    urls: list[str] = []


class CrawlV2(BaseModel):
    pages: int = 0
    seen_urls: list[str] = []


class CrawlV3(BaseModel):
    pages: int = 0
    seen_urls: list[str] = []
    depth: dict[str, int] = {}


def rename_urls(record: dict[str, Any]) -> dict[str, Any]:
    record["seen_urls"] = record.pop("urls")
    return record


def add_depth(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "depth": dict.fromkeys(record["seen_urls"], 0)}


def make_state(
    kvs: KeyValueStore,
    default: BaseModel,
    *,
    schema_version: int | None = None,
    migrations: Mapping[int, Migration] | None = None,
    on_invalid: Literal["raise", "reset"] = "raise",
    persistence_enabled: Literal[True, False, "explicit_only"] = True,
) -> RecoverableState[Any]:
    return RecoverableState(
        default_state=default,
        persist_state_key=KEY,
        key_value_store=kvs,
        event_manager=quiet_event_manager(),
        schema_version=schema_version,
        migrations=migrations,
        on_invalid=on_invalid,
        persistence_enabled=persistence_enabled,
    )


async def record_of(kvs: KeyValueStore, key: str = KEY) -> tuple[bytes, str]:
    stored = await kvs.client.get_record(key=key)
    assert stored is not None, key
    return stored.value, stored.content_type


# --- writing ---------------------------------------------------------------------------------------------


async def test_a_state_without_schema_version_writes_plain_json(kvs: KeyValueStore) -> None:
    async with make_state(kvs, CrawlV1()) as state:
        state.current_value.pages = 1
    assert await record_of(kvs) == (b'{"pages":1,"urls":[]}', JSON)


async def test_schema_version_1_writes_what_a_state_without_one_writes(kvs: KeyValueStore) -> None:
    async with make_state(kvs, CrawlV1(), schema_version=1) as state:
        state.current_value.pages = 1
    assert await record_of(kvs) == (b'{"pages":1,"urls":[]}', JSON)


async def test_a_versioned_state_writes_its_version_in_the_content_type_and_loads_it_back(kvs: KeyValueStore) -> None:
    async with make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}) as state:
        state.current_value.seen_urls.append("https://a")
    assert await record_of(kvs) == (b'{"pages":0,"seen_urls":["https://a"]}', V2)
    async with make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}) as state:
        assert state.current_value == CrawlV2(seen_urls=["https://a"])
    assert await state_keys(kvs) == [KEY]  # a record of the current version is neither upgraded nor backed up


async def test_a_field_added_with_a_default_needs_no_migration(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=b'{"pages":3,"seen_urls":["https://a"]}', content_type=JSON)
    async with make_state(kvs, CrawlV3()) as state:
        assert state.current_value == CrawlV3(pages=3, seen_urls=["https://a"], depth={})
    assert await record_of(kvs) == (b'{"pages":3,"seen_urls":["https://a"],"depth":{}}', JSON)


# --- upgrading -------------------------------------------------------------------------------------------


async def test_an_older_record_is_upgraded_validated_written_back_and_kept_as_a_backup(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    state = make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls})
    with caplog.at_level(logging.INFO, logger="recoverable.state"):
        loaded = await state.initialize()

    assert loaded == CrawlV2(pages=3, seen_urls=["https://a", "https://b"])
    # Written back in the new form at once, before any save; the record as it was is kept beside it.
    assert await record_of(kvs) == (b'{"pages":3,"seen_urls":["https://a","https://b"]}', V2)
    assert await record_of(kvs, BACKUP_V1) == (OLD_RECORD, JSON)
    assert "upgraded from schema version 1 to 2" in caplog.text
    assert BACKUP_V1 in caplog.text
    await state.teardown()
    assert sorted(await state_keys(kvs)) == [KEY, BACKUP_V1]


async def test_a_record_is_upgraded_step_by_step(kvs: KeyValueStore) -> None:
    seen: list[tuple[int, dict[str, Any]]] = []

    def step_1(record: dict[str, Any]) -> dict[str, Any]:
        seen.append((1, dict(record)))
        return rename_urls(record)

    def step_2(record: dict[str, Any]) -> dict[str, Any]:
        seen.append((2, dict(record)))
        return add_depth(record)

    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    async with make_state(kvs, CrawlV3(), schema_version=3, migrations={1: step_1, 2: step_2}) as state:
        assert state.current_value == CrawlV3(
            pages=3, seen_urls=["https://a", "https://b"], depth={"https://a": 0, "https://b": 0}
        )
    assert seen == [
        (1, {"pages": 3, "urls": ["https://a", "https://b"]}),
        (2, {"pages": 3, "seen_urls": ["https://a", "https://b"]}),
    ]
    assert (await record_of(kvs))[1] == V3
    assert await record_of(kvs, BACKUP_V1) == (OLD_RECORD, JSON)


async def test_a_record_of_a_middle_version_takes_only_the_steps_after_it(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=b'{"pages":1,"seen_urls":["https://c"]}', content_type=V2)

    def never(record: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the step from version 1 must not run on a version-2 record")

    async with make_state(kvs, CrawlV3(), schema_version=3, migrations={1: never, 2: add_depth}) as state:
        assert state.current_value == CrawlV3(pages=1, seen_urls=["https://c"], depth={"https://c": 0})
    assert await record_of(kvs, f"{KEY}.schema-v2-backup") == (b'{"pages":1,"seen_urls":["https://c"]}', V2)


async def test_the_explicit_only_mode_upgrades_on_load_too(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    state = make_state(
        kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}, persistence_enabled="explicit_only"
    )
    await state.initialize()
    assert (await record_of(kvs))[1] == V2
    await state.teardown()


async def test_a_write_landing_between_load_and_write_back_is_loaded_and_upgraded_instead(
    storage_client: StorageClient,
) -> None:
    kvs, client = await open_instrumented_store(storage_client)
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    late = b'{"pages":9,"urls":["https://late"]}'

    class Interloper(InstrumentedKeyValueStoreClient):
        landed = False

        @override
        async def set_record(
            self, *, key: str, value: bytes, content_type: str, if_version: str | None = None, if_absent: bool = False
        ) -> str:
            if key == KEY and if_version is not None and not self.landed:
                self.landed = True  # another writer's save lands just before the write-back
                await self.inner.set_record(key=KEY, value=late, content_type=JSON)
            return await super().set_record(
                key=key, value=value, content_type=content_type, if_version=if_version, if_absent=if_absent
            )

    interloper = Interloper(client.inner)
    kvs._client = interloper  # the store's own client, swapped for one that races the write-back
    async with make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}) as state:
        assert state.current_value == CrawlV2(pages=9, seen_urls=["https://late"])
    assert interloper.landed
    assert await record_of(kvs, BACKUP_V1) == (late, JSON)


# --- refusing, and leaving the record untouched --------------------------------------------------------


@pytest.mark.parametrize("on_invalid", ["raise", "reset"])
async def test_a_record_newer_than_the_code_is_refused_and_left_untouched(
    kvs: KeyValueStore, on_invalid: Literal["raise", "reset"]
) -> None:
    newer = b'{"pages":1,"seen_urls":[],"depth":{}}'
    await kvs.client.set_record(key=KEY, value=newer, content_type=V3)
    before = await kvs.client.get_record(key=KEY)
    state = make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}, on_invalid=on_invalid)
    with pytest.raises(StateValidationError, match="schema version 3, newer than this program's 2") as caught:
        await state.initialize()
    assert caught.value.key == KEY
    assert await kvs.client.get_record(key=KEY) == before
    assert await state_keys(kvs) == [KEY]  # no backup, no reset: a rollback must not wipe the newer record


async def test_a_state_without_schema_version_refuses_a_versioned_record(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    async with make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}):
        pass
    before = await kvs.client.get_record(key=KEY)
    with pytest.raises(StateValidationError, match="schema version 2, newer than this program's 1"):
        await make_state(kvs, CrawlV1()).initialize()  # the release before: rolled back
    assert await kvs.client.get_record(key=KEY) == before


@pytest.mark.parametrize("on_invalid", ["raise", "reset"])
async def test_a_record_older_than_every_migration_is_refused_and_left_untouched(
    kvs: KeyValueStore, on_invalid: Literal["raise", "reset"]
) -> None:
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    state = make_state(kvs, CrawlV3(), schema_version=3, migrations={2: add_depth}, on_invalid=on_invalid)
    with pytest.raises(StateValidationError, match=r"no migration from it to version 3.*Add migrations\[1\]"):
        await state.initialize()
    assert await kvs.client.get_record(key=KEY) == before
    assert await state_keys(kvs) == [KEY]


async def test_a_schema_version_without_migrations_refuses_an_older_record(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    with pytest.raises(StateValidationError, match="no migrations were given"):
        await make_state(kvs, CrawlV2(), schema_version=2).initialize()


@pytest.mark.parametrize("on_invalid", ["raise", "reset"])
async def test_a_failing_migration_is_named_and_leaves_the_record_untouched(
    kvs: KeyValueStore, on_invalid: Literal["raise", "reset"]
) -> None:
    def broken(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "seen_urls": record["missing"]}

    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    state = make_state(kvs, CrawlV2(), schema_version=2, migrations={1: broken}, on_invalid=on_invalid)
    with pytest.raises(StateValidationError, match=r"from schema version 1 to 2: migrations\[1\] raised KeyError"):
        await state.initialize()
    assert await kvs.client.get_record(key=KEY) == before
    assert await state_keys(kvs) == [KEY]


async def test_a_migration_that_returns_nothing_is_told_to_return_the_dict(kvs: KeyValueStore) -> None:
    def in_place(record: dict[str, Any]) -> dict[str, Any]:
        record["seen_urls"] = record.pop("urls")
        return None  # type: ignore[return-value]

    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    with pytest.raises(StateValidationError, match=r"migrations\[1\] returned NoneType.*return the dict"):
        await make_state(kvs, CrawlV2(), schema_version=2, migrations={1: in_place}).initialize()


async def test_an_upgrade_that_does_not_validate_writes_nothing(kvs: KeyValueStore) -> None:
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)

    def forgets_to_rename(record: dict[str, Any]) -> dict[str, Any]:
        return record

    state = make_state(kvs, CrawlV2(), schema_version=2, migrations={1: forgets_to_rename})
    with pytest.raises(
        StateValidationError, match=r"does not know \(after upgrading it from schema version 1 to 2\): urls"
    ):
        await state.initialize()
    assert await kvs.client.get_record(key=KEY) == before
    assert await state_keys(kvs) == [KEY]  # the backup is written only once the upgrade validated


async def test_an_upgrade_that_does_not_validate_is_refused_even_with_on_invalid_reset(kvs: KeyValueStore) -> None:
    """The record is sound at its own version: a migration whose result the model refuses is a bug to fix, and
    resetting would throw the record's data away."""
    await kvs.client.set_record(key=KEY, value=OLD_RECORD, content_type=JSON)
    before = await kvs.client.get_record(key=KEY)
    state = make_state(
        kvs, CrawlV2(), schema_version=2, migrations={1: lambda _: {"pages": "many"}}, on_invalid="reset"
    )
    with pytest.raises(
        StateValidationError, match=r"after upgrading it from schema version 1 to 2.*migrations produced"
    ):
        await state.initialize()
    assert await kvs.client.get_record(key=KEY) == before
    assert await state_keys(kvs) == [KEY]


@pytest.mark.parametrize(
    ("value", "content_type", "problem"),
    [
        (b"[1, 2]", JSON, "holds a JSON list, not an object"),
        (b'{"pages": 1', JSON, "is not valid JSON"),
        (OLD_RECORD, "application/json; schema-version=two", "schema version 'two' is not a positive integer"),
        (OLD_RECORD, "application/json; schema-version=0", "schema version '0' is not a positive integer"),
    ],
)
async def test_a_bad_record_is_invalid_as_any_other(
    kvs: KeyValueStore, value: bytes, content_type: str, problem: str
) -> None:
    await kvs.client.set_record(key=KEY, value=value, content_type=content_type)
    before = await kvs.client.get_record(key=KEY)
    with pytest.raises(StateValidationError, match=problem):
        await make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}).initialize()
    assert await kvs.client.get_record(key=KEY) == before
    state = make_state(kvs, CrawlV2(), schema_version=2, migrations={1: rename_urls}, on_invalid="reset")
    assert await state.initialize() == CrawlV2()
    await state.teardown()


# --- arguments -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_version", "migrations", "problem"),
    [
        (0, None, "schema_version must be an int of at least 1"),
        ("2", None, "schema_version must be an int of at least 1"),
        (True, None, "schema_version must be an int of at least 1"),
        (None, {1: rename_urls}, "migrations need a schema_version"),
        (2, [rename_urls], "migrations must be a mapping"),
        (2, {2: rename_urls}, "2 is not one of them"),
        (2, {0: rename_urls}, "0 is not one of them"),
        (2, {"1": rename_urls}, "'1' is not one of them"),
        (3, {1: rename_urls}, r"no upgrade from version\(s\) 2"),
        (4, {1: rename_urls, 3: add_depth}, r"no upgrade from version\(s\) 2"),
        (2, {1: "rename"}, r"migrations\[1\] must be a function"),
    ],
)
def test_bad_schema_arguments_are_refused_at_construction(
    kvs: KeyValueStore, schema_version: Any, migrations: Any, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        make_state(kvs, CrawlV2(), schema_version=schema_version, migrations=migrations)
