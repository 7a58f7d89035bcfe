"""How messages name a folder of the file-system client, and the failures of the file system (see `_backend_errors`)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from recoverable.errors import StoreNotFoundError
from recoverable.storages._backend_errors import Backend

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["folder_backend"]


def folder_backend(folder: Path, *, of_store: bool = False) -> Backend:
    """The file system in `folder`, as the one error mapping of the storage clients sees it.

    Args:
        folder: Where the failing operations happen; messages say "in <folder>".
        of_store: Whether `folder` is a store's own folder: then a file found missing while the folder itself
            is gone (the store dropped by another process, or removed by hand) is reported as
            `StoreNotFoundError`.
    """

    def store_gone(
        exc: BaseException, _action: str, _what: str, store: str | None, key: str | None
    ) -> StoreNotFoundError | None:
        if not isinstance(exc, FileNotFoundError) or folder.is_dir():
            return None
        return StoreNotFoundError(
            f"key-value store {store!r} no longer exists in {folder} (it was dropped or removed)", store=store, key=key
        )

    return Backend(
        where=f"in {folder}",
        hint=_hint,
        failures=(OSError,),
        cause=_cause,
        special=store_gone if of_store else None,
    )


def _hint(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "free some disk space"
    return "check that the folder exists and is writable"


def _cause(exc: BaseException) -> str:
    """The system's words for the failure ("No space left on device"), without the path the message gives."""
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
