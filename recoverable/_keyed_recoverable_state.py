"""`KeyedRecoverableState`: a dict of str keys to values that is saved as what changed, not as what exists."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pydantic import ValidationError

from recoverable._history import DEFAULT_HISTORY
from recoverable._keyed_entries import ValueEntries
from recoverable._keyed_state import KeyedState
from recoverable._ownership import DEFAULT_LEASE_TTL
from recoverable._schema import Migration, Schema
from recoverable._state_arguments import lifecycle_arguments
from recoverable.errors import ConfigurationError, InvalidKeyError, SerializationError

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import timedelta

    from recoverable.configuration import Configuration
    from recoverable.events import EventManager
    from recoverable.storages import KeyValueStore

__all__ = ["KeyedRecoverableState"]

TValue = TypeVar("TValue")
_D = TypeVar("_D")


class KeyedRecoverableState(KeyedState[dict[str, TValue]], MutableMapping[str, TValue]):  # type: ignore[type-var]
    _noun = "keys"

    """A mapping of str keys to values, saved as the entries that changed since the last save.

    For state that grows with the work: per-domain counters, per-URL results. A save serialises and writes
    only the entries set or deleted since the last save (one changelog record), so its cost follows the
    change, not the size; now and then a save also rewrites a bounded share of the snapshot, so that the
    changelog stays short (docs/keyed-state.md has the layout and the figures).

    ```python
    domains = KeyedRecoverableState(value_type=Domain, persist_state_key="DOMAINS", persist_state_kvs_name="crawl")
    async with domains:
        async with domains.edit("example.com") as d:  # created as Domain() when missing
            d.pages += 1
        domains["other.org"] = Domain(pages=3)
    ```

    What counts as a change: `edit()`, `state[key] = value`, `del state[key]`, and the methods built on them
    (`pop`, `setdefault`, `update`, `popitem`, `clear`). A value is saved as it was when it was assigned or
    when its `edit()` block ended (its JSON is made then); a save while the block runs writes the value as
    the block found it. A value taken with `get()` or `state[key]`, or kept after assigning it, and changed
    in place outside `edit()` is NOT seen: no save writes it on purpose (a later compaction of its part may
    happen to, or not), so change values inside `edit()`. `verify_untracked=True` finds the places that do
    not (for tests).

    It is a `MutableMapping`: `in`, `len`, iteration, `keys()`, `values()`, `items()`, `get()` work as on a
    dict (and, as on a dict, adding or deleting keys while iterating is an error). The lifecycle, the events
    it saves on, the lease and the hand-over at a stop are those of `RecoverableState`.

    Args:
        value_type: The type of the values: a Pydantic model, a dataclass, or any type pydantic can validate
            and serialise (int, dict[str, int], ...).
        persist_state_key: The key of the manifest record; the other records are named after it, so it is
            at most 960 characters.
        default_factory: Makes the value `edit()` starts from when a key is missing; `value_type()` when
            omitted.
        verify_untracked: At every save, compare every value with what was saved last and log a warning naming
            the keys changed without `edit()` or assignment. Costs a serialisation of the whole state per save
            and a copy of its JSON in memory: for tests and debugging.
        persistence_enabled: As for `RecoverableState`.
        persist_state_kvs_name: Name of the store to use.
        persist_state_kvs_id: Id of the store to use.
        persist_state_kvs_factory: An async callable returning the store to use.
        logger: Where to log; `logging.getLogger("recoverable.state")` when omitted.
        key_value_store: The store to use, already open.
        event_manager: The event manager whose PERSIST_STATE events trigger saves.
        on_invalid: What to do when the saved state cannot be loaded: "raise", or "reset" (start empty; the
            manifest is kept as `<key>.invalid-<time>`, and the records it names are kept while it exists).
        timeout: Longest a single load or save may take.
        lease_ttl: As for `RecoverableState`; None takes no lease.
        on_owned: As for `RecoverableState`: "fail" or "wait" when another live process owns the state.
        lease_wait_timeout: Longest `on_owned="wait"` waits; None waits without end.
        schema_version: The version of the values' model, from 1; every record carries it.
        migrations: `migrations[n]` takes the JSON object (a dict) of a version-n value and returns that of
            version n+1. Records of older versions are upgraded value by value when loaded, and rewritten in
            the new form as the snapshot is compacted.
        configuration: Settings for the defaults; from the environment when omitted.

    Raises:
        ConfigurationError: An argument is invalid, or pydantic cannot handle `value_type`.
        InvalidKeyError: `persist_state_key` is not a valid key, or is too long.
    """

    def __init__(
        self,
        *,
        value_type: type[TValue] | Any,
        persist_state_key: str,
        default_factory: Callable[[], TValue] | None = None,
        verify_untracked: bool = False,
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
        if default_factory is not None and not callable(default_factory):
            raise ConfigurationError(
                f"default_factory must be a callable returning a new value, not {type(default_factory).__name__}"
            )
        if not isinstance(verify_untracked, bool):
            raise ConfigurationError(f"verify_untracked must be True or False, not {verify_untracked!r}")
        values_schema = Schema(schema_version, migrations)
        self._values: ValueEntries[TValue] = ValueEntries(value_type, values_schema, key=str(persist_state_key))
        self._entries = self._values
        self._default_factory: Callable[[], TValue] = default_factory or value_type
        self._verify_untracked = verify_untracked
        self._saved_values: dict[str, bytes] = {}
        self._editing: dict[str, int] = {}
        """The keys inside an `edit()` block now, with how many blocks: still changing, so not untracked."""
        self._setup_keyed(
            kind="keyed",
            history=history,
            values_schema=values_schema,
            arguments=lifecycle_arguments(locals()),
        )

    # --- changing entries ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def edit(self, key: str) -> AsyncIterator[TValue]:
        """Change the value of `key` in place; it is saved at the next save.

        ```python
        async with domains.edit("example.com") as domain:
            domain.pages += 1
        ```

        A missing key is created first, with `default_factory()` (or `value_type()`). The key is marked
        changed when the block ends, even when it raises (the value in memory may be changed already).

        Raises:
            InvalidKeyError: `key` is not a str.
            ConfigurationError: The key is missing and the value cannot be made without arguments: pass
                `default_factory`.
            StateNotInitializedError: `initialize()` has not been called yet.
        """
        part = self._part_of(self._checked(key))
        if key not in part.entries:
            try:
                made = self._default_factory()
            except (TypeError, ValidationError) as exc:
                raise ConfigurationError(
                    f"a new value for key {key!r} of state {self._key!r} cannot be made by calling "
                    f"{getattr(self._default_factory, '__name__', self._default_factory)}() ({exc}): pass "
                    "default_factory= to make one"
                ) from exc
            self[key] = made
            part = self._part_of(key)
        else:
            # The value as the block finds it is what a save made while the block runs must write: a compaction
            # writes values as they are in memory, and this changelog entry, applied over it, takes it back.
            self._added(key, part, self._values.piece(key, part.entries[key]), new=False)
        self._editing[key] = self._editing.get(key, 0) + 1
        try:
            yield part.entries[key]
        finally:
            if self._editing[key] == 1:
                del self._editing[key]
            else:
                self._editing[key] -= 1
            now = self._part_of(key)  # the part may have split meanwhile
            if key in now.entries:  # else it was deleted in the block, and that was noted
                self._added(key, now, self._values.piece(key, now.entries[key]), new=False)

    def __setitem__(self, key: str, value: TValue) -> None:
        """Set the value of `key`; it is saved at the next save.

        Raises:
            InvalidKeyError: `key` is not a str.
            SerializationError: `value` is not of `value_type` (checked for models and dataclasses).
        """
        model = self._values.model_type
        if model is not None and not isinstance(value, model):
            raise SerializationError(
                f"the value of key {key!r} of state {self._key!r} must be a {model.__name__}, not "
                f"{type(value).__name__}",
                key=self._key,
            )
        part = self._part_of(self._checked(key))
        new = key not in part.entries
        part.entries[key] = value
        self._added(key, part, self._values.piece(key, value), new=new)

    def __delitem__(self, key: str) -> None:
        """Delete `key`; the deletion is saved at the next save.

        Raises:
            KeyError: There is no such key.
        """
        part = self._part_holding(key) if isinstance(key, str) else None
        if part is None or key not in part.entries:
            raise KeyError(key)
        del part.entries[key]
        self._removed(key, part)

    # --- reading entries -------------------------------------------------------------------------

    def __getitem__(self, key: str) -> TValue:
        """The value of `key` (changes made to it in place are not seen: use `edit()`).

        Raises:
            KeyError: There is no such key.
        """
        part = self._part_holding(key) if isinstance(key, str) else None
        if part is None or key not in part.entries:
            raise KeyError(key)
        value: TValue = part.entries[key]
        return value

    @overload
    def get(self, key: str, /) -> TValue | None: ...
    @overload
    def get(self, key: str, /, default: TValue | _D) -> TValue | _D: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        """The value of `key`, or `default` (changes made to it in place are not seen: use `edit()`)."""
        part = self._part_holding(key) if isinstance(key, str) else None
        return default if part is None else part.entries.get(key, default)

    def __contains__(self, key: object) -> bool:
        part = self._part_holding(key) if isinstance(key, str) else None
        return part is not None and key in part.entries

    def popitem(self) -> tuple[str, TValue]:
        """Remove and return an entry (any); the deletion is saved at the next save.

        Raises:
            KeyError: The state is empty.
        """
        key, value = self._pop_any()
        return key, value

    def __iter__(self) -> Iterator[str]:
        return self._iterate()

    # --- internals -------------------------------------------------------------------------------

    def _checked(self, key: object) -> str:
        if not isinstance(key, str):
            raise InvalidKeyError(f"keys of state {self._key!r} are str, not {type(key).__name__}", key=self._key)
        return key

    def _loaded(self) -> None:
        if self._verify_untracked:
            self._saved_values = {
                key: self._values.dump_value(value) for part in self._parts for key, value in part.entries.items()
            }

    def _verify_wanted(self) -> bool:
        return self._verify_untracked

    def _verify(self, changed: set[Any]) -> None:
        untracked = []
        now: dict[str, bytes] = {}
        for part in self._parts:
            for key, value in part.entries.items():
                data = now[key] = self._values.dump_value(value)
                if key not in changed and key not in self._editing and self._saved_values.get(key) != data:
                    untracked.append(key)
        if untracked:
            self._log.warning(
                "state %r: the value(s) of %s changed without edit() or assignment since the last save, so the "
                "change is not saved (verify_untracked=True); change values inside `async with state.edit(key)`",
                self._key,
                ", ".join(map(repr, sorted(untracked)[:20]))
                + (f" and {len(untracked) - 20} more" if len(untracked) > 20 else ""),  # noqa: PLR2004
            )
        self._saved_values = now
