"""Child process of the keyed crash test: `python keyed_crash_child.py STORAGE_DIR`.

It opens a `KeyedRecoverableState` of ints and a `RecoverableSet` of str on a `FileSystemStorageClient` in
STORAGE_DIR, each with the default lease, and saves them in turn, until it is killed. The writes are numbered
from 1: write `w` is save `(w + 1) // 2` of the keyed state when `w` is odd, save `w // 2` of the set when it
is even, so after `w` writes the keyed state is at save `(w + 1) // 2` and the set at save `w // 2`.

Save `n` of a state applies `keyed_changes(n)` (or `set_changes(n)`) and nothing else, so the state after save
`n` is a function of `n` alone (`expected_keyed(n)`, `expected_set(n)`), which the test computes on its side.
Each save records its own number in the state: the key `SAVE_KEY` of the keyed state, the item
`SAVE_ITEM_PREFIX + str(n)` of the set.

The child prints `loaded <w>`, the number of the last write that the loaded states hold, then after each
`persist_state()` returned the number of that write, one line each, in a single write so a line is never cut in
two.
"""

from __future__ import annotations

import asyncio
import sys

from recoverable import FileSystemStorageClient, KeyedRecoverableState, KeyValueStore, RecoverableSet

KEYED_KEY = "CRASH-KEYED"
SET_KEY = "CRASH-SET"
STORE_NAME = "crash-keyed"
SAVE_KEY = "__save__"
"""The key of the keyed state holding the number of its last save."""
SAVE_ITEM_PREFIX = "__save__:"
"""The item of the set naming its last save: this prefix and the save's number."""

NEW_KEYS = 400
"""Keys each save of the keyed state adds; it also overwrites 200, revives 10 and deletes 100 (net about +350)."""
NEW_ITEMS = 500
"""Items each save of the set adds; it also discards 50 and re-adds 10 (net about +450)."""


def keyed_changes(n: int) -> list[tuple[str, int | None]]:
    """The changes save `n` of the keyed state makes, in order: (key, value), a value of None deleting the key."""
    changes: list[tuple[str, int | None]] = [(f"k{n}.{i}", n * 10_000 + i) for i in range(NEW_KEYS)]
    if n >= 2:  # the first save has no older keys
        older = n - 1 - (n * 7) % min(n - 1, 40)
        changes += [(f"k{older}.{i}", n * 10_000 + 5_000 + i) for i in range(200, 400)]
        changes += [(f"k{n // 2}.{i}", None) for i in range(100)]  # saves 2m and 2m+1 both delete them
    if n >= 4:  # brings back keys deleted by an earlier save
        changes += [(f"k{n // 4}.{i}", -n) for i in range(10)]
    changes.append((SAVE_KEY, n))
    return changes


def set_changes(n: int) -> list[tuple[str, bool]]:
    """The changes save `n` of the set makes, in order: (item, True to add it or False to discard it)."""
    changes = [(f"u{n}.{i}", True) for i in range(NEW_ITEMS)]
    if n >= 3:
        changes += [(f"u{n // 3}.{i}", False) for i in range(50)]
    if n >= 5:  # adds back items discarded earlier (and, at n=5, in this very save)
        changes += [(f"u{n // 5}.{i}", True) for i in range(10)]
    if n >= 2:
        changes.append((f"{SAVE_ITEM_PREFIX}{n - 1}", False))
    changes.append((f"{SAVE_ITEM_PREFIX}{n}", True))
    return changes


def expected_keyed(n: int) -> dict[str, int]:
    """The keyed state after its save `n`."""
    state: dict[str, int] = {}
    for save in range(1, n + 1):
        for key, value in keyed_changes(save):
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return state


def expected_set(n: int) -> set[str]:
    """The set after its save `n`."""
    state: set[str] = set()
    for save in range(1, n + 1):
        for item, add in set_changes(save):
            if add:
                state.add(item)
            else:
                state.discard(item)
    return state


def write_position(keyed_save: int, set_save: int) -> int | None:
    """The number of the last write that states at these saves hold, or None when no write leaves them so."""
    return keyed_save + set_save if keyed_save - 1 <= set_save <= keyed_save else None


async def open_store(storage_dir: str) -> KeyValueStore:
    """The store of the keyed crash test in STORAGE_DIR, through a new storage client."""
    return await KeyValueStore.open(name=STORE_NAME, storage_client=FileSystemStorageClient(storage_dir=storage_dir))


async def run(storage_dir: str) -> None:
    kvs = await open_store(storage_dir)
    keyed: KeyedRecoverableState[int] = KeyedRecoverableState(
        value_type=int, persist_state_key=KEYED_KEY, key_value_store=kvs, persistence_enabled="explicit_only"
    )
    items: RecoverableSet[str] = RecoverableSet(
        persist_state_key=SET_KEY, key_value_store=kvs, persistence_enabled="explicit_only"
    )
    await keyed.initialize()
    await items.initialize()
    keyed_save = keyed.get(SAVE_KEY, 0)
    set_save = next((n for n in (keyed_save, keyed_save - 1) if f"{SAVE_ITEM_PREFIX}{n}" in items), 0)
    written = write_position(keyed_save, set_save)
    if written is None or (set_save == 0 and keyed_save > 1):
        sys.exit(f"the states loaded do not match: keyed state at save {keyed_save}, set at save {set_save}")
    sys.stdout.write(f"loaded {written}\n")
    sys.stdout.flush()
    while True:
        written += 1
        if written % 2:
            for key, value in keyed_changes((written + 1) // 2):
                if value is None:
                    keyed.pop(key, None)
                else:
                    keyed[key] = value
            await keyed.persist_state()
        else:
            for item, add in set_changes(written // 2):
                if add:
                    items.add(item)
                else:
                    items.discard(item)
            await items.persist_state()
        sys.stdout.write(f"{written}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
