"""Loading a keyed state: its manifest, the parts and changelog records it names, and the tidying after a load.

`KeyedRecords` is the part of `KeyedState` (`_keyed_state.py`) that reads the store: `_from_record` turns the
manifest record into the entries in memory, refusing what it cannot read whole, and `_collect_garbage` deletes
the records of saves that never landed. The layout is in `_keyed_manifest.py`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import ValidationError

from recoverable._collector import collector_paused
from recoverable._keyed_entries import RecordProblem
from recoverable._keyed_manifest import Manifest, RecordKeys
from recoverable._keyed_parts import MAX_DEPTH, Part, Parts, key_hash
from recoverable._schema import SchemaProblem
from recoverable._state_lifecycle import StateLifecycle
from recoverable._state_record import _BadRecord, means_no_state
from recoverable.errors import InvalidKeyError, RecoverableError, StateValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from recoverable._keyed_parts import Changes, Region
    from recoverable._schema import Schema
    from recoverable.storages import KeyValueStore
    from recoverable.storages._models import StoredRecord

__all__ = ["EntryCodec", "KeyedRecords"]

TEntries = TypeVar("TEntries", dict, set)  # type: ignore[type-arg]

_READS_IN_FLIGHT = 8


class EntryCodec(Protocol[TEntries]):
    """The JSON of a keyed state's records (`ValueEntries`, `ItemEntries`)."""

    fields: str | None

    def new(self) -> TEntries: ...
    def dump_part(self, entries: TEntries) -> bytes: ...
    def dump_changes(self, taken: list[tuple[Region, Changes[Any], TEntries]]) -> bytes: ...
    def load_part(self, data: bytes, *, version: int, fields: str | None) -> TEntries: ...
    def load_changes(self, data: bytes, *, version: int, fields: str | None) -> dict[str, tuple[Any, list[Any]]]: ...


class KeyedRecords(StateLifecycle[Manifest], Generic[TEntries]):
    """The loading of a keyed state's records; the base of `KeyedState`, which sets the fields."""

    _entries: EntryCodec[TEntries]
    _values_schema: Schema
    """The schema version of the records of entries (the manifest itself is plain JSON, version 1)."""
    _parts: Parts[TEntries]
    """The entries, in their parts, each with its changes since the last save that landed."""
    _size_changes: int
    """How many times a key was added or deleted: iterations check it."""
    _record_keys: RecordKeys

    _salt: bytes
    """The salt of the hash of the current manifest's entries."""
    _decoded_parts: Parts[TEntries] | None = None
    """The entries `_decoded_state` read, until `_adopt_decoded` makes them the state's."""
    _kept_records: dict[str, frozenset[str]]
    """The records each manifest copy the history keeps names, by the copy's key: kept while it is."""
    _unnamed: set[str]
    """The records of copies the history no longer keeps, until the save that trimmed them deletes them."""

    def _hash_of(self, key: Any) -> int:
        try:
            return key_hash(key, self._salt)
        except UnicodeEncodeError:
            raise InvalidKeyError(
                f"key {key!r} of state {self._key!r} is not valid Unicode (it holds a lone surrogate)", key=self._key
            ) from None

    def _reset_memory(self, manifest: Manifest) -> None:
        """Empty the entries, to be placed by the hash of `manifest` (the one about to be the current)."""
        self._salt = bytes.fromhex(manifest.salt)
        self._parts = Parts(self._entries.new)
        self._size_changes += 1
        self._record_keys = RecordKeys(self._key)

    def _verify_wanted(self) -> bool:
        """Whether `_verify` is to run at each save (`KeyedRecoverableState(verify_untracked=True)`)."""
        return False

    def _verify(self, changed: set[Any]) -> None:
        """Hook of `KeyedRecoverableState(verify_untracked=True)`: compare the values with what was saved."""

    def _loaded(self) -> None:
        """Hook called when the entries were loaded (or emptied) and before the first save."""

    # --- loading ---------------------------------------------------------------------------------

    async def _initialize(self) -> Manifest:
        if not self._initialized:
            self._reset_memory(self._default_state)
            self._loaded()
        return await super()._initialize()

    async def _load(self, kvs: KeyValueStore) -> Manifest:
        manifest = await super()._load(kvs)
        # Only under a manifest that names the state's records: without one (none saved yet, or JSON null where
        # it was), nothing tells which records a save left, so none is deleted.
        if self._lease is not None and manifest.seq > 0:
            await self._collect_garbage(kvs, manifest)
        return manifest

    async def _from_record(self, kvs: KeyValueStore, stored: StoredRecord | None) -> Manifest:
        self._version = stored.version if stored is not None else None
        self._placeholder_version = None
        self._upgraded = None
        self._reset_memory(self._default_state)
        await self._load_history(kvs)
        if stored is None or means_no_state(stored):
            self._last_persisted = None
            self._loaded()
            return self._codec.copy(self._default_state)
        try:
            manifest, _ = await self._decoded_state(kvs, stored)
        except _BadRecord as bad:
            manifest = await self._invalid(kvs, stored, bad.problem, bad.errors)
            if self._on_invalid == "reset":  # the default state: "previous" adopted the version it loaded
                self._reset_memory(manifest)
                self._loaded()
            return manifest
        self._adopt_decoded(manifest)
        self._last_persisted = stored.value
        return manifest

    async def _decoded_state(self, kvs: KeyValueStore, stored: StoredRecord) -> tuple[Manifest, bool]:
        """The manifest a record holds, its entries read (and kept aside until `_adopt_decoded`).

        Raises:
            _BadRecord: The manifest, or a record it names, is bad (not JSON, unsound, missing, not the model).
            StateValidationError: The records are sound but this program cannot read them (a newer format or
                schema version, another kind of state): never set aside, whatever `on_invalid` says.
        """
        try:
            # The manifest's own format has one version: a newer one is refused, whatever on_invalid says.
            self._schema.check_upgradable(self._schema.version_of(stored.content_type))
        except SchemaProblem as bad:
            if bad.in_record:
                raise _BadRecord(str(bad)) from bad
            raise StateValidationError(
                f"the manifest of state {self._key!r} in store {kvs.label!r} {bad}",
                store=kvs.label,
                key=self._key,
            ) from bad
        try:
            manifest = self._codec.load(stored.value)
        except ValidationError as exc:  # not JSON, or JSON that is no manifest
            errors = exc.errors(include_url=False)
            problem = f"is not the manifest of a keyed state ({_first_error(errors)})"
            raise _BadRecord(problem, [dict(e) for e in errors]) from exc
        if manifest.kind != self._default_state.kind:
            other = {"keyed": "KeyedRecoverableState", "set": "RecoverableSet"}[manifest.kind]
            raise StateValidationError(
                f"state {self._key!r} in store {kvs.label!r} was saved by a {other}, not a {type(self).__name__}: "
                "use another persist_state_key, or the same class. The records were left untouched",
                store=kvs.label,
                key=self._key,
            )
        unsound = Parts.check_cover([part.region for part in manifest.parts]) or self._misnamed(manifest)
        if unsound is not None:
            raise _BadRecord(f"is not a sound manifest: {unsound}")
        try:
            self._decoded_parts = await self._read_records(kvs, manifest)
        except RecordProblem as bad:
            raise _BadRecord(str(bad), [dict(e) for e in bad.errors]) from bad
        return manifest, False

    async def _restored(self, kvs: KeyValueStore, stored: StoredRecord, version: int) -> Manifest:
        self._decoded_parts = None  # a version of JSON null decodes nothing: it restores an empty state
        return await super()._restored(kvs, stored, version)

    async def _reowned(self, kvs: KeyValueStore, state: Manifest) -> Manifest:
        """The manifest of an older version, its records copied under the names of a new writer.

        Written back as the current manifest, it then names no record of another writer: an owner that lost the
        state meanwhile deletes only records of its own manifests, never one the current manifest names.

        Raises:
            StateValidationError: A record it names is gone (deleted since it was read); nothing was written.
        """
        keys = RecordKeys(self._key)
        limit = asyncio.Semaphore(_READS_IN_FLIGHT)

        async def copy(record: str, to_key: str) -> str:
            async with limit:
                copied = await self._with_timeout("copy of a record", kvs.client.copy_record(key=record, to_key=to_key))
            if copied is None:
                raise StateValidationError(
                    f"state {self._key!r} in store {kvs.label!r}: the record {record!r} of the version being restored "
                    "is gone (deleted since it was read). Nothing was written",
                    store=kvs.label,
                    key=self._key,
                )
            return to_key

        part_keys = await asyncio.gather(
            *(
                copy(ref.record, keys.part(int(ref.record.rsplit(".", 3)[1]), ref.region))
                for ref in state.parts
                if ref.record is not None
            )
        )
        log_keys = await asyncio.gather(*(copy(entry.record, keys.log(entry.seq)) for entry in state.log))
        renamed = iter(part_keys)
        return state.model_copy(
            update={
                "parts": [
                    ref if ref.record is None else ref.model_copy(update={"record": next(renamed)})
                    for ref in state.parts
                ],
                "log": [
                    entry.model_copy(update={"record": key}) for entry, key in zip(state.log, log_keys, strict=True)
                ],
            }
        )

    def _adopt_decoded(self, state: Manifest) -> None:
        self._reset_memory(state)
        parts, self._decoded_parts = self._decoded_parts, None
        if parts is not None:
            self._parts = parts
        self._loaded()

    def _copy_kept(self, key: str, data: bytes) -> None:
        try:
            self._kept_records[key] = frozenset(self._codec.load(data).records())
        except ValidationError:  # pragma: no cover - a manifest this process wrote always loads
            self._kept_records[key] = frozenset()

    def _copies_trimmed(self, keys: list[str]) -> None:
        # Their records are deleted by the save once it made its manifest the current one (`_unneeded`): the
        # trim runs before, while the state in memory still names the manifest the save replaces.
        for key in keys:
            self._unnamed |= self._kept_records.pop(key, frozenset())

    def _unneeded(self, replaced: Manifest) -> list[str]:
        """The records nothing names any more once the current manifest replaced `replaced`: to be deleted."""
        unneeded, self._unnamed = (replaced.records() | self._unnamed) - self._protected(), set()
        return sorted(unneeded)

    def _protected(self) -> set[str]:
        """The records no deletion may touch: those of the current manifest and of every copy the history keeps."""
        current = self._state.records() if isinstance(self._state, Manifest) else set()
        return current.union(*self._kept_records.values())

    async def _load_history(self, kvs: KeyValueStore) -> None:
        await super()._load_history(kvs)
        self._kept_records = {}
        self._unnamed = set()
        for key in self._kept:
            stored = await kvs.client.get_record(key=key)
            try:
                self._kept_records[key] = frozenset(self._codec.load(stored.value).records()) if stored else frozenset()
            except ValidationError:
                self._kept_records[key] = frozenset()  # a damaged copy: it loads nothing, and protects nothing

    def _misnamed(self, manifest: Manifest) -> str | None:
        """What is wrong with the names of the records a manifest names, or None.

        Each record's name says what it holds (its region, its save): a manifest naming another state's
        records, or one part's record for another part, would load entries where no lookup finds them.
        """
        foreign = sorted(key for key in manifest.records() if not self._record_keys.is_ours(key))
        if foreign:
            return f"it names records that are not this state's: {', '.join(map(repr, foreign[:5]))}"
        for part in manifest.parts:
            if part.record is not None and not part.record.endswith(f".{part.depth}.{part.index}"):
                return f"it names the record {part.record!r} for the part of depth {part.depth} and index {part.index}"
        for entry in manifest.log:
            if not entry.record.endswith(f".{entry.seq}"):
                return f"it names the record {entry.record!r} as the changelog of save {entry.seq}"
        if len(manifest.records()) != sum(part.record is not None for part in manifest.parts) + len(manifest.log):
            return "it names a record twice"
        return None

    async def _read_records(self, kvs: KeyValueStore, manifest: Manifest) -> Parts[TEntries]:
        """The entries the manifest names: its parts, with the changelog records of later saves applied."""
        limit = asyncio.Semaphore(_READS_IN_FLIGHT)

        async def read(key: str) -> StoredRecord:
            async with limit:
                stored = await kvs.client.get_record(key=key)
            if stored is None:
                raise RecordProblem(
                    f"names the record {key!r}, which is missing (deleted by hand, or the store was copied in part?)"
                )
            return stored

        part_records = await asyncio.gather(*(read(p.record) for p in manifest.parts if p.record is not None))
        log_records = await asyncio.gather(*(read(entry.record) for entry in manifest.log))
        # Decoded in one step, as a `RecoverableState` record is, without collector passes in between.
        with collector_paused():
            return self._decoded(manifest, part_records, log_records)

    def _decoded(
        self, manifest: Manifest, part_records: list[StoredRecord], log_records: list[StoredRecord]
    ) -> Parts[TEntries]:
        found = iter(part_records)
        parts = []
        for ref in manifest.parts:
            entries = (
                self._entries.new()
                if ref.record is None
                else self._decode(next(found), ref.record, ref.fields, self._entries.load_part)
            )
            if len(entries) != ref.count:
                raise RecordProblem(
                    f"names the record {ref.record!r} as holding {ref.count} entries, and it holds {len(entries)} "
                    "(changed by hand, or by another program?)"
                )
            parts.append(Part(ref.depth, ref.index, entries))
        loaded = Parts(self._entries.new, parts)
        upto = {ref.region: ref.upto for ref in manifest.parts}
        for entry, stored in sorted(zip(manifest.log, log_records, strict=True), key=lambda pair: pair[0].seq):
            changes = self._decode(stored, entry.record, entry.fields, self._entries.load_changes)
            for name, part_changes in changes.items():
                self._apply(loaded, upto, entry.seq, _region(name, entry.record), part_changes)
        # A part more than full splits when it is next added to, not here: a load does no work per entry.
        return loaded

    def _decode(self, stored: StoredRecord, key: str, fields: str | None, load: Callable[..., Any]) -> Any:
        try:
            version = self._values_schema.version_of(stored.content_type)
            return load(stored.value, version=version, fields=fields)
        except SchemaProblem as bad:
            if bad.in_record:
                raise RecordProblem(f"names the record {key!r}, which {bad}") from bad
            raise StateValidationError(
                f"saved state {self._key!r}: its record {key!r} {bad}. The records were left untouched",
                store=self._store().label,
                key=self._key,
            ) from bad
        except RecordProblem as bad:
            raise RecordProblem(f"names the record {key!r}, which {bad}", bad.errors) from bad

    @staticmethod
    def _apply(
        parts: Parts[TEntries],
        upto: dict[tuple[int, int], int],
        seq: int,
        region: Region,
        changes: tuple[Any, list[Any]],
    ) -> None:
        """Apply one part's changes of changelog record `seq` to the part that holds their region, whole.

        The part holding the region applies them unless it holds them already (`upto` is `seq` or later). A
        region wider than a part only comes from a save made before that part was written (memory only ever
        splits parts), which then holds the changes; a store where that is not so was changed by hand.

        Raises:
            RecordProblem: The region spans parts that do not hold its changes.
        """
        part = parts.containing(region)
        if part is None:
            if any(upto[inner.region] < seq for inner in parts.parts_in(region)):
                raise RecordProblem(
                    f"holds changes of save {seq} for the keys of depth {region[0]} and index {region[1]}, which "
                    "span parts written before that save (changed by hand, or by another program?)"
                )
            return
        if seq > upto[part.region]:
            upserts, deletes = changes
            entries = part.entries
            if isinstance(entries, dict):
                for key in deletes:
                    entries.pop(key, None)
            else:
                entries.difference_update(deletes)
            entries.update(upserts)

    async def _collect_garbage(self, kvs: KeyValueStore, manifest: Manifest) -> None:
        """Delete the records of saves that never landed (their writer died or lost the state before)."""
        try:
            async for _ in kvs.client.iterate_keys(prefix=f"{self._key}.invalid-", limit=1):
                return  # a manifest set aside by on_invalid='reset' still names its records: keep them all
            named = manifest.records().union(*self._kept_records.values())
            orphans = [
                info.key
                async for info in kvs.client.iterate_keys(prefix=self._record_keys.prefix)
                if self._record_keys.is_ours(info.key) and info.key not in named
            ]
            await self._delete_records(kvs, orphans)
        except RecoverableError as exc:
            self._log.warning("could not tidy the store of state %r (tried again at the next load): %s", self._key, exc)

    async def _delete_records(self, kvs: KeyValueStore, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                await self._with_timeout("clean-up", kvs.client.delete_record(key=key))
            except RecoverableError as exc:
                self._log.warning(
                    "record %r of state %r is no longer needed but could not be deleted (deleted at the next load): %s",
                    key,
                    self._key,
                    exc,
                )


def _region(name: str, record: str) -> Region:
    """The region a changelog record names a part's changes by, `<depth>.<index>`.

    Raises:
        RecordProblem: The name is not one.
    """
    depth, _, index = name.partition(".")
    if not (depth.isascii() and depth.isdigit() and index.isascii() and index.isdigit()):
        raise RecordProblem(f"names the record {record!r}, which names a part {name!r} that cannot be")
    region = (int(depth), int(index))
    if region[0] > MAX_DEPTH or region[1] >= 1 << region[0]:
        raise RecordProblem(f"names the record {record!r}, which names a part {name!r} that cannot be")
    return region


def _first_error(errors: list[Any]) -> str:
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
    return f"{first.get('msg')} at {where}"
