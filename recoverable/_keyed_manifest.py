"""The manifest of a keyed state: the one record that names the records holding its entries.

A keyed state (`KeyedRecoverableState`, `RecoverableSet`) is kept in a store as

- the manifest, under the state's own key: JSON naming everything below; every save ends by writing it,
  conditionally on the version this owner wrote last, so it is the save's commit and the lease's fence;
- snapshot parts, `<key>.~part.<writer>.<seq>.<depth>.<index>`: the entries of one hash region (see
  `_keyed_parts.py`) as they were at save `upto`;
- changelog records, `<key>.~log.<writer>.<seq>`: the entries set and deleted by save `seq`.

The state is: every part, with the changelog records of later saves applied over it, in order. A record is
written once, under a key no other write uses (`writer` is a token drawn at each load), and never changed;
until the manifest naming it lands, it is nothing. docs/keyed-state.md describes the layout for users.
"""

from __future__ import annotations

import re
import secrets
from functools import partial
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from recoverable._keyed_parts import Region

__all__ = ["FORMAT", "Kind", "LogRef", "Manifest", "PartRef", "RecordKeys"]

FORMAT = "recoverable.keyed-state/1"
"""What a manifest says it is, so that a reader can tell it from any other record."""

Kind = Literal["keyed", "set"]


class PartRef(BaseModel):
    """One part of the snapshot: its region, its record (None for an empty part never written) and its save."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    depth: int = Field(ge=0)
    index: int = Field(ge=0)
    record: str | None
    upto: int = Field(ge=0)
    """The last save whose changes the part holds: changelog records of later saves are applied over it."""
    count: int = Field(ge=0)
    fields: str | None = None
    """A digest of the value model's fields when the record was written (see `KeyedValues.fields`)."""

    @property
    def region(self) -> Region:
        return (self.depth, self.index)


class LogRef(BaseModel):
    """One changelog record: the save that wrote it, its record and how many entries it holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    record: str
    count: int = Field(ge=0)
    fields: str | None = None


class Manifest(BaseModel):
    """The manifest record of a keyed state."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["recoverable.keyed-state/1"] = "recoverable.keyed-state/1"
    kind: Kind
    seq: int = Field(default=0, ge=0)
    """The number of the last save (0: none yet)."""
    count: int = Field(default=0, ge=0)
    """How many entries the state holds."""
    salt: str = Field(default_factory=partial(secrets.token_hex, 16), pattern=r"^[0-9a-f]{32}$")
    """The key of the hash that places an entry in its part (`key_hash`), drawn when the state is made."""
    parts: list[PartRef] = Field(default_factory=lambda: [PartRef(depth=0, index=0, record=None, upto=0, count=0)])
    log: list[LogRef] = Field(default_factory=list)

    def records(self) -> set[str]:
        """The keys of every record the manifest names."""
        return {part.record for part in self.parts if part.record is not None} | {entry.record for entry in self.log}


class RecordKeys:
    """The keys of the records of one keyed state, for one writer (a token drawn per load).

    Args:
        key: The state's key (the manifest's).
    """

    SUFFIX_ROOM = 64
    """How many characters the longest record key adds to the state's key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.writer = secrets.token_hex(4)
        self._pattern = re.compile(re.escape(key) + r"\.~(?:part\.[0-9a-f]{8}\.\d+\.\d+\.\d+|log\.[0-9a-f]{8}\.\d+)")

    @property
    def prefix(self) -> str:
        """What every record key of the state starts with."""
        return f"{self.key}.~"

    def part(self, seq: int, region: Region) -> str:
        return f"{self.key}.~part.{self.writer}.{seq}.{region[0]}.{region[1]}"

    def log(self, seq: int) -> str:
        return f"{self.key}.~log.{self.writer}.{seq}"

    def is_ours(self, key: str) -> bool:
        """Whether `key` has the form of a record of this state (any writer's)."""
        return self._pattern.fullmatch(key) is not None
