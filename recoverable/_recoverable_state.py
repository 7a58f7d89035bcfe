"""`RecoverableState`: a Pydantic model that is saved on every PERSIST_STATE event and loaded on start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeVar

from recoverable._history import DEFAULT_HISTORY, check_history
from recoverable._ownership import DEFAULT_LEASE_TTL
from recoverable._schema import Migration, Schema
from recoverable._state_arguments import check_arguments, lifecycle_arguments
from recoverable._state_codec import StateCodec
from recoverable._state_lifecycle import StateLifecycle
from recoverable.errors import ConfigurationError

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import timedelta

    from recoverable.configuration import Configuration
    from recoverable.events import EventManager
    from recoverable.storages import KeyValueStore

__all__ = ["RecoverableState"]

TStateModel = TypeVar("TStateModel")


class RecoverableState(StateLifecycle[TStateModel]):
    """State kept in a Pydantic model (or dataclass), saved to a key-value store and loaded on the next start.

    `initialize()` loads the last saved copy (or starts from a deep copy of `default_state`) and, with
    `persistence_enabled=True`, saves on every PERSIST_STATE event of the event manager; `teardown()`
    saves one last time. `async with state:` does both.

    The constructor keywords and methods are those of Crawlee's `RecoverableState`, so switching is a
    change of import. What differs, on purpose, is listed once, in the documentation:
    docs/crawlee.md#how-it-differs-from-crawlees-recoverablestate.

    Stopping: with `persistence_enabled=True` and a lease (the default), the state takes an event that
    says the process is stopping - MIGRATING, ABORTING or EXIT, or PERSIST_STATE with `is_migrating=True`
    (a `LocalEventManager` emits them on SIGTERM and SIGINT, a `PlatformEventManager` when the platform
    sends them) - as its cue to hand the state over: it saves one last time and releases its lease, so
    that a new owner, on any host, takes the state over at once instead of waiting for the lease to
    expire. (When that last save got no answer and may still land, the lease is left to expire instead,
    so that the next owner takes it over safely.) From then on this process writes nothing to the state:

    - `current_value` still works, but changes made to it are not saved. Later PERSIST_STATE events and
      `teardown()` write nothing and raise nothing; they log a warning when there are such changes.
    - `persist_state()` and `reset()` raise `StateOwnershipError` when they would have to write.
    - The state is never taken back behind the program's back, since the next owner may start at any
      moment. A program that catches the signal and carries on with the state calls `teardown()` and then
      `initialize()`: that takes the lease again (failing or waiting as `on_owned` says, if another
      process has it by then) and loads the last save. A program that wants to keep the state until its
      own `teardown()` whatever signal comes gives the state an event manager that does not handle
      signals (`LocalEventManager(handle_signals=False)`).

    A state without a lease (`lease_ttl=None`) has nothing to hand over and saves on as before; so does
    one with `persistence_enabled='explicit_only'`, which listens to no event (its lease goes at `teardown()`).

    Args:
        default_state: The state to start from when nothing is saved; deep-copied, never modified.
        persist_state_key: The key of the record holding the state.
        persistence_enabled: True to load and save automatically, 'explicit_only' to load and save only
            on `persist_state()` and `teardown()`, False to keep the state in memory only.
        persist_state_kvs_name: Name of the store to use.
        persist_state_kvs_id: Id of the store to use.
        persist_state_kvs_factory: An async callable returning the store to use: the library's
            `KeyValueStore`, or Crawlee's `crawlee.storages.KeyValueStore` (saved through Crawlee's own
            store, which cannot write conditionally: pass `lease_ttl=None` with it).
        logger: Where to log; `logging.getLogger("recoverable.state")` when omitted.
        key_value_store: The store to use, already open.
        event_manager: The event manager whose PERSIST_STATE events trigger saves.
        on_invalid: What to do when the saved record cannot be loaded (not JSON, its bytes no longer match the
            checksum saved with them, not the model, a renamed field): "raise" `StateValidationError` and
            leave it untouched; "previous": move it aside to `<key>.quarantine-<time>`, log a warning naming
            it, and load the newest version of the history that loads, written back as a new save (raises
            when none does); "reset": keep it as `<key>.invalid-<time>` and start from the default state.
        timeout: Longest a single load or save may take.
        lease_ttl: How long the ownership lease lasts between renewals; None takes no lease (then nothing stops
            two processes from saving the same state).
        on_owned: What `initialize()` does when another live process owns the state: "fail" raises
            `StateOwnershipError` at once, "wait" waits for the lease (up to `lease_wait_timeout`).
        lease_wait_timeout: Longest `on_owned="wait"` waits; None waits without end.
        history: How many earlier saved versions to keep beside the record, as `<key>.history.<n>`; 0 keeps
            none, and then the record is written exactly as without history (plain `application/json`).
            Each save stamps its content type with its number, trigger, time and checksum (see
            docs/history.md); `history()` lists the versions and `rollback()` restores one.
        schema_version: The version of the model, from 1. Records are saved with it, in their content type
            (`application/json; schema-version=N`; version 1 writes plain `application/json`). A record of
            a newer version raises `StateValidationError` and is left untouched, even with
            `on_invalid="reset"`.
        migrations: `migrations[n]` takes the JSON object (a dict) of a version-n record and returns that of
            version n+1. An older record is upgraded step by step when loaded, validated, and written back
            in the new form; the record as it was is kept under `<key>.schema-v<n>-backup`. A record saved
            without a version (by Crawlee, or by a state without `schema_version`) is of version 1.
        configuration: Settings for the defaults (store, event manager, timeout); from the environment
            when omitted.

    Raises:
        ConfigurationError: More than one store was specified, or an argument is invalid.
        InvalidKeyError: `persist_state_key` is not a valid key.
    """

    def __init__(
        self,
        *,
        default_state: TStateModel,
        persist_state_key: str,
        persistence_enabled: Literal[True, False, "explicit_only"] = True,
        persist_state_kvs_name: str | None = None,
        persist_state_kvs_id: str | None = None,
        persist_state_kvs_factory: Callable[[], Awaitable[KeyValueStore] | Awaitable[Any]] | None = None,
        logger: logging.Logger | None = None,
        key_value_store: KeyValueStore | None = None,
        event_manager: EventManager | None = None,
        on_invalid: Literal["raise", "reset", "previous"] = "raise",
        timeout: timedelta | None = None,
        lease_ttl: timedelta | None = DEFAULT_LEASE_TTL,
        on_owned: Literal["fail", "wait"] = "fail",
        lease_wait_timeout: timedelta | None = None,
        history: int = DEFAULT_HISTORY,
        schema_version: int | None = None,
        migrations: Mapping[int, Migration] | None = None,
        configuration: Configuration | None = None,
    ) -> None:
        arguments = lifecycle_arguments(locals())
        check_arguments(**arguments)
        self._history = check_history(history)
        if on_invalid == "previous" and not self._history:
            raise ConfigurationError(
                "on_invalid='previous' loads an older version from the state's history, and history=0 keeps "
                "none: keep some (history=3, say) or pass on_invalid='raise' or 'reset'"
            )
        self._codec = StateCodec(default_state, key=persist_state_key)
        self._schema = Schema(schema_version, migrations)
        self._default_state = self._codec.copy(default_state)
        self._codec.check_round_trip(self._default_state)
        self._setup(**arguments)

    @property
    def current_value(self) -> TStateModel:
        """The state; mutate it in place, it is what gets saved.

        `rollback()` replaces it with a new object: read it again afterwards rather than keeping it.

        Raises:
            StateNotInitializedError: `initialize()` has not been called yet.
        """
        return self._current_state()

    async def rollback(self, version: int) -> TStateModel:
        """Make saved version `version` (a number from `history()`) the state again, saved as a new save.

        The version is loaded as at a start (upgraded when it is of an older schema version, validated
        against the model), written over the record as a new save (trigger "rollback", fenced by the lease
        like any save, the record it replaces kept in the history, so a rollback can itself be rolled back),
        and becomes `current_value`, a new object. See docs/history.md.

        Returns:
            The state as restored (the new `current_value`).

        Raises:
            StateNotInitializedError: Persistence is disabled, or `initialize()` has not been called.
            StateHistoryError: No such version is kept, or its copy no longer matches its checksum.
            StateValidationError: The version does not load (not the model); nothing was written.
            StateOwnershipError: Another process owns the state now, or this process handed it over at a stop.
            StorageError: The store failed; the state in memory and in the store are as they were.
        """
        return await self._rollback(version)
