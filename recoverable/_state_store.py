"""Where a state is kept: the store a factory returns, and the stores a state must not be kept in."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from recoverable.errors import ConfigurationError
from recoverable.storages import KeyValueStore
from recoverable.storages._crawlee import (
    adapt_crawlee_key_value_store,
    crawlee_empties_default_store_in,
    is_crawlee_key_value_store,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import timedelta

__all__ = ["check_lease_possible", "check_not_emptied_by_crawlee", "store_from_factory"]


async def store_from_factory(factory: Callable[[], object], *, key: str, lease_ttl: timedelta | None) -> KeyValueStore:
    """The factory's store: the library's, or one of Crawlee for Python seen through the library's contract.

    Raises:
        ConfigurationError: The factory returned something else, or Crawlee's store while a lease is wanted.
    """
    made: object = factory()
    store = await made if inspect.isawaitable(made) else made  # an async factory, as documented, or a plain one
    if isinstance(store, KeyValueStore):
        return store
    if is_crawlee_key_value_store(store):
        adapted = await adapt_crawlee_key_value_store(store)
        check_lease_possible(adapted, "from persist_state_kvs_factory, Crawlee's store", key=key, lease_ttl=lease_ttl)
        return adapted
    raise ConfigurationError(
        "persist_state_kvs_factory must return a KeyValueStore (the library's, or Crawlee's "
        f"crawlee.storages.KeyValueStore), not {type(store).__name__}"
    )


def check_not_emptied_by_crawlee(kvs: KeyValueStore, *, key: str) -> None:
    """Refuse the default store of a folder that a Crawlee crawler of this program will empty when it runs.

    Raises:
        ConfigurationError: It is that store; the message says where to keep the state instead.
    """
    storage_dir = getattr(kvs.storage_client, "storage_dir", None)
    folder = getattr(kvs.client, "path", None)
    if kvs.name is not None or not isinstance(storage_dir, Path) or not isinstance(folder, str):
        return
    # The folder Crawlee's file system client keeps its default store in, which is also the library's.
    if Path(folder).resolve() != (storage_dir / "key_value_stores" / "default").resolve():
        return
    if not crawlee_empties_default_store_in(storage_dir):
        return
    raise ConfigurationError(
        f"state {key!r} would be kept in the default key-value store of {storage_dir}, which Crawlee "
        "empties when a crawler starts (its purge_on_start, on by default): the saved state would be lost at "
        "the next run. Keep the state in a named store (persist_state_kvs_name='my-crawl'), or turn Crawlee's "
        "purge off (CRAWLEE_PURGE_ON_START=0)"
    )


def check_lease_possible(kvs: KeyValueStore, what: str, *, key: str, lease_ttl: timedelta | None) -> None:
    """Refuse a store that cannot write conditionally while the state is to hold its one-owner lease.

    Raises:
        ConfigurationError: It cannot; the message names `lease_ttl=None` and the library's store.
    """
    if lease_ttl is None or kvs.client.conditional_writes:
        return
    raise ConfigurationError(
        f"state {key!r} would be saved in store {kvs.label!r} ({what}), which keeps no record versions "
        "and cannot write conditionally, so the state cannot hold its one-owner lease (lease_ttl of "
        f"{lease_ttl.total_seconds():g} s). Pass lease_ttl=None to save it there without a lease (two "
        "processes running at once then overwrite each other's saves, as with Crawlee's own RecoverableState), "
        "or return the library's recoverable.KeyValueStore.open(...) from the factory to keep the lease"
    )
