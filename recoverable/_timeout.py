"""The time bound of a state's storage operations, shared by `RecoverableState` and its lease."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

from recoverable.errors import StateTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from datetime import timedelta

__all__ = ["bounded"]

_T = TypeVar("_T")


async def bounded(work: Awaitable[_T], *, within: timedelta, what: str) -> _T:
    """Await `work`; past `within`, cancel it and raise `StateTimeoutError` saying `what` took too long."""
    try:
        async with asyncio.timeout(within.total_seconds()):
            return await work
    except TimeoutError:
        raise StateTimeoutError(
            f"{what} took longer than {within.total_seconds():g} s; check the storage backend, or raise the "
            "timeout (timeout= or RECOVERABLE_STATE_TIMEOUT_SECS)"
        ) from None
