"""The lifecycle every saved state shares: open the store, take the lease, load, save on events, hand over, let go.

`StateLifecycle` is the base of `RecoverableState` (one model in one record) and of the keyed states
(`KeyedRecoverableState`, `RecoverableSet`: many entries in many records, named by a manifest record). What
differs between them is what their record holds: `_from_record` (what a loaded record becomes) and
`_persist_locked` (what a save writes), from `StateRecord`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from recoverable._history import SavedVersion, read_version, saved_versions
from recoverable._ownership import StateLease
from recoverable._state_stop import STOP_EVENTS, StateStop
from recoverable._state_store import check_lease_possible, check_not_emptied_by_crawlee, store_from_factory
from recoverable.errors import (
    StateNotInitializedError,
    StateOwnershipError,
)
from recoverable.events import (
    Event,
    EventManager,
    EventPersistStateData,
)
from recoverable.events._default import DefaultEvents
from recoverable.storages import KeyValueStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import timedelta
    from types import TracebackType

    from recoverable.configuration import Configuration
    from recoverable.storages._models import StoredRecord

__all__ = ["StateLifecycle"]

TState = TypeVar("TState")

_default_logger = logging.getLogger("recoverable.state")


class StateLifecycle(StateStop[TState]):
    """`initialize()`, `teardown()`, `persist_state()`, `reset()` and the events, for every kind of state.

    The subclass checks its arguments, sets `_codec`, `_schema` and `_default_state`, and calls `_setup()`.
    """

    def _setup(
        self,
        *,
        persist_state_key: str,
        persistence_enabled: Literal[True, False, "explicit_only"],
        persist_state_kvs_name: str | None,
        persist_state_kvs_id: str | None,
        persist_state_kvs_factory: Callable[[], Awaitable[KeyValueStore] | Awaitable[Any]] | None,
        logger: logging.Logger | None,
        key_value_store: KeyValueStore | None,
        event_manager: EventManager | None,
        on_invalid: Literal["raise", "reset", "previous"],
        timeout: timedelta | None,
        lease_ttl: timedelta | None,
        on_owned: Literal["fail", "wait"],
        lease_wait_timeout: timedelta | None,
        configuration: Configuration | None,
    ) -> None:
        """Set the fields every state has (the arguments were checked by `check_arguments`)."""
        self._key: str = persist_state_key
        self._persistence_enabled = persistence_enabled
        self._log = logger or _default_logger
        self._configuration = configuration
        self._on_invalid = on_invalid
        self._timeout = timeout
        self._kvs_name = persist_state_kvs_name
        self._kvs_id = persist_state_kvs_id
        self._kvs_factory = persist_state_kvs_factory
        self._key_value_store = key_value_store
        self._event_manager = event_manager
        self._default_events: DefaultEvents | None = None
        self._state: TState | None = None
        self._initialized = False
        self._last_persisted: bytes | None = None
        self._version: str | None = None
        # The version of the JSON null this process wrote to claim a missing record at a takeover.
        self._placeholder_version: str | None = None
        # The record just loaded, when it was of an older schema version and was upgraded: it is written back.
        self._upgraded: StoredRecord | None = None
        # What a fenced save or reset that failed without an answer tried to leave in the store (bytes, or
        # None for no record); it may have landed all the same. Empty when there is no such write.
        self._unanswered: list[bytes | None] = []
        self._save = 0
        self._kept: dict[str, int] = {}
        self._lease_ttl = lease_ttl
        self._on_owned: Literal["fail", "wait"] = on_owned
        self._lease_wait_timeout = lease_wait_timeout
        self._lease: StateLease | None = None
        # Why the state was handed over (see "Stopping"): from then on it writes nothing. None until then.
        self._released_for: str | None = None
        self._warned_unsaved = False
        self._persist_lock = asyncio.Lock()
        self._initialize_lock = asyncio.Lock()

    # --- properties -------------------------------------------------------------------------------

    @property
    def is_initialized(self) -> bool:
        """Whether `initialize()` ran and `teardown()` did not yet."""
        return self._initialized

    @property
    def persist_state_key(self) -> str:
        """The key of the record holding the state."""
        return self._key

    @property
    def key_value_store(self) -> KeyValueStore | None:
        """The store the state is saved in; None before `initialize()` or without persistence."""
        return self._key_value_store

    # --- lifecycle --------------------------------------------------------------------------------

    async def initialize(self) -> TState:
        """Load the saved state (or a copy of the default) and start saving on PERSIST_STATE events.

        Calling it again while initialized returns the current value and registers nothing twice.

        Returns:
            The current state.

        Raises:
            StateValidationError: The saved record is not valid JSON or does not fit the model.
            StateTimeoutError: Loading took longer than the timeout.
            StorageError: The store could not be opened or read.
        """
        # Concurrent calls must not load twice (replacing the value a caller already holds) nor acquire
        # the shared event manager twice (it would outlive the last teardown).
        async with self._initialize_lock:
            return await self._initialize()

    async def _initialize(self) -> TState:
        if self._initialized:
            return self._current_state()
        if self._persistence_enabled is False:
            self._state = self._codec.copy(self._default_state)
            self._initialized = True
            return self._state
        kvs = await self._with_timeout("open of the store", self._open_store())
        check_not_emptied_by_crawlee(kvs, key=self._key)
        check_lease_possible(kvs, "given", key=self._key, lease_ttl=self._lease_ttl)
        self._released_for = None
        self._warned_unsaved = False
        if self._lease_ttl is not None:
            lease = StateLease(
                store=kvs,
                state_key=self._key,
                ttl=self._lease_ttl,
                on_owned=self._on_owned,
                wait_timeout=self._lease_wait_timeout,
                op_timeout=self._timeout or self._config().state_timeout,
                logger=self._log,
            )
            await lease.acquire()
            self._lease = lease
        try:
            state = await self._with_timeout("load", self._load(kvs))
            if self._persistence_enabled is True:
                if self._event_manager is None:
                    self._default_events = await DefaultEvents.acquire(self._config())
                self._listen()
        except BaseException:
            # Whatever was taken is given back: a second attempt, or another state of the same key, starts clean.
            await self._release_lease()
            await self._release_default_events()
            raise
        self._state = state
        self._initialized = True
        return state

    async def teardown(self) -> None:
        """Stop listening for events and save the state one last time.

        After the state was handed over because the process is stopping (see "Stopping" in the class
        docstring), nothing is saved and nothing is raised for it: changes made since are logged as lost.

        Raises:
            StateOwnershipError: The last save was refused because another process owns the state now; the
                changes since the last save that landed are not saved (the state is still in
                `current_value`). Everything else was let go.
            SerializationError: A field of the state cannot be written as JSON; nothing was written, and the
                state stays initialized so that it can be fixed and torn down again.
            StorageError: The last save failed; the state is still in `current_value`.
            StateTimeoutError: The last save took longer than the timeout.
        """
        if not self._initialized:
            return
        if self._persistence_enabled is True:
            self._listen(stop=True)
        refused: StateOwnershipError | None = None
        if self._persistence_enabled:
            try:
                await self._persist(mode="teardown", trigger="teardown")
            except StateOwnershipError as exc:
                refused = exc  # another process owns the state now: say so once everything is let go
            except BaseException:
                # Stay initialized, listening and owning the state: teardown() or persist_state() can retry.
                if self._persistence_enabled is True:
                    self._listen()
                raise
        self._initialized = False
        await self._release_lease()
        await self._release_default_events()
        if refused is not None:
            raise StateOwnershipError(
                f"the last save of state {self._key!r} was refused, and its changes since the last save are lost: "
                f"{refused}",
                owner=refused.owner,
            ) from refused

    async def __aenter__(self) -> Self:
        await self.initialize()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.teardown()

    # --- operations -------------------------------------------------------------------------------

    async def persist_state(self, event_data: EventPersistStateData | None = None) -> None:
        """Save the state now (nothing is written when its JSON did not change since the last save).

        Args:
            event_data: The PERSIST_STATE payload, when called for an event. It only changes what happens
                after the state was handed over at a stop: a save for an event then logs the changes that
                are not saved instead of raising.

        Raises:
            StateNotInitializedError: `initialize()` has not been called.
            SerializationError: A field of the state cannot be written as JSON (the error names it); nothing
                was written.
            StorageError: The save failed; the state is still in memory and the old record intact.
            StateTimeoutError: The save took longer than the timeout.
            StateOwnershipError: Another process owns the state now, or (without `event_data`) this process
                handed the state over because it is stopping (see "Stopping" in the class docstring) and
                the state changed since.
        """
        if not self._initialized:
            raise StateNotInitializedError(
                f"cannot persist state {self._key!r} before `initialize()` (or after `teardown()`)"
            )
        if not self._persistence_enabled:
            self._log.debug("persistence of state %r is disabled; not saving", self._key)
            return
        if event_data is not None and event_data.is_migrating:
            self._log.info("saving state %r before a migration", self._key)
        if event_data is None:
            await self._persist(mode="explicit", trigger="manual")
        else:
            await self._persist(mode="event", trigger="migrating" if event_data.is_migrating else "periodic")

    async def reset(self) -> None:
        """Go back to a copy of the default state and delete the saved record.

        Raises:
            StateNotInitializedError: Persistence is enabled and `initialize()` has not been called.
            StorageError: The record could not be deleted.
            StateOwnershipError: Another process owns the state now, or this process handed it over because
                it is stopping (see "Stopping" in the class docstring); the state is left as it was.
        """
        if self._persistence_enabled and not self._initialized:
            raise StateNotInitializedError(f"cannot reset state {self._key!r} before `initialize()`")
        if self._released_for is not None:
            raise self._released_error()
        self._state = self._codec.copy(self._default_state)
        if self._persistence_enabled:
            async with self._persist_lock:
                await self._delete_locked()

    async def has_persisted_state(self) -> bool:
        """Whether the store holds a saved record of this state.

        Raises:
            StateNotInitializedError: Persistence is enabled and `initialize()` has not been called.
        """
        if not self._persistence_enabled:
            return False
        if self._key_value_store is None:
            raise StateNotInitializedError(f"state {self._key!r} has not been initialized")
        if self._placeholder_version is not None and self._placeholder_version == self._version:
            return False  # only the JSON null this owner wrote to claim the missing record at a takeover
        return await self._key_value_store.record_exists(self._key)

    async def history(self) -> list[SavedVersion]:
        """The saved versions of the state, newest first: the current record, then those its history keeps.

        Raises:
            StateNotInitializedError: Persistence is disabled, or `initialize()` has not been called.
            StorageError: The store could not be read.
        """
        kvs = self._history_store("list the history of")
        return await self._with_timeout("listing of the history", saved_versions(kvs.client, self._key))

    async def _rollback(self, version: int) -> TState:
        """Make saved version `version` the state again, saved as a new save; return the state as restored.

        The version is loaded as at a start (upgraded when it is of an older schema version, validated), written
        over the record as a new save (trigger "rollback", fenced by the lease like any save, the record it
        replaces kept in the history), and becomes the state in memory. The public `rollback()` of each kind
        of state says what it returns.

        Raises:
            StateNotInitializedError: Persistence is disabled, or `initialize()` has not been called.
            StateHistoryError: No such version is kept, or its copy no longer matches its checksum.
            StateValidationError: The version does not load; nothing was written.
            StateOwnershipError: Another process owns the state now, or this process handed it over at a stop.
            StorageError: The store failed; the state in memory and in the store are as they were.
        """
        kvs = self._history_store("roll back")
        async with self._persist_lock:
            if self._released_for is not None:
                raise self._released_error()
            _, stored = await self._with_timeout(
                "read of a saved version", read_version(kvs.client, self._key, version)
            )
            restored = await self._restored(kvs, stored, version)
            # Checked before any write: a process that lost the state copies no record for a save it cannot make.
            await self._check_ownership()
            state = await self._reowned(kvs, restored)
            data = self._codec.dump(state)
            await self._write_record(kvs, data, "rollback")
            self._last_persisted = data
            self._state = state
            self._adopt_decoded(state)
        self._log.info("state %r in store %r was rolled back to version %d", self._key, kvs.label, version)
        return state

    # --- internals --------------------------------------------------------------------------------

    def _events(self) -> EventManager:
        if self._event_manager is not None:
            return self._event_manager
        assert self._default_events is not None  # noqa: S101 - set whenever persistence_enabled is True and initialized
        return self._default_events.relay

    async def _release_default_events(self) -> None:
        default, self._default_events = self._default_events, None
        if default is not None:
            await default.release()

    async def _open_store(self) -> KeyValueStore:
        if self._key_value_store is None:
            if self._kvs_factory is not None:
                self._key_value_store = await store_from_factory(
                    self._kvs_factory, key=self._key, lease_ttl=self._lease_ttl
                )
            else:
                self._key_value_store = await KeyValueStore.open(
                    id=self._kvs_id, name=self._kvs_name, configuration=self._configuration
                )
        return self._key_value_store

    def _listen(self, *, stop: bool = False) -> None:
        """Start (or, with `stop`, stop) listening to the events that save the state or hand it over."""
        events = self._events()
        if stop:
            events.off(event=Event.PERSIST_STATE, listener=self._on_persist_state_event)
            for event in STOP_EVENTS:
                events.off(event=event, listener=self._on_stop_event)
            return
        events.on(event=Event.PERSIST_STATE, listener=self._on_persist_state_event)
        for event in STOP_EVENTS:
            events.on(event=event, listener=self._on_stop_event)

    async def _on_persist_state_event(self, event_data: EventPersistStateData) -> None:
        if event_data.is_migrating and self._lease is not None:
            await self._on_stop_event(event_data)
            return
        try:
            await self.persist_state(event_data)
        except StateNotInitializedError:
            pass
        except StateOwnershipError as exc:
            self._log.error(
                "state %r is no longer saved by this process, its changes are not saved: %s", self._key, exc
            )
        except Exception:  # noqa: BLE001 - a failed periodic save must never crash the program
            self._log.exception(
                "saving state %r failed; it stays in memory and the save is retried on the next PERSIST_STATE",
                self._key,
            )
