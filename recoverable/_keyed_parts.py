"""The entries of a keyed state in memory: split into parts by a hash of the key that every process computes alike.

A keyed state (`KeyedRecoverableState`, `RecoverableSet`) keeps its entries in parts of at most about
`PART_SIZE` entries each, so that a part can be written as one record of the snapshot (see docs/keyed-state.md)
and no step of a save works on more than one part at a time. The parts are the buckets of extendible
hashing: a part of depth `d` and index `i` holds the keys whose hash ends in the `d` bits of `i`; a part that
outgrows `PART_SIZE` splits in two by the next bit, and the directory (indexed by the last `depth` bits of
the hash) doubles when it must. A split costs one part's worth of work, never the whole state's.

The hash is BLAKE2s of the key's UTF-8 bytes (of its two's-complement bytes for an int), keyed with a salt
drawn for each state and kept in its manifest: the same in every process that loads the state, so the parts
written by one process are the parts of the next, and unknown to whoever chooses the keys (the URLs of a
crawled site), who therefore cannot make many keys share a part.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["MAX_DEPTH", "MAX_INT_BITS", "PART_SIZE", "Changes", "Part", "Parts", "Region", "key_hash", "region_covers"]

PART_SIZE = 8192
"""A part splits when it holds more entries than this: the most one step of a save serialises on the loop."""

MAX_DEPTH = 24
"""The deepest a part goes: one of this depth no longer splits (it would take 8192 keys sharing 24 bits of hash)."""

Region = tuple[int, int]
"""(depth, index): the keys whose hash ends in the `depth` low bits of `index`."""

TContainer = TypeVar("TContainer", dict, set)  # type: ignore[type-arg]


MAX_INT_BITS = 14_000
"""Ints of more bits than this (about 4,200 digits) do not load back from JSON: they are refused."""


def key_hash(key: str | int, salt: bytes) -> int:
    """The hash that places a key (or an item of a set) in its part; the same in every process for one salt.

    Raises:
        UnicodeEncodeError: The key holds a lone surrogate (the caller names the key in its own error).
    """
    data = key.encode() if isinstance(key, str) else key.to_bytes(key.bit_length() // 8 + 1, "little", signed=True)
    return int.from_bytes(hashlib.blake2s(data, key=salt, digest_size=4).digest(), "little")


def region_covers(outer: Region, inner: Region) -> bool:
    """Whether every key of region `inner` is in region `outer`."""
    return outer[0] <= inner[0] and inner[1] & ((1 << outer[0]) - 1) == outer[1]


class Part(Generic[TContainer]):
    """One part: its region, its entries (a dict for a keyed state, a set for a set), and their changes.

    Each part keeps the changes of its entries since the last save apart, so that a changelog record says
    which part each change goes to, and a load applies them a part at a time.
    """

    __slots__ = ("changes", "depth", "entries", "index")

    def __init__(self, depth: int, index: int, entries: TContainer) -> None:
        self.depth = depth
        self.index = index
        self.entries: TContainer = entries
        self.changes: Changes[TContainer] = Changes(type(entries))

    @property
    def region(self) -> Region:
        return (self.depth, self.index)


class Parts(Generic[TContainer]):
    """The parts of one keyed state and the directory that finds a key's part.

    Args:
        new: Makes an empty container (dict or set).
        parts: The parts to start with; their regions must cover every hash exactly once (`check_cover`).
    """

    def __init__(self, new: Callable[[], TContainer], parts: list[Part[TContainer]] | None = None) -> None:
        self._new: Callable[[], TContainer] = new
        self.parts: list[Part[TContainer]] = parts or [Part(0, 0, new())]
        self.depth = max(p.depth for p in self.parts)
        self._mask = (1 << self.depth) - 1
        self._directory: list[Part[TContainer]] = [self.parts[0]] * (1 << self.depth)
        for part in self.parts:
            for slot in range(part.index, 1 << self.depth, 1 << part.depth):
                self._directory[slot] = part
        self.splits_paused = False
        """While True (a save is under way), no part splits: the save reads parts by their regions."""

    @staticmethod
    def check_cover(regions: list[Region]) -> str | None:
        """What is wrong with a list of regions that should cover every hash exactly once, or None."""
        if not regions:
            return "it names no part"
        for depth, index in regions:
            if not 0 <= depth <= MAX_DEPTH or not 0 <= index < (1 << depth):
                return f"it names a part of depth {depth} and index {index}, which cannot be"
        # Split the hash space bit by bit: each half must be covered by the regions inside it, or by exactly one
        # region that is the half itself. Work in proportion to the regions times their depth.
        pending: list[tuple[Region, list[Region]]] = [((0, 0), regions)]
        while pending:
            (depth, index), inside = pending.pop()
            if not inside:
                return f"no part holds the keys of depth {depth} and index {index}"
            if any(region == (depth, index) for region in inside):
                if len(inside) > 1:
                    return f"its part of depth {depth} and index {index} overlaps another"
                continue
            bit = 1 << depth
            pending.append(((depth + 1, index), [r for r in inside if not r[1] & bit]))
            pending.append(((depth + 1, index | bit), [r for r in inside if r[1] & bit]))
        return None

    def part_of(self, hashed: int) -> Part[TContainer]:
        """The part holding the key of this hash."""
        return self._directory[hashed & self._mask]

    def containing(self, region: Region) -> Part[TContainer] | None:
        """The one part holding every key of `region`, or None when the region spans several parts."""
        depth, index = region
        part = self._directory[index & self._mask] if depth >= self.depth else self._directory[index]
        return part if region_covers(part.region, region) else None

    def changed(self) -> bool:
        """Whether any part has changes since the last save."""
        return any(part.changes for part in self.parts)

    def take_changes(self) -> list[tuple[Part[TContainer], Changes[TContainer]]]:
        """The changes of each part that has some, each part starting over with none (for a save)."""
        taken = []
        for part in self.parts:
            if part.changes:
                taken.append((part, part.changes))
                part.changes = Changes(type(part.entries))
        return taken

    def parts_in(self, region: Region) -> list[Part[TContainer]]:
        """The parts inside `region` (the parts only split, so a part is never wider than a region it came from)."""
        return [part for part in self.parts if region_covers(region, part.region)]

    def __len__(self) -> int:
        return sum(len(part.entries) for part in self.parts)

    def __iter__(self) -> Iterator[Part[TContainer]]:
        return iter(self.parts)

    def split_if_full(self, part: Part[TContainer], hash_of: Callable[[object], int]) -> None:
        """Split `part` in two by the next bit of the hash when it holds more than `PART_SIZE` entries."""
        while len(part.entries) > PART_SIZE and part.depth < MAX_DEPTH and not self.splits_paused:
            part = self._split(part, hash_of)

    def _split(self, part: Part[TContainer], hash_of: Callable[[object], int]) -> Part[TContainer]:
        bit = 1 << part.depth
        moving = [key for key in part.entries if hash_of(key) & bit]
        upper = Part(part.depth + 1, part.index | bit, self._new())
        if isinstance(part.entries, dict):
            for key in moving:
                upper.entries[key] = part.entries.pop(key)
        else:
            part.entries.difference_update(moving)
            upper.entries.update(moving)
        part.changes.move(upper.changes, [key for key in part.changes.changed_keys() if hash_of(key) & bit])
        part.depth += 1
        self.parts.append(upper)
        if part.depth > self.depth:
            self._directory = self._directory + self._directory
            self.depth += 1
            self._mask = (1 << self.depth) - 1
        for slot in range(upper.index, 1 << self.depth, 1 << upper.depth):
            self._directory[slot] = upper
        # The larger half may still be too full (many keys share their low bits): split it again.
        return part if len(part.entries) >= len(upper.entries) else upper


class Changes(Generic[TContainer]):
    """The keys set (with their values, for a dict) and deleted since the last save, ready to be written.

    A save takes the whole object at once (no per-key work on the event loop): `set` is written as it is, a
    dict of the entries set or a set of the items added, and `deleted` as the list of keys deleted. A key is
    in one of them at most. A key added since the last save (`fresh`, always among those of `set`) and
    deleted again leaves no trace: the last save did not hold it either.
    """

    __slots__ = ("deleted", "fresh", "set")

    def __init__(self, new: Callable[[], TContainer]) -> None:
        self.set: TContainer = new()
        self.deleted: set[object] = set()
        self.fresh: set[object] = set()

    def __bool__(self) -> bool:
        return bool(self.set) or bool(self.deleted)

    def __len__(self) -> int:
        return len(self.set) + len(self.deleted)

    def put(self, key: object, value: object = None, *, new: bool = False) -> None:
        """Note that `key` was set (to `value`, for a dict) or added; `new`: it was not there just before."""
        entries = self.set
        if isinstance(entries, dict):
            entries[key] = value
        else:
            entries.add(key)
        if key in self.deleted:
            self.deleted.discard(key)  # there at the last save, deleted, and back
        elif new:
            self.fresh.add(key)

    def delete(self, key: object) -> None:
        """Note that `key` was deleted."""
        entries = self.set
        if isinstance(entries, dict):
            entries.pop(key, None)
        else:
            entries.discard(key)
        if key in self.fresh:
            self.fresh.discard(key)
        else:
            self.deleted.add(key)

    def changed_keys(self) -> set[object]:
        """Every key set or deleted."""
        return set(self.set) | self.deleted

    def move(self, other: Changes[TContainer], keys: list[object]) -> None:
        """Hand the changes of `keys` over to `other` (the half of a part that split, where they go now)."""
        mine, theirs = self.set, other.set
        for key in keys:
            if isinstance(mine, dict) and isinstance(theirs, dict):
                if key in mine:
                    theirs[key] = mine.pop(key)
            elif isinstance(mine, set) and isinstance(theirs, set) and key in mine:
                mine.discard(key)
                theirs.add(key)
            for source, target in ((self.deleted, other.deleted), (self.fresh, other.fresh)):
                if key in source:
                    source.discard(key)
                    target.add(key)

    def keep_older(self, older: Changes[TContainer]) -> None:
        """Take back the changes of a save that failed, under those made since (which are newer).

        Both become the changes since the save before the one that failed: a key changed since keeps its new
        value or deletion, with the freshness it had then; any other key gets back what the failed save had.
        """
        touched = self.changed_keys()
        older_keys = older.changed_keys()
        for key in list(self.deleted):
            if key in older.fresh:
                self.deleted.discard(key)  # added after that save, deleted since: no trace
        for key in list(self.set):
            if key in older.fresh:
                self.fresh.add(key)
            elif key in older_keys:
                self.fresh.discard(key)  # there at that save
        entries = older.set
        items = entries.items() if isinstance(entries, dict) else ((key, None) for key in entries)
        for key, value in items:
            if key not in touched:
                self.put(key, value, new=key in older.fresh)
        for key in older.deleted:
            if key not in touched:
                self.deleted.add(key)
