"""Data structures shared by the `KeyValueStore` facade and every storage client."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import datetime  # noqa: TC003 - pydantic needs it at runtime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["KeyInfo", "KeyValueStoreMetadata", "Record", "StoredRecord", "new_store_id"]

_ID_ALPHABET = string.ascii_letters + string.digits


def new_store_id() -> str:
    """Return a new random store id: 17 letters and digits, like the Apify platform's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


class KeyValueStoreMetadata(BaseModel):
    """What a store is: its id, its name (None for unnamed stores) and its timestamps.

    The JSON form (`model_dump(by_alias=True)`) is the store object of the key-value store API v2.
    """

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    id: str
    name: str | None = None
    user_id: str | None = Field(default=None, alias="userId")
    created_at: datetime = Field(alias="createdAt")
    modified_at: datetime = Field(alias="modifiedAt")
    accessed_at: datetime = Field(alias="accessedAt")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One entry of a key listing.

    Attributes:
        key: The record key.
        size: Size of the stored value in bytes.
    """

    key: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as a storage client holds it: bytes, their content type and the record's version.

    Attributes:
        key: The record key.
        value: The stored bytes, exactly as written.
        content_type: The MIME type the bytes were written with.
        version: An opaque token that changes whenever the record is written; compare it only for equality.
    """

    key: str
    value: bytes
    content_type: str
    version: str

    @property
    def size(self) -> int:
        """Size of the stored value in bytes."""
        return len(self.value)


@dataclass(frozen=True, slots=True)
class Record:
    """A record read through the `KeyValueStore` facade, its value decoded from its content type.

    Attributes:
        key: The record key.
        value: The decoded value: JSON as Python objects, text as `str`, anything else as `bytes`.
        content_type: The MIME type the record was written with.
        version: The version token to pass as `if_version=` for a conditional write.
        size: Size of the stored bytes.
    """

    key: str
    value: Any
    content_type: str
    version: str
    size: int
