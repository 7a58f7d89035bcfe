"""How many small records a second `KeyValueStore` writes and reads on the file system client.

Records of about 100 bytes of JSON are written with `set_value` and read with `get_value` on a
`FileSystemStorageClient`, one after the other, and the same is done in the same run by a bare loop:

- write: temp file, write, fsync, rename, fsync of the folder (what a durable all-or-nothing write
  needs at least);
- read: open, read, close, `json.loads`.

Each figure is the median of several rounds. Target: ours within 1.5x of the bare loop. For
information, the bare loops are also run with one `asyncio.to_thread` hop per operation, the least an
asyncio program pays to keep blocking file calls off its event loop. The script prints figures and
never fails on them.

    python benchmarks/bench_small_records.py [--ops 500] [--rounds 5] [--keys 100] [--dir PATH]

The files go to a temporary folder under `.bench-tmp/` in the repository (so on the disk the code
lives on, not a tmpfs), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _files import bench_root, durable_write, filesystem_type, remove_bench_root

from recoverable import FileSystemStorageClient, KeyValueStore

TARGET = 1.5


def record(i: int) -> dict[str, Any]:
    """A record of about 100 bytes of JSON."""
    return {"url": f"https://example.com/page/{i:07d}", "status": 200, "depth": i % 7, "retries": 0, "ok": True}


# --- where the files go -----------------------------------------------------------------------------


# --- the bare loops ---------------------------------------------------------------------------------


def bare_read(folder: Path, name: str) -> object:
    """Open, read, close, parse."""
    with open(folder / name, "rb") as f:
        return json.loads(f.read())


def bare_write_loop(folder: Path, ops: int, keys: int) -> float:
    """Seconds for `ops` bare writes over `keys` keys."""
    start = time.perf_counter()
    for i in range(ops):
        durable_write(folder, f"key-{i % keys}.json", json.dumps(record(i)).encode())
    return time.perf_counter() - start


def bare_read_loop(folder: Path, ops: int, keys: int) -> float:
    """Seconds for `ops` bare reads over `keys` keys."""
    start = time.perf_counter()
    for i in range(ops):
        bare_read(folder, f"key-{i % keys}.json")
    return time.perf_counter() - start


async def threaded_write_loop(folder: Path, ops: int, keys: int) -> float:
    """Seconds for `ops` bare writes, each in a worker thread."""
    start = time.perf_counter()
    for i in range(ops):
        await asyncio.to_thread(durable_write, folder, f"key-{i % keys}.json", json.dumps(record(i)).encode())
    return time.perf_counter() - start


async def threaded_read_loop(folder: Path, ops: int, keys: int) -> float:
    """Seconds for `ops` bare reads, each in a worker thread."""
    start = time.perf_counter()
    for i in range(ops):
        await asyncio.to_thread(bare_read, folder, f"key-{i % keys}.json")
    return time.perf_counter() - start


# --- ours -------------------------------------------------------------------------------------------


async def store_write_loop(store: KeyValueStore, ops: int, keys: int) -> float:
    """Seconds for `ops` `set_value` calls over `keys` keys."""
    start = time.perf_counter()
    for i in range(ops):
        await store.set_value(f"key-{i % keys}", record(i))
    return time.perf_counter() - start


async def store_read_loop(store: KeyValueStore, ops: int, keys: int) -> float:
    """Seconds for `ops` `get_value` calls over `keys` keys."""
    start = time.perf_counter()
    for i in range(ops):
        await store.get_value(f"key-{i % keys}")
    return time.perf_counter() - start


async def store_concurrent_writes(store: KeyValueStore, ops: int, keys: int, tasks: int) -> float:
    """Seconds for `ops` `set_value` calls made by `tasks` concurrent tasks."""

    async def writer(t: int) -> None:
        for i in range(t, ops, tasks):
            await store.set_value(f"key-{i % keys}", record(i))

    start = time.perf_counter()
    await asyncio.gather(*(writer(t) for t in range(tasks)))
    return time.perf_counter() - start


async def run(ops: int, rounds: int, keys: int, work: Path) -> None:
    """Measure and print."""
    size = len(json.dumps(record(0)).encode())
    print(f"{ops} ops per round over {keys} keys, records of ~{size} bytes; median of {rounds} rounds")
    print(f"files: {work} ({filesystem_type(work)})")
    bare_dir = work / "bare"
    bare_dir.mkdir()
    storage = FileSystemStorageClient(storage_dir=work / "storage")
    store = await KeyValueStore.open(name="bench-small", storage_client=storage)

    # Warm up both, and create every key so that reads find them.
    bare_write_loop(bare_dir, keys, keys)
    await store_write_loop(store, keys, keys)

    names = ("ours write", "bare write", "bare write + thread hop", "ours read", "bare read", "bare read + thread hop")
    times: dict[str, list[float]] = {name: [] for name in names}
    concurrent: list[float] = []
    for _ in range(rounds):
        # Alternated, so that all see the same disk and caches.
        times["ours write"].append(await store_write_loop(store, ops, keys))
        times["bare write"].append(bare_write_loop(bare_dir, ops, keys))
        times["bare write + thread hop"].append(await threaded_write_loop(bare_dir, ops, keys))
        times["ours read"].append(await store_read_loop(store, ops, keys))
        times["bare read"].append(bare_read_loop(bare_dir, ops, keys))
        times["bare read + thread hop"].append(await threaded_read_loop(bare_dir, ops, keys))
        concurrent.append(await store_concurrent_writes(store, ops, keys, tasks=8))

    rate = {name: ops / statistics.median(values) for name, values in times.items()}
    print()
    for name in names:
        print(f"{name:<23} {rate[name]:10,.0f} ops/s   {1e6 / rate[name]:8.1f} us/op")
    print(f"{'ours write, 8 tasks':<23} {ops / statistics.median(concurrent):10,.0f} ops/s   (for information)")
    print()
    for what in ("write", "read"):
        ratio = rate[f"bare {what}"] / rate[f"ours {what}"]
        hop_ratio = rate[f"bare {what} + thread hop"] / rate[f"ours {what}"]
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(
            f"{what:<5}: bare / ours {ratio:5.2f}x   target <= {TARGET}x: {verdict:<7}   "
            f"(bare + thread hop / ours {hop_ratio:5.2f}x)"
        )


def main() -> int:
    """Parse the command line, run in a temporary folder, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=500, help="operations per round (default 500)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each measurement (default 5)")
    parser.add_argument("--keys", type=int, default=100, help="distinct keys written and read (default 100)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary folder")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = Path(tempfile.mkdtemp(prefix="bench-small-", dir=root))
    try:
        if filesystem_type(work) == "tmpfs":
            print("warning: the files are on a tmpfs, so fsync costs nothing; pass --dir on a disk", file=sys.stderr)
        asyncio.run(run(args.ops, args.rounds, args.keys, work))
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
