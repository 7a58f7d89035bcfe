"""Which store a command's STORE argument names, and running a command's work with its storage client open.

STORE is `default` (the default store, the one a program opens with no id, name or alias), a store name, or a
store id. A name is looked up first: when no store has that name, a reference that can be an id is tried as
one. Commands that write into a store (`set`, `import`, the destination of `copy`) create a store of that name
when there is none; the others never create one (the default store excepted, which always exists for them).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, TypeVar

from recoverable.cli._options import open_storage, storage_configuration
from recoverable.errors import InvalidStoreNameError, StoreNotFoundError
from recoverable.storages._validation import DEFAULT_ALIAS, validate_store_id, validate_store_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import click

    from recoverable.configuration import Configuration
    from recoverable.storages import KeyValueStoreClient, StorageClient

__all__ = ["open_store", "with_storage"]

_T = TypeVar("_T")


def _is(check: Callable[[str], object], reference: str) -> bool:
    try:
        check(reference)
    except InvalidStoreNameError:
        return False
    return True


async def open_store(client: StorageClient, reference: str, *, create: bool = False) -> KeyValueStoreClient:
    """Open the store `reference` names: `default`, a name (looked up first) or an id.

    Args:
        client: The storage client holding the store.
        reference: The STORE argument.
        create: Create a store of that name when no store has that name or id.

    Raises:
        InvalidStoreNameError: The reference is neither `default`, a store name nor a store id.
        StoreNotFoundError: No store has that name or id (and `create` is false or it is no name).
        StorageBackendError: The backend failed.
    """
    if reference == DEFAULT_ALIAS:
        return await client.open_key_value_store_client()
    is_name = _is(validate_store_name, reference)
    is_id = _is(validate_store_id, reference)
    if not is_name and not is_id:
        raise InvalidStoreNameError(
            f"{reference!r} names no store: a store is 'default', a name (1 to 63 letters, digits and hyphens) "
            "or an id (letters, digits and '-_.~'); `recoverable stores` lists them",
            store=reference,
        )
    if is_name:
        found = await client.find_key_value_store(name=reference)
        if found is not None:
            return await client.open_key_value_store_client(id=found)
    if is_id:
        try:
            return await client.open_key_value_store_client(id=reference)
        except StoreNotFoundError:
            if not (create and is_name):
                raise StoreNotFoundError(
                    f"no store is named {reference!r} or has it as its id; `recoverable stores` lists them",
                    store=reference,
                ) from None
    if create:
        return await client.open_key_value_store_client(name=reference)
    raise StoreNotFoundError(f"no store is named {reference!r}; `recoverable stores` lists them", store=reference)


def with_storage(
    ctx: click.Context,
    work: Callable[[StorageClient], Awaitable[_T]],
    *,
    configuration: Configuration | None = None,
) -> _T:
    """Build the command's storage client, run `work` with it in an event loop, and close it.

    Raises:
        ConfigurationError: A setting is missing or wrong.
        MissingDependencyError: The backend's extra is not installed.
        RecoverableError: What `work` raised.
    """
    settings = configuration if configuration is not None else storage_configuration(ctx)
    # What a client logs on its way (each retry of a request, say) is for programs' logs: a command says what
    # went wrong once, in its one line on stderr.
    logging.getLogger("recoverable").setLevel(logging.ERROR)

    async def run() -> _T:
        async with open_storage(settings) as client:
            return await work(client)

    return asyncio.run(run())
