"""The history of a state's record, kept by its owner: each save copied beside it, the oldest copies trimmed.

`StateHistory` is the base of `StateRecord`: after each write of the record, `_keep` copies it to the history
(`recoverable/_history.py` names the copies) and `_trim` deletes the copies beyond the last `history`; at a load,
`_load_history` learns which copies there are. See docs/history.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from recoverable._history import kept_key, kept_versions
from recoverable._state_fence import StateFence
from recoverable.errors import (
    RecoverableError,
    StateNotInitializedError,
    StateOwnershipError,
    VersionConflictError,
)

if TYPE_CHECKING:
    from recoverable._history import Trigger
    from recoverable.storages import KeyValueStore

__all__ = ["StateHistory"]

TStateModel = TypeVar("TStateModel")


class StateHistory(StateFence[TStateModel]):
    """The copies of a state's saves that its history keeps; the base of `StateRecord`."""

    _history: int = 0
    """How many saved versions to keep beside the record (0: none, and the record is written as it always was)."""
    _save: int = 0
    """The highest save number the history of the record holds, as this process last saw it; 0 for none."""
    _kept: dict[str, int]
    """The keys of the copies the history keeps, with their save numbers, as this process last saw them."""

    def _history_store(self, action: str) -> KeyValueStore:
        """The store of an initialized state with persistence, to read or roll back its history.

        Raises:
            StateNotInitializedError: Persistence is disabled, or `initialize()` has not been called.
        """
        if self._key_value_store is None or not getattr(self, "_initialized", False):
            raise StateNotInitializedError(
                f"cannot {action} state {self._key!r} before `initialize()` (or after `teardown()`), nor with "
                "persistence_enabled=False"
            )
        return self._key_value_store

    async def _load_history(self, kvs: KeyValueStore) -> None:
        """Learn which copies the history keeps and the highest save number, before a load."""
        # Listed even with history=0: copies kept by an earlier run with a history are trimmed at the next save.
        self._kept = {version.key: version.version for version in await kept_versions(kvs.client, self._key)}
        self._save = max(self._kept.values(), default=0)

    def _copy_kept(self, key: str, data: bytes) -> None:
        """Hook: the history now keeps `data`, the record just written, under `key`."""

    def _copies_trimmed(self, keys: list[str]) -> None:
        """Hook: the history no longer keeps the copies under `keys` (deleted)."""

    async def _keep(self, kvs: KeyValueStore, data: bytes, trigger: Trigger) -> None:
        """Copy the record just written (`data`) to the history, and delete the copies that fall out of it.

        The copy is made only of the very version just written: when another process wrote the record in
        between, nothing is copied (its own save keeps its own copy). The save has landed whatever happens
        here: a copy or a deletion that fails is logged, never raised.
        """
        if self._history:
            number = self._save + 1
            to_key = kept_key(self._key, number, trigger, data)
            condition = self._version if kvs.client.conditional_writes else None
            try:
                await self._with_timeout(
                    "copy to the history", kvs.client.copy_record(key=self._key, to_key=to_key, if_version=condition)
                )
            except VersionConflictError:
                return
            except RecoverableError as exc:
                self._log.warning(
                    "state %r was saved, but its copy to the history failed (the history lacks this save): %s",
                    self._key,
                    exc,
                )
                return
            self._save = number
            self._kept[to_key] = number
            self._copy_kept(to_key, data)
        await self._trim(kvs)

    async def _trim(self, kvs: KeyValueStore) -> None:
        """Delete the copies beyond the last `history`, while this process still owns the state."""
        limit = self._save - self._history
        out = sorted((key for key, number in self._kept.items() if number <= limit), key=self._kept.__getitem__)
        if not out:
            return
        try:
            # A process that lost the state (frozen, then resumed after a takeover) leaves the history to the
            # new owner, which may keep more of it.
            await self._check_ownership()
        except StateOwnershipError:
            return
        trimmed = []
        for key in out:
            try:
                await self._with_timeout("trim of the history", kvs.client.delete_record(key=key))
            except RecoverableError as exc:
                self._log.warning(
                    "copy %r of state %r could not be deleted (tried at the next save): %s", key, self._key, exc
                )
                continue
            del self._kept[key]
            trimmed.append(key)
        if trimmed:
            self._copies_trimmed(trimmed)
