"""What `KeyedRecoverableState` and `RecoverableSet` share: entries kept in parts, saved as what changed.

A save writes one changelog record of the entries changed since the last save, then the manifest (the one
record written conditionally, fenced by the lease exactly as a `RecoverableState` record is). When the
changelog has grown past a share of the state, saves also rewrite the oldest snapshot parts, a bounded
number per save, each serialised in its own step on the event loop; once every part holds the changes of a
changelog record, that record is deleted. A load reads the parts and applies the changelog records of later
saves over them. The layout is in `_keyed_manifest.py` and docs/keyed-state.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeVar

from recoverable._history import check_history
from recoverable._keyed_manifest import Kind, LogRef, Manifest, PartRef, RecordKeys
from recoverable._keyed_records import KeyedRecords
from recoverable._schema import Schema
from recoverable._state_arguments import check_arguments
from recoverable._state_codec import StateCodec
from recoverable.errors import ConfigurationError, InvalidKeyError, StateNotInitializedError
from recoverable.storages._validation import MAX_KEY_LENGTH

if TYPE_CHECKING:
    from collections.abc import Iterator

    from recoverable._history import Trigger
    from recoverable._keyed_parts import Changes, Part
    from recoverable._state_record import SaveMode
    from recoverable.storages import KeyValueStore

__all__ = ["KeyedState", "check_key_room"]

TEntries = TypeVar("TEntries", dict, set)  # type: ignore[type-arg]

COMPACT_SHARE = 0.25
"""Compaction starts when the changelog holds more entries than this share of the state's entries..."""
COMPACT_MIN_ENTRIES = 4096
"""...and more than this many,"""
MAX_LOG_RECORDS = 64
"""...or when it has this many records (each is read at every load)."""
COMPACTION_SAVES = 8
"""A compaction rewrites every part over about this many saves: each rewrites 1/8 of the parts at most."""


def check_key_room(key: str) -> None:
    """Refuse a state key too long to name the state's records (the key plus up to 64 characters).

    Raises:
        InvalidKeyError: It is.
    """
    room = MAX_KEY_LENGTH - RecordKeys.SUFFIX_ROOM
    if len(key) > room:
        raise InvalidKeyError(
            f"persist_state_key of {len(key)} characters is too long for a keyed state, whose records are named "
            f"by the key plus up to {RecordKeys.SUFFIX_ROOM} characters: use at most {room}",
            key=key[:80],
        )


class KeyedState(KeyedRecords[TEntries]):
    """The saving of a state kept as entries in parts; its loading is `KeyedRecords`'s.

    The public classes add the collection API: they set `_entries` and call `_setup_keyed()`.
    """

    _noun = "entries"
    """What its entries are called in its repr."""

    def _setup_keyed(self, *, kind: Kind, values_schema: Schema, history: int, arguments: dict[str, Any]) -> None:
        """Check the arguments every state takes and set up the fields (`arguments`: those of `_setup`).

        Raises:
            ConfigurationError: An argument is of the wrong kind or value.
            InvalidKeyError: `persist_state_key` is not a valid key, or too long to name the state's records.
        """
        check_arguments(**arguments)
        self._history = check_history(history)
        if arguments["on_invalid"] == "previous" and not self._history:
            raise ConfigurationError(
                "on_invalid='previous' loads an older version from the state's history, and history=0 keeps "
                "none: keep some (history=3, say) or pass on_invalid='raise' or 'reset'"
            )
        check_key_room(arguments["persist_state_key"])
        self._codec = StateCodec(Manifest(kind=kind), key=arguments["persist_state_key"])
        self._schema = Schema(None, None)
        self._values_schema = values_schema
        self._default_state = Manifest(kind=kind)
        self._setup(**arguments)
        self._size_changes = 0
        self._kept_records = {}
        self._unnamed = set()
        self._reset_memory(self._default_state)

    # --- entries ---------------------------------------------------------------------------------

    def _check_ready(self) -> None:
        if self._state is None:
            raise StateNotInitializedError(
                f"state {self._key!r} has not been initialized: call `await state.initialize()` or use "
                "`async with state`"
            )

    def _part_of(self, key: Any) -> Part[TEntries]:
        self._check_ready()
        return self._parts.part_of(self._hash_of(key))

    def _part_holding(self, key: Any) -> Part[TEntries] | None:
        """The part `key` would be in, or None when it cannot be a key at all (then no part holds it)."""
        self._check_ready()
        try:
            return self._parts.part_of(self._hash_of(key))
        except InvalidKeyError:
            return None

    def _pop_any(self) -> tuple[Any, Any]:
        """Remove one entry, whichever is cheapest to find, and return its key and value (None for a set).

        Raises:
            KeyError: The state is empty.
        """
        self._check_ready()
        for part in self._parts:
            if part.entries:
                entries = part.entries
                key, value = entries.popitem() if isinstance(entries, dict) else (entries.pop(), None)
                self._removed(key, part)
                return key, value
        raise KeyError(f"state {self._key!r} is empty")

    def clear(self) -> None:
        """Delete every entry (item); the deletions are saved at the next save."""
        self._check_ready()
        for part in self._parts:
            for key in part.entries:
                part.changes.delete(key)
            part.entries.clear()
        self._size_changes += 1

    def __len__(self) -> int:
        self._check_ready()
        return len(self._parts)

    def __repr__(self) -> str:
        size = len(self._parts) if self._state is not None else "?"
        return f"<{type(self).__name__} {self._key!r}: {size} {self._noun}>"

    def _added(self, key: Any, part: Part[TEntries], value: Any = None, *, new: bool = True) -> None:
        """Note that `key` was added to `part` (`new`), or set; split the part when it grew too full.

        `value` is what the changelog will hold for it: the JSON of an entry of a `KeyedRecoverableState`.
        """
        part.changes.put(key, value, new=new)
        if new:
            self._size_changes += 1
            self._parts.split_if_full(part, self._hash_of)

    def _removed(self, key: Any, part: Part[TEntries]) -> None:
        """Note that `key` was deleted from `part`."""
        part.changes.delete(key)
        self._size_changes += 1

    def _iterate(self) -> Iterator[Any]:
        """The keys (items), part by part; adding or deleting any while iterating raises, as with a dict.

        Raises:
            RuntimeError: A key was added or deleted during the iteration.
        """
        self._check_ready()
        changes = self._size_changes
        for part in list(self._parts.parts):
            yield from part.entries
            if self._size_changes != changes:
                raise RuntimeError(f"state {self._key!r} changed size during iteration")

    # --- saving ----------------------------------------------------------------------------------

    async def _persist_locked(self, kvs: KeyValueStore, *, mode: SaveMode, trigger: Trigger) -> None:
        manifest: Manifest = self._current_state()
        if self._verify_wanted():
            self._verify(set().union(*(part.changes.changed_keys() for part in self._parts)))
        if not self._parts.changed():
            return  # nothing to save, whatever the size: nothing is lost either
        if self._released_for is not None:
            self._unsaved_after_hand_over(mode)
            return
        await self._check_ownership()
        seq = manifest.seq + 1
        content_type = self._values_schema.content_type
        self._parts.splits_paused = True
        taken: list[tuple[Part[TEntries], Changes[TEntries]]] = []
        try:
            parts = await self._compact(kvs, manifest, seq, content_type)
            # Taken after the compaction's writes: a part written above may hold changes made while it was
            # written, and this changelog record, applied over it at a load, brings it to this very save.
            taken = self._parts.take_changes()
            data = self._entries.dump_changes([(part.region, changes, part.entries) for part, changes in taken])
            count = sum(len(changes) for _, changes in taken)
            log_key = self._record_keys.log(seq)
            await self._with_timeout("save", kvs.client.set_record(key=log_key, value=data, content_type=content_type))
            saved = self._next_manifest(manifest, parts, LogRef(seq=seq, record=log_key, count=count))
            record = self._codec.dump(saved)
            await self._write_record(kvs, record, trigger)
        except BaseException:
            for part, changes in taken:  # no part split meanwhile: the same parts
                part.changes.keep_older(changes)  # saved at the next save instead
            # What this save wrote may still land, late (a write that timed out, a request already sent): the
            # next save writes under the names of a new writer, so that no late write replaces its records.
            self._record_keys = RecordKeys(self._key)
            raise
        finally:
            self._parts.splits_paused = False
        self._state = saved
        self._last_persisted = record
        await self._delete_records(kvs, self._unneeded(manifest))

    def _next_manifest(self, manifest: Manifest, parts: list[PartRef], log: LogRef) -> Manifest:
        """The manifest of a save: its parts, and the changelog records some part does not hold yet."""
        oldest: int = min(ref.upto for ref in parts)
        return Manifest(
            kind=manifest.kind,
            salt=manifest.salt,
            seq=log.seq,
            count=len(self._parts),
            parts=parts,
            log=[
                *(entry for entry in manifest.log if entry.seq > oldest),  # held by every part: dropped
                log.model_copy(update={"fields": self._entries.fields}),
            ],
        )

    def _compaction_due(self, manifest: Manifest) -> bool:
        logged = sum(entry.count for entry in manifest.log)
        return len(manifest.log) >= MAX_LOG_RECORDS or logged > max(COMPACT_SHARE * manifest.count, COMPACT_MIN_ENTRIES)

    async def _compact(self, kvs: KeyValueStore, manifest: Manifest, seq: int, content_type: str) -> list[PartRef]:
        """The parts of the next manifest: the oldest rewritten from memory when the changelog grew too long."""
        if not self._compaction_due(manifest):
            return list(manifest.parts)
        budget = max(1, math.ceil(len(manifest.parts) / COMPACTION_SAVES))
        oldest = sorted(manifest.parts, key=lambda part: part.upto)[:budget]
        rewritten = {part.region for part in oldest}
        parts = [part for part in manifest.parts if part.region not in rewritten]
        for ref in oldest:
            for part in self._parts.parts_in(ref.region):
                record = None
                count = len(part.entries)  # as serialised now: the entries may change while it is written
                if count:
                    record = self._record_keys.part(seq, part.region)
                    data = self._entries.dump_part(part.entries)
                    # Its keys are in a record now: one deleted before this save's changelog is taken needs a
                    # deletion in it, even when it was added since the last save.
                    part.changes.fresh.difference_update(part.entries)
                    await self._with_timeout(
                        "save", kvs.client.set_record(key=record, value=data, content_type=content_type)
                    )
                # Holds every change up to the last save; this save's changelog record is applied over it.
                parts.append(
                    PartRef(
                        depth=part.depth,
                        index=part.index,
                        record=record,
                        upto=manifest.seq,
                        count=count,
                        fields=self._entries.fields,
                    )
                )
        return parts

    # --- reset -----------------------------------------------------------------------------------

    async def reset(self) -> None:
        """Empty the state and delete everything it saved: the manifest first, then the records it named.

        Records of saves that never landed are left for the next load to delete.

        Raises:
            StateNotInitializedError: Persistence is enabled and `initialize()` has not been called.
            StorageError: The manifest could not be deleted; the state is left as it was.
            StateOwnershipError: Another process owns the state now, or this process handed it over because
                it is stopping; the state is left as it was.
        """
        if self._persistence_enabled and not self._initialized:
            raise StateNotInitializedError(f"cannot reset state {self._key!r} before `initialize()`")
        if self._released_for is not None:
            raise self._released_error()
        if not self._persistence_enabled:
            self._empty()
            return
        async with self._persist_lock:
            # No save runs now: the manifest in memory is that of the last save that landed (or the one loaded).
            saved = self._current_state()
            await self._delete_locked()
            self._empty()
            # Only the records that manifest named: a record of another writer (a new owner's, should this
            # process have lost the state meanwhile) is never named by it.
            # Nor those a copy of the history keeps, so that a reset can be rolled back.
            await self._delete_records(self._store(), sorted(saved.records() - self._protected()))

    async def rollback(self, version: int) -> None:
        """Make saved version `version` (a number from `history()`) the state again, saved as a new save.

        The manifest the history kept of that save is loaded as at a start, with every record it names; the
        records are copied under new names, a manifest naming the copies is written as a new save (trigger
        "rollback", fenced by the lease like any save, the manifest it replaces kept in the history), and
        the entries in memory become those of that save: changes not saved yet are dropped. See
        docs/history.md#keyed-states-and-sets.

        Raises:
            StateNotInitializedError: Persistence is disabled, or `initialize()` has not been called.
            StateHistoryError: No such version is kept, or its copy no longer matches its checksum.
            StateValidationError: The version does not load (a record it names is missing or does not fit);
                nothing was written.
            StateOwnershipError: Another process owns the state now, or this process handed it over at a stop.
            StorageError: The store failed; the state in memory and in the store are as they were.
        """
        await self._rollback(version)

    def _empty(self) -> None:
        self._state = self._codec.copy(self._default_state)
        self._reset_memory(self._state)
        self._loaded()
