"""What a state's history costs a save: `persist_state()` with `history=3` (the default) next to `history=0`.

Two states of the same model are saved after each change on the file system storage client, alternately so
that both see the same disk and caches: one keeps no history, the other copies each save to its history and
deletes the copy that falls out of the last three. Two sizes are measured: a large state (200,000 dict
entries, about 8 MB of JSON) and a small one (2,000 entries, about 90 KB). Target: a save with history costs
at most 1.2x of one without. An unchanged save copies nothing (checked, not timed). The script prints figures
and never fails on them.

    python benchmarks/bench_history.py [--repeat 15] [--dir PATH]

The files go to a temporary folder under `.bench-tmp/` in the repository, removed at the end.
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

from recoverable import FileSystemStorageClient, KeyValueStore, RecoverableState
from recoverable.storages._base import KeyValueStoreClient

TARGET = 1.2
SIZES = (200_000, 2_000)


class BenchState(BaseModel):
    """A crawler-like state: one big dict of URLs to counters."""

    entries: dict[str, int] = Field(default_factory=dict)
    version: int = 0


def make_state(entries: int) -> BenchState:
    """A state of `entries` dict entries, about 43 bytes of JSON each."""
    return BenchState(entries={f"https://example.com/page/{i:07d}": i * 7919 % 10_000_000 for i in range(entries)})


async def history_keys(store: KeyValueStore, key: str) -> list[str]:
    """The keys of the copies the history of `key` keeps."""
    return [info.key for info in await store.list_keys(prefix=key + ".history.")]


async def measure(store: KeyValueStore, entries: int, repeat: int) -> tuple[float, float, int]:
    """Median seconds of a changed save without and with history, and the bytes of one save."""
    model = make_state(entries)
    states = {
        history: RecoverableState(
            default_state=model,
            persist_state_key=f"BENCH_{entries}_{history}",
            persistence_enabled="explicit_only",
            key_value_store=store,
            history=history,
        )
        for history in (0, 3)
    }
    for state in states.values():
        await state.initialize()
    times: dict[int, list[float]] = {0: [], 3: []}
    for round_number in range(repeat + 1):
        for history, state in states.items():
            state.current_value.version += 1
            start = time.perf_counter()
            await state.persist_state()
            if round_number:  # the first round warms up
                times[history].append(time.perf_counter() - start)

    # Nothing is copied when nothing changed.
    keys = await history_keys(store, "BENCH_" + f"{entries}_3")
    await states[3].persist_state()
    if await history_keys(store, f"BENCH_{entries}_3") != keys or len(keys) != 3:
        raise RuntimeError("an unchanged save copied something, or the history does not keep three copies")
    size = len(BenchState.__pydantic_serializer__.to_json(states[3].current_value))
    for state in states.values():
        await state.teardown()
    return statistics.median(times[0]), statistics.median(times[3]), size


async def run(repeat: int, work: Path) -> None:
    """Measure and print."""
    client = FileSystemStorageClient(storage_dir=work)
    store = await KeyValueStore.open(name="bench-history", storage_client=client)
    own_copy = type(store.client).copy_record is not KeyValueStoreClient.copy_record
    print(f"files: {work} ({filesystem_type(work)}); median of {repeat} saves each")
    print(f"copy to the history: {'the client copies itself' if own_copy else 'read and written again'}")
    print()
    for entries in SIZES:
        without, with_history, size = await measure(store, entries, repeat)
        ratio = with_history / without
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"state of {entries:,} entries ({size / 1e6:.2f} MB of JSON)")
        print(f"  persist_state(), history=0   {without * 1000:8.2f} ms")
        print(f"  persist_state(), history=3   {with_history * 1000:8.2f} ms")
        print(f"  with / without               {ratio:8.2f}   target <= {TARGET}: {verdict}")
    await client.aclose()


def main() -> int:
    """Parse the command line, run in a temporary folder, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15, help="saves measured per state (default 15)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary folder")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = Path(tempfile.mkdtemp(prefix="bench-history-", dir=root))
    try:
        if filesystem_type(work) == "tmpfs":
            print("warning: the files are on a tmpfs, so fsync costs nothing; pass --dir on a disk", file=sys.stderr)
        asyncio.run(run(args.repeat, work))
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
