"""The record of a state in its store: loaded (upgraded, claimed at a takeover, set aside when bad) and saved.

`StateRecord` is the part of a state that talks to the store, on top of its fenced writes (`StateFence`) and its
history (`StateHistory`); `StateLifecycle` adds the lifecycle, the events and the hand-over at a stop.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic_core
from pydantic import ValidationError

from recoverable._collector import collector_paused
from recoverable._history import checksum_of, damage_of, kept_versions
from recoverable._schema import SchemaProblem, backup_key
from recoverable._state_history import StateHistory
from recoverable.errors import (
    StateOwnershipError,
    StateValidationError,
    VersionConflictError,
)
from recoverable.storages._serialization import CRAWLEE_NONE, JSON
from recoverable.storages._validation import suffixed_key

if TYPE_CHECKING:
    from recoverable._history import Trigger
    from recoverable.storages import KeyValueStore
    from recoverable.storages._models import StoredRecord

__all__ = ["SaveMode", "StateRecord", "means_no_state"]

TStateModel = TypeVar("TStateModel")

SaveMode = Literal["explicit", "event", "teardown"]
"""Who asked for a save: `persist_state()`, an event, or `teardown()` (what a save after a hand-over does)."""

_CLAIM_ATTEMPTS = 5
_NO_STATE = b"null"


class _BadRecord(Exception):  # noqa: N818 - not an error of its own: `_invalid` decides what it becomes
    """Why a record cannot be loaded, when the record itself is at fault (not the program reading it)."""

    def __init__(self, problem: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.errors = errors or []


def _fields(data: bytes) -> object:
    """The names of the fields a JSON object holds (a record written before a field was added lacks it)."""
    value = pydantic_core.from_json(data, allow_inf_nan=True)
    return sorted(value) if isinstance(value, dict) else None


def means_no_state(stored: StoredRecord) -> bool:
    """JSON null, or Crawlee's None value: what a reset in Crawlee leaves behind, read as "nothing saved"."""
    return stored.value.strip() == _NO_STATE or (stored.content_type == CRAWLEE_NONE and not stored.value)


class StateRecord(StateHistory[TStateModel]):
    """Loading and writing of one state's record; the base of `RecoverableState`, which sets the fields."""

    _loaded_bytes: bytes | None = None
    """The record as loaded, until the first save compares the state with it (`_same_as_loaded`)."""

    async def _load(self, kvs: KeyValueStore) -> TStateModel:
        """Load the saved state; after a takeover, also make the version loaded one no stale write can match."""
        for _ in range(_CLAIM_ATTEMPTS):
            stored = await kvs.client.get_record(key=self._key)
            try:
                # on_invalid="previous" writes back over the bad record only: a write landing first is loaded.
                state = await self._from_record(kvs, stored)
                if self._upgraded is not None:
                    # The conditional write of the upgraded record is a claim too: no stale write matches it.
                    await self._write_upgraded(kvs, self._upgraded, state)
                elif (
                    self._lease is not None
                    and self._lease.took_over
                    # A writer that died on this host, where the process itself writes the store, has no write
                    # left that could still land: the common restart after a crash costs no rewrite.
                    and not (self._lease.previous_owner_dead and kvs.client.writes_end_with_the_writer)
                ):
                    await self._claim(kvs, stored)
            except VersionConflictError:
                continue  # another write landed in between (a previous owner's): load that one instead
            return state
        raise StateOwnershipError(
            f"state {self._key!r} in store {kvs.label!r} kept changing while this process loaded it "
            f"({_CLAIM_ATTEMPTS} times): another process still writes it without holding its lease. Find and stop it"
        )

    async def _claim(self, kvs: KeyValueStore, stored: StoredRecord | None) -> None:
        """Rewrite the record just loaded, conditionally, so that its version changes under any stale writer.

        A previous owner frozen or cut off in the middle of a save may still send it, conditional on the
        version loaded here; after this rewrite that condition can no longer hold. A missing record is
        claimed with JSON null, which loads as "no saved state".
        """
        if stored is None:
            self._version = await kvs.client.set_record(
                key=self._key, value=_NO_STATE, content_type=JSON, if_absent=True
            )
            self._placeholder_version = self._version
        else:
            self._version = await kvs.client.set_record(
                key=self._key, value=stored.value, content_type=stored.content_type, if_version=stored.version
            )
            if means_no_state(stored):
                self._placeholder_version = self._version  # a previous owner's claim: still "nothing saved"

    async def _write_upgraded(self, kvs: KeyValueStore, stored: StoredRecord, state: TStateModel) -> None:
        """Keep the record of an older schema version under its backup key, then write it in the new form.

        The new form is written only over the very record that was upgraded, so a write that landed in
        between is loaded again (and upgraded again) instead of being overwritten.
        """
        found = self._schema.version_of(stored.content_type)
        backup = backup_key(self._key, found)
        await kvs.client.set_record(key=backup, value=stored.value, content_type=stored.content_type)
        data = self._codec.dump(state)
        # A store that keeps no versions (Crawlee's) has no condition to offer: it has no lease either.
        condition = stored.version if kvs.client.conditional_writes else None
        self._version = await kvs.client.set_record(
            key=self._key, value=data, content_type=self._schema.content_type, if_version=condition
        )
        await self._keep(kvs, data, "upgrade")
        self._last_persisted = data
        self._upgraded = None
        self._log.info(
            "state %r in store %r was upgraded from schema version %d to %d; the record as it was is kept as %r",
            self._key,
            kvs.label,
            found,
            self._schema.version,
            backup,
        )

    async def _from_record(self, kvs: KeyValueStore, stored: StoredRecord | None) -> TStateModel:
        self._loaded_bytes = None
        self._version = stored.version if stored is not None else None
        self._placeholder_version = None
        self._upgraded = None
        await self._load_history(kvs)
        if stored is None or means_no_state(stored):
            self._last_persisted = None
            return self._codec.copy(self._default_state)
        try:
            state, upgraded = await self._decoded_state(kvs, stored)
        except _BadRecord as bad:
            return await self._invalid(kvs, stored, bad.problem, bad.errors)
        if upgraded:
            self._upgraded = stored
            self._last_persisted = None
        else:
            self._last_persisted = self._loaded_bytes = stored.value
        return state

    async def _decoded_state(self, kvs: KeyValueStore, stored: StoredRecord) -> tuple[TStateModel, bool]:
        """The state a record holds, and whether it was upgraded from an older schema version.

        Raises:
            _BadRecord: The record itself is bad (empty, not JSON, a checksum that does not match, not the model).
            StateValidationError: The record is sound but this program cannot read it (a newer schema version, a
                missing or failing migration): it is never set aside, whatever `on_invalid` says.
        """
        if not stored.value.strip():
            what = "is empty" if not stored.value else "holds only white space"
            raise _BadRecord(f"{what} ({len(stored.value)} bytes), not a saved state")
        try:
            found = self._schema.version_of(stored.content_type)
            data = self._schema.upgrade(stored.value, found)
        except SchemaProblem as bad:
            if bad.in_record:
                raise _BadRecord(str(bad)) from bad
            raise StateValidationError(
                f"saved state {self._key!r} in store {kvs.label!r} {bad}. The record was left untouched",
                store=kvs.label,
                key=self._key,
            ) from bad
        upgraded = (
            f" (after upgrading it from schema version {found} to {self._schema.version})"
            if found != self._schema.version
            else ""
        )
        try:
            with collector_paused():
                state = self._codec.load(data)
        except ValidationError as exc:
            problem, errors = self._codec.problem_of(exc, upgraded)
            if upgraded:
                # The record is sound at its own version: the migrations made something the model refuses.
                raise StateValidationError(
                    f"saved state {self._key!r} in store {kvs.label!r} {problem}. The migrations produced it, so "
                    "they are what to fix; the record was left untouched (even with on_invalid='reset')",
                    store=kvs.label,
                    key=self._key,
                    errors=[dict(e) for e in errors],
                ) from exc
            raise _BadRecord(problem, [dict(e) for e in errors]) from exc
        return state, bool(upgraded)

    async def _invalid(
        self, kvs: KeyValueStore, stored: StoredRecord, problem: str, errors: list[dict[str, Any]]
    ) -> TStateModel:
        if self._on_invalid == "previous":
            return await self._fall_back(kvs, stored, problem, errors)
        if self._on_invalid == "reset":
            backup = suffixed_key(self._key, f".invalid-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}")
            await kvs.client.set_record(key=backup, value=stored.value, content_type=stored.content_type)
            self._log.warning(
                "saved state %r in store %r %s; starting from the default state, the bad record is kept as %r",
                self._key,
                kvs.label,
                problem,
                backup,
            )
            self._last_persisted = None
            return self._codec.copy(self._default_state)
        raise StateValidationError(
            f"saved state {self._key!r} in store {kvs.label!r} {problem}. It was left untouched: fix or delete the "
            "record, migrate it to the model, pass on_invalid='previous' to load the newest good version its "
            "history keeps, or on_invalid='reset' to start over (a backup copy is kept either way)",
            store=kvs.label,
            key=self._key,
            errors=[dict(e) for e in errors],
        )

    async def _fall_back(
        self, kvs: KeyValueStore, stored: StoredRecord, problem: str, errors: list[dict[str, Any]]
    ) -> TStateModel:
        """`on_invalid="previous"`: set the bad record aside and put back the newest good version of the history.

        The bad record is copied to `<key>.quarantine-<time>` first; the good version is then written over it
        as a new save (trigger "rollback"), only over the very record found bad, so that a write landing in
        between is loaded instead.

        Raises:
            StateValidationError: No version the history keeps loads either; nothing was written.
            VersionConflictError: The record changed while it was being replaced (`_load` loads it again).
        """
        tried = 0
        skipped: list[str] = []
        bad_checksum = checksum_of(stored.value)
        for kept in await kept_versions(kvs.client, self._key):
            if kept.checksum == bad_checksum:
                continue  # the copy of the bad record itself
            older = await kvs.client.get_record(key=kept.key)
            if older is None:
                continue
            tried += 1
            damage = damage_of(kept.checksum, older)
            if damage is not None:
                skipped.append(f"version {kept.version} {damage}")
                continue
            try:
                state, upgraded = await self._decoded_state(kvs, older)
            except _BadRecord as bad:
                skipped.append(f"version {kept.version} {bad.problem}")
                continue
            except StateValidationError as exc:
                skipped.append(f"version {kept.version}: {exc}")
                continue
            quarantine = suffixed_key(self._key, f".quarantine-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}")
            await kvs.client.set_record(key=quarantine, value=stored.value, content_type=stored.content_type)
            condition = stored.version if kvs.client.conditional_writes else None
            reowned = await self._reowned(kvs, state)
            data = older.value if reowned is state else self._codec.dump(reowned)
            state = reowned
            self._version = await kvs.client.set_record(
                key=self._key, value=data, content_type=older.content_type, if_version=condition
            )
            await self._keep(kvs, data, "rollback")
            self._log.warning(
                "saved state %r in store %r %s; it was moved aside to %r, and version %d (saved %s, kept as %r) was "
                "loaded and written back in its place%s",
                self._key,
                kvs.label,
                problem,
                quarantine,
                kept.version,
                kept.saved_at.isoformat(timespec="seconds"),
                kept.key,
                "".join(f"; passed over: {reason}" for reason in skipped),
            )
            if upgraded:
                self._upgraded = replace(older, key=self._key, version=self._version)
                self._last_persisted = None
            else:
                self._last_persisted = data
            self._adopt_decoded(state)
            return state
        raise StateValidationError(
            f"saved state {self._key!r} in store {kvs.label!r} {problem}, and none of the {tried} older versions its "
            "history keeps loads either. Nothing was changed: fix or delete the record, or pass on_invalid='reset' "
            "to start over (a backup copy is kept)",
            store=kvs.label,
            key=self._key,
            errors=errors,
        )

    async def _restored(self, kvs: KeyValueStore, stored: StoredRecord, version: int) -> TStateModel:
        """The state a saved version of the history holds, for a rollback.

        Raises:
            StateValidationError: It does not load; the message says why.
        """
        if means_no_state(stored):
            return self._codec.copy(self._default_state)
        try:
            state, _ = await self._decoded_state(kvs, stored)
        except _BadRecord as bad:
            raise StateValidationError(
                f"version {version} of state {self._key!r} in store {kvs.label!r} ({stored.key!r}) {bad.problem}. "
                "Nothing was written: pick another version",
                store=kvs.label,
                key=self._key,
                errors=bad.errors,
            ) from bad
        return state

    async def _reowned(self, kvs: KeyValueStore, state: TStateModel) -> TStateModel:  # noqa: ARG002 - a hook
        """Hook: the state of an older version, made this process's own before it is written back (as it is here)."""
        return state

    def _adopt_decoded(self, state: TStateModel) -> None:
        """Hook: make the state `_decoded_state` returned (and whatever it read beside) the one in memory."""

    async def _persist(self, *, mode: SaveMode, trigger: Trigger) -> None:
        kvs = self._store()
        async with self._persist_lock:
            await self._persist_locked(kvs, mode=mode, trigger=trigger)

    async def _persist_locked(self, kvs: KeyValueStore, *, mode: SaveMode, trigger: Trigger) -> None:
        data = self._codec.dump(self._current_state())
        if data == self._last_persisted or self._same_as_loaded(data):
            return  # nothing to save: nothing is lost either, whoever owns the state now
        if self._released_for is not None:
            self._unsaved_after_hand_over(mode)
            return
        await self._check_ownership()
        await self._write_record(kvs, data, trigger)
        self._last_persisted = data

    def _same_as_loaded(self, data: bytes) -> bool:
        """Whether `data`, the first JSON since the load to differ from the record loaded, is the same state.

        When it is, `data` becomes the bytes later saves compare with. A set is written in its order of
        iteration, which changes from one process to the next: the record a process loads and the JSON it makes
        of the very same state may differ. Compared once per load, as states: a run that changed nothing saves
        nothing, and its history keeps no copy of it.
        """
        loaded, self._loaded_bytes = self._loaded_bytes, None
        if loaded is None or loaded != self._last_persisted:
            return False
        try:
            with collector_paused():
                same = bool(self._codec.load(loaded) == self._current_state()) and _fields(loaded) == _fields(data)
        except (ValidationError, ValueError):
            return False
        if same:
            self._last_persisted = data
        return same

    async def _write_record(self, kvs: KeyValueStore, data: bytes, trigger: Trigger) -> None:
        """Write the state's record: fenced by the lease (`_fenced_write`), or as it is without one.

        With a history, the record written is then copied to the history, and the oldest copy beyond
        `history` deleted.
        """
        if self._lease is None:
            self._version = await self._with_timeout(
                "save", kvs.client.set_record(key=self._key, value=data, content_type=self._schema.content_type)
            )
        else:
            await self._fenced_write(kvs, data)
        await self._keep(kvs, data, trigger)

    async def _delete_locked(self) -> None:
        """Delete the state's record, fenced by the lease as a save is; the caller holds `_persist_lock`.

        Raises:
            StateOwnershipError: Another process owns the state now, or this process handed it over at a stop.
            StorageError: The record could not be deleted.
        """
        if self._released_for is not None:
            raise self._released_error()
        await self._check_ownership()
        if self._lease is None:
            await self._with_timeout("reset", self._store().delete_value(self._key))
        else:
            if self._version is None and self._unanswered:
                # A save of this owner that got no answer may have landed: delete that one too.
                await self._adopt_landed_write(self._store(), None)
            # Without a version this owner saw no record (it never saved, or reset already): nothing to delete.
            # A delete with no version to be conditional on, sent late, would remove a new owner's save.
            if self._version is not None:
                await self._fenced_write(self._store(), None)
        self._last_persisted = None
        self._version = None

    def _unsaved_after_hand_over(self, mode: SaveMode) -> None:
        """A save with changes after the hand-over at a stop: another process may own the state, nothing is written.

        Raises:
            StateOwnershipError: The save was asked for by `persist_state()` (`mode="explicit"`).
        """
        if mode == "explicit":
            raise self._released_error()
        if mode == "teardown" or not self._warned_unsaved:
            self._warned_unsaved = True
            self._log.warning(
                "state %r changed after its final save, and those changes are not saved (its final save, made "
                "when the process began stopping on %s, is what the next owner loads): this process let go of "
                "the state then, and another process may own it now",
                self._key,
                self._released_for,
            )
