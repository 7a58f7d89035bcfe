"""The fenced writing of a state's record: who may write it (the lease), and writes only over what this process saw.

`StateFence` is the base of `StateRecord`: it holds the fields every kind of state has, bounds each action by
the state's timeout, checks ownership before a write, and writes or deletes the record conditionally on the
version this process read or wrote last, so that a stale owner's write never lands over a new owner's (see
docs/ownership.md).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

from recoverable._timeout import bounded
from recoverable.configuration import Configuration
from recoverable.errors import (
    RecoverableError,
    StateNotInitializedError,
    StateOwnershipError,
    VersionConflictError,
)

if TYPE_CHECKING:
    import asyncio
    import logging
    from collections.abc import Awaitable
    from datetime import timedelta

    from recoverable._ownership import StateLease
    from recoverable._schema import Schema
    from recoverable._state_codec import StateCodec
    from recoverable.storages import KeyValueStore
    from recoverable.storages._models import StoredRecord

__all__ = ["StateFence"]

TStateModel = TypeVar("TStateModel")
_T = TypeVar("_T")


class StateFence(Generic[TStateModel]):
    """A state's fields, timeouts, ownership checks and fenced writes; `StateLifecycle` sets the fields."""

    _key: str
    _codec: StateCodec[TStateModel]
    _schema: Schema
    _default_state: TStateModel
    _on_invalid: Literal["raise", "reset", "previous"]
    _log: logging.Logger
    _timeout: timedelta | None
    _configuration: Configuration | None
    _key_value_store: KeyValueStore | None
    _lease: StateLease | None
    _last_persisted: bytes | None
    _version: str | None
    _placeholder_version: str | None
    """The version of the JSON null this process wrote to claim a missing record at a takeover."""
    _upgraded: StoredRecord | None
    """The record just loaded, when it was of an older schema version and was upgraded: it is written back."""
    _state: TStateModel | None
    _persist_lock: asyncio.Lock
    _released_for: str | None
    """Why the state was handed over at a stop: from then on it writes nothing. None until then."""
    _warned_unsaved: bool
    _unanswered: list[bytes | None]
    """What a fenced save or reset that failed without an answer tried to leave in the store (bytes, or None
    for no record); it may have landed all the same. Empty when there is no such write."""

    def _current_state(self) -> TStateModel:
        """The state in memory.

        Raises:
            StateNotInitializedError: `initialize()` has not been called yet.
        """
        if self._state is None:
            raise StateNotInitializedError(
                f"state {self._key!r} has not been initialized: "
                "call `await state.initialize()` or use `async with state`"
            )
        return self._state

    def _config(self) -> Configuration:
        if self._configuration is None:
            self._configuration = Configuration.from_env()
        return self._configuration

    def _store(self) -> KeyValueStore:
        if self._key_value_store is None:
            raise StateNotInitializedError(f"state {self._key!r} has not been initialized")
        return self._key_value_store

    async def _with_timeout(self, action: str, work: Awaitable[_T]) -> _T:
        try:
            within = self._timeout or self._config().state_timeout
        except BaseException:
            # `work` (a coroutine the caller made) will never run: close it, or Python warns at exit that it
            # was never awaited, next to the real error (a bad RECOVERABLE_* variable, say).
            if inspect.iscoroutine(work):
                work.close()
            raise
        store = self._key_value_store.label if self._key_value_store else "?"
        return await bounded(work, within=within, what=f"{action} of state {self._key!r} in store {store!r}")

    async def _overwritten(self, exc: VersionConflictError) -> StateOwnershipError:
        """The state record changed under us: another process took the state over, or writes it regardless."""
        message = (
            f"state {self._key!r} in store {self._store().label!r} was written by someone else since this process "
            f"loaded or saved it (expected version {exc.expected}, found {exc.actual}); refusing to overwrite it"
        )
        owner = None
        if self._lease is not None:
            owner = await self._lease.current_owner()
            message += (
                ". Its lease is still this process's: something wrote the record without taking its lease"
                if owner is None
                else f". Its lease is held by {owner}"
            )
            self._lease.lose(message, owner=owner)
        return StateOwnershipError(message, owner=owner)

    async def _check_ownership(self) -> None:
        if self._lease is None:
            return
        try:
            self._lease.ensure_valid()
        except StateOwnershipError as exc:
            if exc.owner is not None or self._lease.lost:
                raise
            expired = exc
        else:
            return
        # The lease ran out while this process could not renew it (frozen, cut off). A read tells at once
        # whether someone took the state over (then no write is worth waiting for); if not, a renewal written
        # over the lease version this owner wrote last lands only when nobody took it over meanwhile.
        with contextlib.suppress(RecoverableError):
            if await self._lease.confirm():
                await self._lease.renew()
            else:
                owner = await self._lease.current_owner()
                self._lease.lose(f"the lease of state {self._key!r} was taken over by {owner}", owner=owner)
        try:
            self._lease.ensure_valid()
        except StateOwnershipError as exc:
            if exc.owner is not None:
                raise  # lost just now: the error names who took the state over
        else:
            return  # renewed
        owner = await self._lease.current_owner()
        if owner is None:
            raise expired
        raise StateOwnershipError(f"{expired}. It is now held by {owner}", owner=owner) from None

    async def _fenced_write(self, kvs: KeyValueStore, attempted: bytes | None) -> None:
        """Leave `attempted` in the record (None: delete it), only over the version this process saw last."""
        for attempt in range(2):
            try:
                if attempted is None:
                    await self._with_timeout("reset", kvs.delete_value(self._key, if_version=self._version))
                    self._version = None
                else:
                    self._version = await self._with_timeout(
                        "save",
                        kvs.client.set_record(
                            key=self._key,
                            value=attempted,
                            content_type=self._schema.content_type,
                            if_version=self._version,
                            if_absent=self._version is None,
                        ),
                    )
            except VersionConflictError as exc:
                if attempt == 0 and await self._adopt_landed_write(kvs, attempted):
                    if attempted is None and self._version is None:
                        return  # deleted already
                    continue
                raise await self._overwritten(exc) from exc
            except BaseException:
                # Cancelled (a second signal, a timeout around the caller) included: the write may still land.
                self._unanswered = [attempted]
                raise
            self._unanswered = []
            return

    async def _adopt_landed_write(self, kvs: KeyValueStore, attempted: bytes | None) -> bool:
        """After a conflict: whether the record is what this process tried to leave there (None: no record).

        A write of this process whose answer was lost (a timeout, a retry after a dropped connection) may
        have landed; then the record holds what it wrote, is this process's to build on, and its version is
        taken. Another writer's record is not.
        """
        current = await self._with_timeout("read", kvs.client.get_record(key=self._key))
        found = None if current is None else current.value
        if found != attempted and found not in self._unanswered:
            return False
        # A new owner that took over rewrote the record with the very bytes it loaded, which may be what this
        # process wrote: the record is ours only while the lease still is, read after the record.
        if self._lease is not None and not await self._with_timeout("check of the lease", self._lease.confirm()):
            return False
        self._version = None if current is None else current.version
        self._unanswered = []
        return True

    def _abandon_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.abandon()

    async def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            # A write that got no answer may still land: only a takeover (which rewrites the record) is safe
            # from it, so such a lease is left to expire instead of being deleted.
            let_expire = bool(self._unanswered)
            if let_expire:
                self._log.warning(
                    "a write of state %r got no answer and may still land; its lease is left to expire instead of "
                    "being released, so that the next owner takes it over safely",
                    self._key,
                )
            try:
                await lease.release(let_expire=let_expire)
            except Exception:  # noqa: BLE001 - an unreleased lease only delays the next owner until it expires
                self._log.exception("releasing the lease of state %r failed; it expires on its own", self._key)

    def _released_error(self) -> StateOwnershipError:
        return StateOwnershipError(
            f"state {self._key!r} is no longer saved by this process: it made a last save and let go of its lease "
            f"when the process began stopping ({self._released_for}), so that another process can take it over "
            "without waiting. Changes made since are not saved. To carry on with the state in this process, call "
            "teardown() and then initialize(), which takes the lease again and loads the last save"
        )
