"""Child process of the crash test: `python state_crash_child.py STORAGE_DIR`.

It opens a `RecoverableState` on a `FileSystemStorageClient` in STORAGE_DIR and prints `loaded <counter>`
with the counter it starts from. Then, until it is killed, it increments the counter, adds one entry to
`pages` (so the record grows), calls `persist_state()`, and once that returned prints the counter it
persisted, one line each, in a single write so a line is never cut in two.
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from recoverable import FileSystemStorageClient, KeyValueStore, RecoverableState

KEY = "CRASH-STATE"
STORE_NAME = "crash"


class CrashState(BaseModel):
    """The counter of persists, and one page per persist: `pages` maps `page-<n>` to n for n in 1..counter."""

    counter: int = 0
    pages: dict[str, int] = {}


async def open_store(storage_dir: str) -> KeyValueStore:
    """The store of the crash test in STORAGE_DIR, through a new storage client."""
    return await KeyValueStore.open(name=STORE_NAME, storage_client=FileSystemStorageClient(storage_dir=storage_dir))


async def run(storage_dir: str) -> None:
    state = RecoverableState(
        default_state=CrashState(),
        persist_state_key=KEY,
        key_value_store=await open_store(storage_dir),
        persistence_enabled="explicit_only",
    )
    value = await state.initialize()
    sys.stdout.write(f"loaded {value.counter}\n")
    sys.stdout.flush()
    while True:
        value.counter += 1
        value.pages[f"page-{value.counter}"] = value.counter
        await state.persist_state()
        sys.stdout.write(f"{value.counter}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1]))
