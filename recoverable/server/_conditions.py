"""Conditional requests: `If-Match` and `If-None-Match` on record writes and deletes (RFC 9110, strong comparison)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from recoverable._kv_api import ERROR_INVALID_REQUEST, parse_etag_list
from recoverable.errors import VersionConflictError
from recoverable.server._errors import ApiError

if TYPE_CHECKING:
    from starlette.requests import Request

    from recoverable.storages._base import KeyValueStoreClient
    from recoverable.storages._models import StoredRecord

__all__ = ["conditional_delete", "conditional_put"]


class _Absent(enum.Enum):
    ABSENT = enum.auto()


_ABSENT = _Absent.ABSENT
"""The conditional header was not sent."""

_Condition = _Absent | list[str] | None
"""A parsed If-Match / If-None-Match: absent, `*` (None), or the versions it lists."""


async def conditional_put(
    store: KeyValueStoreClient, key: str, value: bytes, content_type: str, request: Request
) -> str:
    """Write a record as the request's conditions allow; return its new version.

    A single version or `*` is passed to the store as one conditional write; anything else is checked
    against the record read first, then written conditionally on the version read.

    Raises:
        ApiError: A conditional header is malformed (400).
        VersionConflictError: A condition does not hold (the server answers 412).
    """
    if_match = _conditions(request, "if-match")
    if_none_match = _conditions(request, "if-none-match")
    if if_match is _ABSENT and if_none_match is _ABSENT:
        return await store.set_record(key=key, value=value, content_type=content_type)
    if isinstance(if_match, list) and len(if_match) == 1 and if_none_match is _ABSENT:
        return await store.set_record(key=key, value=value, content_type=content_type, if_version=if_match[0])
    if if_match is _ABSENT and if_none_match is None:
        return await store.set_record(key=key, value=value, content_type=content_type, if_absent=True)
    current = await store.get_record(key=key)
    _check(key, current, if_match, if_none_match)
    if current is None:
        return await store.set_record(key=key, value=value, content_type=content_type, if_absent=True)
    return await store.set_record(key=key, value=value, content_type=content_type, if_version=current.version)


async def conditional_delete(store: KeyValueStoreClient, key: str, request: Request) -> bool:
    """Delete a record as the request's `If-Match` allows; return whether there was one.

    Raises:
        ApiError: The header is malformed (400).
        VersionConflictError: The condition does not hold (the server answers 412).
    """
    if_match = _conditions(request, "if-match")
    if if_match is _ABSENT:
        return await store.delete_record(key=key)
    if isinstance(if_match, list) and len(if_match) == 1:
        return await store.delete_record(key=key, if_version=if_match[0])
    current = await store.get_record(key=key)
    _check(key, current, if_match, _ABSENT)
    if current is None:
        return False
    return await store.delete_record(key=key, if_version=current.version)


def _check(key: str, current: StoredRecord | None, if_match: _Condition, if_none_match: _Condition) -> None:
    """Evaluate If-Match and If-None-Match against the current record."""
    version = current.version if current is not None else None
    if if_match is not _ABSENT and (version is None or (isinstance(if_match, list) and version not in if_match)):
        raise VersionConflictError(
            f"record {key!r} has version {version}, which If-Match does not list", key=key, actual=version
        )
    if (
        if_none_match is not _ABSENT
        and version is not None
        and (if_none_match is None or (isinstance(if_none_match, list) and version in if_none_match))
    ):
        raise VersionConflictError(
            f"record {key!r} exists with version {version}, which If-None-Match excludes", key=key, actual=version
        )


def _conditions(request: Request, header: str) -> _Condition:
    """`_ABSENT` when the header is absent, None for `*`, else the list of versions it names."""
    value = request.headers.get(header)
    if value is None:
        return _ABSENT
    try:
        return parse_etag_list(value)
    except ValueError as exc:
        raise ApiError(400, ERROR_INVALID_REQUEST, f"the {header} header is not valid: {exc}") from None
