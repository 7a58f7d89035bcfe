"""What `copy_record` of a large record costs on the file system client, next to writing that record.

A state's history keeps the record of a state as its owner last wrote it, before each save overwrites it:
`copy_record(key=k, to_key=f"{k}.~history.<n>", if_version=...)`, then the save's `set_record`. The record
here is the JSON of a state of 200,000 dict entries (about 8 MB, as `bench_state.py`'s) on a
`FileSystemStorageClient`; in the same run, alternated round by round:

- write: `set_record` of the record, conditional on its last version (a save without history);
- copy: `copy_record` of it to another key, conditional on its version (a hard link: no byte copied);
- copy by read and write: the default of `KeyValueStoreClient.copy_record`, which reads the record and
  writes it again (what a copy costs without a hard link);
- save with history: copy, then write; against a save without history (write alone), and against a full
  save (the state serialised with pydantic-core, then written) with and without the copy.

Each figure is the median of several rounds. Target: a save with history at most 1.2x a save without
(write alone, the stricter baseline). The script prints figures and never fails on them.

Most of a copy's time is spent freeing the file of the history generation it replaces (the record as it
was a few saves ago), which no other name holds any more. The write that follows frees nothing in turn: the
file it replaces lives on as the copy. So "copy + write" costs less than the two measured apart.

    python benchmarks/bench_copy_record.py [--entries 200000] [--rounds 15] [--dir PATH]

The files go to a temporary folder under `.bench-tmp/` in the repository (so on the disk the code lives on,
not a tmpfs), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _files import bench_root, filesystem_type, remove_bench_root
from pydantic import BaseModel, Field

from recoverable import FileSystemStorageClient
from recoverable.storages import KeyValueStoreClient

TARGET = 1.2
KEY = "BENCH_STATE"
JSON = "application/json"
HISTORY = 3
"""History generations the copies cycle through, as a state's history would."""


class BenchState(BaseModel):
    """A crawler-like state: one big dict of URLs to counters (as bench_state.py's)."""

    entries: dict[str, int] = Field(default_factory=dict)
    version: int = 0


def make_state(entries: int) -> BenchState:
    """A state of `entries` dict entries, about 43 bytes of JSON each."""
    return BenchState(entries={f"https://example.com/page/{i:07d}": i * 7919 % 10_000_000 for i in range(entries)})


class Saver:
    """Saves one record as a state does: each write conditional on the version it wrote last."""

    def __init__(self, store: KeyValueStoreClient, version: str) -> None:
        self.store = store
        self.version = version
        self.saves = 0

    def history_key(self) -> str:
        """The next history generation to copy to, in turn."""
        self.saves += 1
        return f"{KEY}.~history.{self.saves % HISTORY}"

    async def write(self, value: bytes) -> float:
        """Seconds a save without history took: the record written, conditional on its last version."""
        start = time.perf_counter()
        self.version = await self.store.set_record(key=KEY, value=value, content_type=JSON, if_version=self.version)
        return time.perf_counter() - start

    async def copy(self) -> float:
        """Seconds a copy of the record to its next history key took, conditional on its last version."""
        start = time.perf_counter()
        await self.store.copy_record(key=KEY, to_key=self.history_key(), if_version=self.version)
        return time.perf_counter() - start

    async def copy_by_read_and_write(self) -> float:
        """Seconds the same copy took the ABC's default way: read the record, write it again."""
        start = time.perf_counter()
        # The ABC's default, which every client without a copy of its own uses.
        await KeyValueStoreClient.copy_record(self.store, key=KEY, to_key=self.history_key(), if_version=self.version)
        return time.perf_counter() - start

    async def save(self, state: BenchState, *, history: bool) -> float:
        """Seconds a full save took: the state serialised and written, after a copy to history if asked."""
        start = time.perf_counter()
        if history:
            await self.store.copy_record(key=KEY, to_key=self.history_key(), if_version=self.version)
        value = BenchState.__pydantic_serializer__.to_json(state)
        self.version = await self.store.set_record(key=KEY, value=value, content_type=JSON, if_version=self.version)
        return time.perf_counter() - start


async def run(entries: int, rounds: int, work: Path) -> None:
    """Measure and print."""
    state = make_state(entries)
    value = BenchState.__pydantic_serializer__.to_json(state)
    print(f"a record of {len(value) / 1e6:.1f} MB ({entries:,} entries); median of {rounds} rounds")
    print(f"files: {work} ({filesystem_type(work)})")
    client = FileSystemStorageClient(storage_dir=work / "storage")
    store = await client.open_key_value_store_client(name="bench-copy")
    saver = Saver(store, await store.set_record(key=KEY, value=value, content_type=JSON))
    for _ in range(HISTORY):  # warm up: every history key exists, as after a few saves
        await saver.copy()
        await saver.write(value)

    names = (
        "write",
        "copy",
        "copy by read and write",
        "copy + write",
        "full save",
        "full save with history",
    )
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        times["write"].append(await saver.write(value))
        times["copy"].append(await saver.copy())
        times["copy by read and write"].append(await saver.copy_by_read_and_write())
        times["copy + write"].append(await saver.copy() + await saver.write(value))
        times["full save"].append(await saver.save(state, history=False))
        times["full save with history"].append(await saver.save(state, history=True))
    await client.aclose()

    median = {name: statistics.median(values) for name, values in times.items()}
    print()
    for name in names:
        print(f"{name:<24} {median[name] * 1e3:8.2f} ms")
    print()
    print(f"copy / write                      {median['copy'] / median['write']:5.3f}x")
    print(f"copy by read and write / write    {median['copy by read and write'] / median['write']:5.3f}x")
    ratio = median["copy + write"] / median["write"]
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"save with history / without      {ratio:5.3f}x   target <= {TARGET}x: {verdict}")
    full = median["full save with history"] / median["full save"]
    print(f"full save with history / without {full:5.3f}x   (the state serialised in both)")


def main() -> int:
    """Parse the command line, run in a temporary folder, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=200_000, help="dict entries of the state (default 200000)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of each measurement (default 15)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary folder")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = Path(tempfile.mkdtemp(prefix="bench-copy-", dir=root))
    try:
        if filesystem_type(work) == "tmpfs":
            print("warning: the files are on a tmpfs, so fsync costs nothing; pass --dir on a disk", file=sys.stderr)
        asyncio.run(run(args.entries, args.rounds, work))
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
