"""The history of a state record: its last saved versions, kept beside it, what each one was, and rolling back.

A state with `history=N` (N > 0) keeps a copy of each of its last N saves. Right after a save lands, the
record is copied (`KeyValueStoreClient.copy_record`, which most storage clients do without moving the
bytes through the process: a hard link, a copy inside the server) to a key that says what the save was:

    <key>.history.<save>.<trigger>.<saved at, UTC>.<checksum>
    CRAWL_STATE.history.17.periodic.20261130T170000123456Z.0a1b2c3d

and the copy that falls out of the last N is deleted. The record under `<key>` is written exactly as
without a history (its content type included), so Crawlee and any other reader see no difference; and a
listing of the store's keys tells the whole history without reading a record.

The checksum is the CRC-32 of the bytes. A kept copy whose bytes no longer match it was damaged (or changed
by hand) and is never loaded or rolled back to.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, get_args

from recoverable.errors import ConfigurationError, InvalidKeyError, StateHistoryError, VersionConflictError

if TYPE_CHECKING:
    from recoverable.storages._base import KeyValueStoreClient
    from recoverable.storages._models import StoredRecord

__all__ = [
    "DEFAULT_HISTORY",
    "MAX_HISTORY",
    "KeptVersion",
    "SavedVersion",
    "Trigger",
    "check_history",
    "check_state_key",
    "checksum_of",
    "history_prefix",
    "kept_key",
    "kept_versions",
    "read_version",
    "rollback_record",
    "saved_versions",
]

Trigger = Literal["periodic", "migrating", "teardown", "manual", "rollback", "upgrade"]
"""What made a save: a PERSIST_STATE event, a migration (or another stop of the process), `teardown()`,
`persist_state()`, a rollback (or the fall-back to a good version of `on_invalid="previous"`), or the
write-back of a record upgraded to a newer schema version."""

DEFAULT_HISTORY = 3
"""How many saved versions a `RecoverableState` keeps unless `history=` says otherwise."""
MAX_HISTORY = 1000
"""The most saved versions a state may keep (`history=`)."""

_INFIX = ".history."
_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_MAX_SAVE_DIGITS = 15
"""Save numbers have at most 15 digits: a copy planted with a larger one is not taken for a copy at all."""
_TAIL = re.compile(
    rf"(?P<save>[1-9][0-9]{{0,{_MAX_SAVE_DIGITS - 1}}})\.(?P<trigger>{'|'.join(get_args(Trigger))})\."
    r"(?P<time>[0-9]{8}T[0-9]{12}Z)\.(?P<checksum>[0-9a-f]{8})"
)
COPY_KEY = re.compile(r".*" + re.escape(_INFIX) + _TAIL.pattern, re.DOTALL)
"""The form of the key of a copy: a state's own key may not have it (`check_state_key`)."""
_PLATFORM_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.'()")
_LONG_KEY = 100
"""A state key longer than this (in characters the Apify platform accepts; any other counts as its UTF-8 bytes
percent-encoded, three characters each) is named in its
copies' keys by its first characters and a hash of all of it: copy keys stay short enough for every store (the
platform's 256 characters, Crawlee's file names, no `.keys/` file on the file system) and long keys that share
their first characters keep histories of their own."""


@dataclass(frozen=True)
class SavedVersion:
    """One saved version of a state's record, as `RecoverableState.history()` and `recoverable history` list it.

    Attributes:
        version: The number of the save that wrote it, counting from 1 for the state's first save with a
            history; 0 for a current record the history knows nothing of (written with `history=0`, by
            Crawlee, by hand, or by a save whose copy to the history was cut short).
        key: The record holding it: the state's own key for the current version when the history has no copy
            of it, else `<key>.history.<version>...`.
        current: Whether its bytes are those under the state's key, the record a load gets.
        saved_at: When it was saved (UTC); None when unknown.
        trigger: What made the save (see `Trigger`); None when unknown.
        size: Its size in bytes.
        checksum: The CRC-32 of its bytes as 8 hex digits, as saved with it (computed from the bytes for a
            current record the history has no copy of).
    """

    version: int
    key: str
    current: bool
    saved_at: datetime | None
    trigger: str | None
    size: int
    checksum: str


@dataclass(frozen=True)
class KeptVersion:
    """A copy the history keeps, as its key describes it."""

    version: int
    key: str
    trigger: str
    saved_at: datetime
    checksum: str
    size: int

    def describe(self, *, current: bool) -> SavedVersion:
        """This copy as a saved version of the state."""
        return SavedVersion(
            version=self.version,
            key=self.key,
            current=current,
            saved_at=self.saved_at,
            trigger=self.trigger,
            size=self.size,
            checksum=self.checksum,
        )


def checksum_of(data: bytes) -> str:
    """The checksum kept with a saved version: CRC-32, quick enough to cost a save next to nothing."""
    return f"{zlib.crc32(data):08x}"


def history_prefix(key: str) -> str:
    """What the keys of every copy kept of the state saved under `key` start with.

    The state's key itself, or for a long key (see `_LONG_KEY`) its first characters and a hash of all of it.
    """
    if (
        sum(1 if char in _PLATFORM_SAFE else 3 * len(char.encode("utf-8", "surrogatepass")) for char in key)
        <= _LONG_KEY
    ):
        return key + _INFIX
    start = "".join(char for char in key[:40] if char in _PLATFORM_SAFE)
    digest = hashlib.blake2s(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{start}.{digest}{_INFIX}"


def check_state_key(key: str) -> None:
    """Refuse a state key that has the form of a copy of another state's history (it would be taken for one).

    Raises:
        InvalidKeyError: It has that form.
    """
    if COPY_KEY.fullmatch(key):
        raise InvalidKeyError(
            f"persist_state_key {key!r} has the form of a copy kept in the history of another state "
            "(`<key>.history.<save>.<trigger>.<time>.<checksum>`), and would be taken for one: use another key",
            key=key,
        )


def kept_key(key: str, version: int, trigger: Trigger, data: bytes, saved_at: datetime | None = None) -> str:
    """The key of the copy of save number `version` of `data`, made by `trigger` at `saved_at` (now by default)."""
    when = (saved_at or datetime.now(UTC)).strftime(_TIME_FORMAT)
    return f"{history_prefix(key)}{version}.{trigger}.{when}.{checksum_of(data)}"


async def kept_versions(client: KeyValueStoreClient, key: str) -> list[KeptVersion]:
    """The copies the history of the state under `key` keeps, newest first (read from the keys alone)."""
    prefix = history_prefix(key)
    found: list[KeptVersion] = []
    async for info in client.iterate_keys(prefix=prefix):
        match = _TAIL.fullmatch(info.key, len(prefix))
        if match is None:
            continue  # another record whose key happens to start the same way
        try:
            saved_at = datetime.strptime(match["time"], _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            continue  # no date: not a copy this library made
        found.append(
            KeptVersion(
                version=int(match["save"]),
                key=info.key,
                trigger=match["trigger"],
                saved_at=saved_at,
                checksum=match["checksum"],
                size=info.size,
            )
        )
    found.sort(key=lambda kept: (kept.version, kept.saved_at), reverse=True)
    return found


async def _listing(client: KeyValueStoreClient, key: str) -> tuple[list[KeptVersion], StoredRecord | None]:
    """The copies the history of the state under `key` keeps, newest first, and its current record."""
    return await kept_versions(client, key), await client.get_record(key=key)


def _described(kept: list[KeptVersion], current: StoredRecord | None, key: str) -> list[SavedVersion]:
    """The saved versions a listing tells of, newest first: the current one, then the older ones kept."""
    if current is None:
        return [version.describe(current=False) for version in kept]
    checksum = checksum_of(current.value)
    if kept and kept[0].checksum == checksum:
        return [kept[0].describe(current=True), *(version.describe(current=False) for version in kept[1:])]
    unknown = SavedVersion(
        version=0,
        key=key,
        current=True,
        saved_at=None,
        trigger=None,
        size=len(current.value),
        checksum=checksum,
    )
    return [unknown, *(version.describe(current=False) for version in kept)]


async def saved_versions(client: KeyValueStoreClient, key: str) -> list[SavedVersion]:
    """Every saved version of the state under `key`, newest first: the current one, then the older ones kept."""
    return _described(*await _listing(client, key), key)


def damage_of(checksum: str, stored: StoredRecord) -> str | None:
    """Why a kept copy cannot be trusted (its bytes no longer match `checksum`, kept with it); None when it can."""
    actual = checksum_of(stored.value)
    if actual == checksum:
        return None
    return (
        f"does not match the checksum saved with it ({checksum}; its bytes give {actual}): it was damaged, or "
        "changed by hand"
    )


async def read_version(client: KeyValueStoreClient, key: str, version: int) -> tuple[SavedVersion, StoredRecord]:
    """Saved version `version` of the state under `key` (0: the current record), and its record.

    Raises:
        StateHistoryError: No such version is kept (the message lists those that are), or the copy kept no
            longer matches its checksum.
    """
    _check_version(version, key)
    return await _read(client, key, version, *await _listing(client, key))


def _check_version(version: object, key: str) -> None:
    """Refuse a version that is no save number.

    Raises:
        StateHistoryError: It is not an int of at least 0.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise StateHistoryError(f"a version is a save number, an int of at least 0, not {version!r}", key=key)


async def _read(
    client: KeyValueStoreClient, key: str, version: int, kept: list[KeptVersion], current: StoredRecord | None
) -> tuple[SavedVersion, StoredRecord]:
    """Saved version `version` among those of a listing (`_listing`), and its record, checked as `read_version` says."""
    versions = _described(kept, current, key)
    for described in versions:
        if described.version != version:
            continue
        stored = await client.get_record(key=described.key)
        if stored is None:
            break  # deleted since the listing: a save trimmed it
        if described.key != key:
            damage = damage_of(described.checksum, stored)
            if damage is not None:
                raise StateHistoryError(f"version {version} of state {key!r} ({described.key!r}) {damage}", key=key)
        return described, stored
    listed = ", ".join(str(described.version) for described in versions) or "none"
    raise StateHistoryError(
        f"state {key!r} has no saved version {version}: the versions kept are {listed} (a state keeps its last "
        "`history` saves)",
        key=key,
    )


async def rollback_record(client: KeyValueStoreClient, key: str, version: int) -> SavedVersion:
    """Write saved version `version` of the state under `key` over its record, as a new save kept in its history.

    What `recoverable rollback` does for a `RecoverableState`, without its model (not for the manifest of a
    keyed state or set, whose records a rollback copies under new names: their own `rollback()` does that).
    The bytes and content type of the version are written as they are, only over the record as it was read
    here (a save landing in between wins, and this raises), then copied to the history with the trigger
    `rollback`. The copies beyond the state's `history` are trimmed by its next save. A state that is running
    keeps its own copy in memory and overwrites this at its next save (or, with a lease, finds the record
    changed and stops): roll back a state that no process holds.

    Returns:
        The version written, as it is now listed (current).

    Raises:
        StateHistoryError: No such version is kept, or its copy no longer matches its checksum.
        VersionConflictError: The record changed while it was being rolled back; nothing was written.
    """
    _check_version(version, key)
    kept, current = await _listing(client, key)
    _, stored = await _read(client, key, version, kept, current)
    number = max((copy.version for copy in kept), default=0) + 1
    written = await client.set_record(
        key=key,
        value=stored.value,
        content_type=stored.content_type,
        if_version=None if current is None else current.version,
        if_absent=current is None,
    )
    made = datetime.now(UTC)
    to_key = kept_key(key, number, "rollback", stored.value, made)
    kept_as: tuple[str, datetime | None] = (to_key, made)
    try:
        await client.copy_record(key=key, to_key=to_key, if_version=written)
    except VersionConflictError:  # a save landed just after: it keeps its own copy, and this one is not kept
        kept_as = (key, None)
    return SavedVersion(
        version=number,
        key=kept_as[0],
        current=True,
        saved_at=kept_as[1],
        trigger="rollback",
        size=len(stored.value),
        checksum=checksum_of(stored.value),
    )


def check_history(history: object) -> int:
    """Refuse a `history=` that is not a count of versions to keep.

    Raises:
        ConfigurationError: It is not an int from 0 to `MAX_HISTORY`.
    """
    if isinstance(history, bool) or not isinstance(history, int) or not 0 <= history <= MAX_HISTORY:
        raise ConfigurationError(
            f"history must be the number of saved versions to keep, an int from 0 (none) to {MAX_HISTORY}, "
            f"not {history!r}"
        )
    return history
