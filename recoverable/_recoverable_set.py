"""`RecoverableSet`: a set of str or int items (the URLs a crawler has seen) saved as what changed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from recoverable._history import DEFAULT_HISTORY
from recoverable._keyed_entries import ItemEntries
from recoverable._keyed_parts import MAX_INT_BITS
from recoverable._keyed_state import KeyedState
from recoverable._ownership import DEFAULT_LEASE_TTL
from recoverable._schema import Schema
from recoverable._state_arguments import lifecycle_arguments
from recoverable.errors import InvalidKeyError

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable
    from datetime import timedelta

    from recoverable.configuration import Configuration
    from recoverable.events import EventManager
    from recoverable.storages import KeyValueStore

__all__ = ["RecoverableSet"]

TItem = TypeVar("TItem", str, int)


class RecoverableSet(KeyedState[set[TItem]], MutableSet[TItem], Generic[TItem]):  # type: ignore[type-var]
    _noun = "items"

    """A set of str (or int) items, saved as the items added and removed since the last save.

    For the URLs a crawler has seen, the ids it has handled: a save writes only what changed since the last
    one, so its cost follows the change, not the size (docs/keyed-state.md).

    ```python
    seen = RecoverableSet(persist_state_key="SEEN", persist_state_kvs_name="crawl")
    async with seen:
        if url not in seen:
            seen.add(url)
    ```

    It is a `MutableSet`: `add`, `discard`, `remove`, `update`, `in`, `len` and iteration work as on a set,
    and so do the comparisons and operators, which return plain sets. Items are immutable, so every change
    goes through these methods and is saved. The lifecycle, the events it saves on, the lease and the
    hand-over at a stop are those of `RecoverableState`.

    Args:
        persist_state_key: The key of the manifest record; the other records are named after it, so it is
            at most 960 characters.
        item_type: `str` (the default) or `int`.
        persistence_enabled: As for `RecoverableState`.
        persist_state_kvs_name: Name of the store to use.
        persist_state_kvs_id: Id of the store to use.
        persist_state_kvs_factory: An async callable returning the store to use.
        logger: Where to log; `logging.getLogger("recoverable.state")` when omitted.
        key_value_store: The store to use, already open.
        event_manager: The event manager whose PERSIST_STATE events trigger saves.
        on_invalid: What to do when the saved set cannot be loaded: "raise", or "reset" (start empty; the
            manifest is kept as `<key>.invalid-<time>`, and the records it names are kept while it exists).
        timeout: Longest a single load or save may take.
        lease_ttl: As for `RecoverableState`; None takes no lease.
        on_owned: As for `RecoverableState`: "fail" or "wait" when another live process owns the state.
        lease_wait_timeout: Longest `on_owned="wait"` waits; None waits without end.
        configuration: Settings for the defaults; from the environment when omitted.

    Raises:
        ConfigurationError: An argument is invalid (`item_type` is neither str nor int, say).
        InvalidKeyError: `persist_state_key` is not a valid key, or is too long.
    """

    def __init__(
        self,
        *,
        persist_state_key: str,
        item_type: type[TItem] = str,  # type: ignore[assignment]
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
        configuration: Configuration | None = None,
    ) -> None:
        self._entries = ItemEntries(item_type)
        self._item_type: type[TItem] = item_type
        self._setup_keyed(
            kind="set",
            history=history,
            values_schema=Schema(None, None),
            arguments=lifecycle_arguments(locals()),
        )

    def add(self, item: TItem) -> None:
        """Add `item`; it is saved at the next save.

        Raises:
            InvalidKeyError: `item` is not of `item_type`.
        """
        if not self._fits(item):
            raise InvalidKeyError(
                f"items of state {self._key!r} are {self._item_type.__name__}, not {type(item).__name__}",
                key=self._key,
            )
        if isinstance(item, int) and item.bit_length() > MAX_INT_BITS:
            raise InvalidKeyError(
                f"an int item of {item.bit_length()} bits cannot be saved in state {self._key!r}: JSON readers "
                f"refuse numbers of more than about 4,200 digits ({MAX_INT_BITS} bits); store it as a str",
                key=self._key,
            )
        part = self._part_of(item)
        if item not in part.entries:
            part.entries.add(item)
            self._added(item, part)

    def discard(self, item: TItem) -> None:
        """Remove `item` when it is in the set; the removal is saved at the next save."""
        if self._fits(item):
            part = self._part_holding(item)
            if part is not None and item in part.entries:
                part.entries.remove(item)
                self._removed(item, part)

    def update(self, *items: Iterable[TItem]) -> None:
        """Add every item of every iterable given.

        Raises:
            InvalidKeyError: An item is not of `item_type` (the items before it were added).
        """
        for iterable in items:
            for item in iterable:
                self.add(item)

    def __contains__(self, item: object) -> bool:
        if not self._fits(item):
            return False
        part = self._part_holding(item)
        return part is not None and item in part.entries

    def pop(self) -> TItem:
        """Remove and return an item (any); the removal is saved at the next save.

        Raises:
            KeyError: The set is empty.
        """
        item: TItem = self._pop_any()[0]
        return item

    def __iter__(self) -> Iterator[TItem]:
        return self._iterate()

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set[Any]:
        """What the set operators (`&`, `|`, `-`, `^`) return: a plain set."""
        return set(it)

    def _fits(self, item: object) -> bool:
        return isinstance(item, self._item_type) and not isinstance(item, bool)
