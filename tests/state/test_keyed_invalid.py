"""A keyed state never loads a damaged, foreign or newer record silently, and never loses the records it refused."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ConfigDict, computed_field

from recoverable.errors import StateValidationError
from state.keyed_support import KEY, Domain, make_keyed, manifest_of, shrink, side_records

if TYPE_CHECKING:
    from recoverable.storages import KeyValueStore


async def saved_domains(kvs: KeyValueStore, **values: Domain) -> None:
    async with make_keyed(kvs) as domains:
        domains.update(values)


async def store_snapshot(kvs: KeyValueStore) -> dict[str, bytes]:
    snapshot = {}
    for info in await kvs.list_keys():
        record = await kvs.client.get_record(key=info.key)
        assert record is not None
        snapshot[info.key] = record.value
    return snapshot


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (b"{not json", "is not the manifest of a keyed state"),
        (b'{"pages": 1}', "is not the manifest of a keyed state"),
        (b"[1, 2]", "is not the manifest of a keyed state"),
        (
            b'{"format": "recoverable.keyed-state/1", "kind": "keyed", "parts": []}',
            "is not a sound manifest: it names no part",
        ),
        (
            (
                b'{"format": "recoverable.keyed-state/1", "kind": "keyed", "parts": ['
                b'{"depth": 1, "index": 0, "record": null, "upto": 0, "count": 0}]}'
            ),
            "is not a sound manifest: no part holds the keys of depth 1 and index 1",
        ),
        (
            (
                b'{"format": "recoverable.keyed-state/1", "kind": "keyed", "parts": ['
                b'{"depth": 0, "index": 0, "record": "DOMAINS.~part.00000000.1.0.0", "upto": 0, "count": 3}]}'
            ),
            "names the record 'DOMAINS.~part.00000000.1.0.0', which is missing",
        ),
        (b'{"format": "recoverable.keyed-state/2", "kind": "keyed"}', "is not the manifest of a keyed state"),
        (
            (
                b'{"format": "recoverable.keyed-state/1", "kind": "keyed", "parts": ['
                b'{"depth": 0, "index": 0, "record": "OTHER", "upto": 0, "count": 0}]}'
            ),
            "it names records that are not this state's: 'OTHER'",
        ),
    ],
)
async def test_a_damaged_manifest_raises_and_is_left_untouched(
    kvs: KeyValueStore, manifest: bytes, problem: str
) -> None:
    await kvs.client.set_record(key=KEY, value=manifest, content_type="application/json")
    before = await store_snapshot(kvs)
    with pytest.raises(StateValidationError, match=problem):
        await make_keyed(kvs).initialize()
    assert await store_snapshot(kvs) == before


async def test_on_invalid_reset_starts_empty_and_keeps_the_refused_records(
    kvs: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    await saved_domains(kvs, a=Domain(pages=1))
    manifest = await manifest_of(kvs)
    records = manifest.records()
    (record,) = records
    await kvs.client.set_record(key=record, value=b'{"a": {"pages": "many"}}', content_type="application/json")

    with caplog.at_level(logging.WARNING, logger="recoverable.state"):
        async with make_keyed(kvs, on_invalid="reset") as domains:
            assert len(domains) == 0
            domains["b"] = Domain()
    assert "starting from the default state, the bad record is kept as 'DOMAINS.invalid-" in caplog.text
    backups = [info.key for info in await kvs.list_keys(prefix=f"{KEY}.invalid-")]
    assert len(backups) == 1
    # The refused records are still there (the backup names them), beside the new ones; a later load keeps them.
    async with make_keyed(kvs) as again:
        assert dict(again) == {"b": Domain()}
    assert records <= await side_records(kvs)


async def test_a_record_that_does_not_fit_the_value_type_is_named(kvs: KeyValueStore) -> None:
    await saved_domains(kvs, a=Domain(pages=1))
    (record,) = (await manifest_of(kvs)).records()
    await kvs.client.set_record(
        key=record, value=b'{"0.0": [{"a": {"pages": "x"}}, []]}', content_type="application/json"
    )
    with pytest.raises(
        StateValidationError, match=rf"names the record '{record}', which does not fit .*0\.0\.0\.a\.pages"
    ):
        await make_keyed(kvs).initialize()


class Renamed(BaseModel):
    page_count: int = 0
    errors: int = 0


async def test_a_renamed_field_of_the_values_is_refused_not_dropped(kvs: KeyValueStore) -> None:
    await saved_domains(kvs, a=Domain(pages=4))
    before = await store_snapshot(kvs)
    with pytest.raises(StateValidationError, match=r"holds fields the model Renamed does not know: .*a\.pages"):
        await make_keyed(kvs, value_type=Renamed).initialize()
    assert await store_snapshot(kvs) == before


class Ignoring(BaseModel):
    model_config = ConfigDict(extra="ignore")

    errors: int = 0


async def test_a_model_that_says_extra_ignore_drops_unknown_fields(kvs: KeyValueStore) -> None:
    await saved_domains(kvs, a=Domain(pages=4, errors=1))
    async with make_keyed(kvs, value_type=Ignoring) as state:
        assert dict(state) == {"a": Ignoring(errors=1)}


class WithComputed(BaseModel):
    pages: int = 0
    errors: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return self.pages + self.errors


class WithComputedAndMore(WithComputed):
    more: int = 0


async def test_computed_fields_of_values_are_not_unknown(kvs: KeyValueStore) -> None:
    async with make_keyed(kvs, value_type=WithComputed) as state:
        state["a"] = WithComputed(pages=2, errors=1)
    # Another release of the model (another digest of its fields) checks the records: the computed field passes.
    async with make_keyed(kvs, value_type=WithComputedAndMore) as again:
        assert again["a"].pages == 2


class DomainV2(BaseModel):
    page_count: int = 0
    errors: int = 0


def rename_pages(value: dict[str, Any]) -> dict[str, Any]:
    return {"page_count": value.pop("pages"), **value}


async def test_values_of_an_older_schema_are_migrated_and_rewritten_as_the_snapshot_is_compacted(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink(monkeypatch)
    await saved_domains(kvs, **{f"d{i}": Domain(pages=i) for i in range(30)})
    v2: dict[str, Any] = {"value_type": DomainV2, "schema_version": 2, "migrations": {1: rename_pages}}
    async with make_keyed(kvs, persistence_enabled="explicit_only", **v2) as domains:
        assert dict(domains) == {f"d{i}": DomainV2(page_count=i) for i in range(30)}
        for save in range(30):
            domains[f"d{save}"] = DomainV2(page_count=save, errors=1)
            await domains.persist_state()
    content_types = set()
    for record in (await manifest_of(kvs)).records():
        stored = await kvs.client.get_record(key=record)
        assert stored is not None
        content_types.add(stored.content_type)
    assert content_types == {"application/json; schema-version=2"}
    async with make_keyed(kvs, **v2) as again:
        assert dict(again) == {f"d{i}": DomainV2(page_count=i, errors=1) for i in range(30)}

    # A rollback to the release before refuses the newer records, whatever on_invalid says.
    before = await store_snapshot(kvs)
    with pytest.raises(StateValidationError, match="newer than this program's 1"):
        await make_keyed(kvs, on_invalid="reset").initialize()
    assert await store_snapshot(kvs) == before


async def test_a_failing_migration_is_named_and_nothing_is_changed(kvs: KeyValueStore) -> None:
    await saved_domains(kvs, a=Domain(pages=1))
    before = await store_snapshot(kvs)

    def broken(value: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("page_total")

    with pytest.raises(StateValidationError, match=r"migrations\[1\] raised KeyError"):
        await make_keyed(kvs, value_type=DomainV2, schema_version=2, migrations={1: broken}).initialize()
    assert await store_snapshot(kvs) == before
