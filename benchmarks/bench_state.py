"""How much a large `RecoverableState` costs to save and load, next to the least it could cost.

A state of 200,000 dict entries (about 8 MB of JSON) is saved and loaded on the file system storage
client, and the same work is done by hand in the same run as the floor:

- persist: `RecoverableState.persist_state()` after a change, against the floor of
  `Model.__pydantic_serializer__.to_json(model)` plus one durable write (temp file, write, fsync, rename,
  fsync of the folder);
- load: `RecoverableState.initialize()` of a new state object, against reading the file plus
  `Model.model_validate_json`;
- unchanged persist: a second `persist_state()` with nothing changed, against a full persist.

Each figure is the median of several repetitions. Targets: persist/floor <= 1.5, load/floor <= 1.3,
unchanged/full < 1 %. The script prints figures and never fails on them.

    python benchmarks/bench_state.py [--entries 200000] [--repeat 11] [--dir PATH]

The files go to a temporary folder under `.bench-tmp/` in the repository (so on the disk the code
lives on, not a tmpfs), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _files import bench_root, durable_write, filesystem_type, remove_bench_root
from pydantic import BaseModel, Field

from recoverable import FileSystemStorageClient, KeyValueStore, RecoverableState

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

STATE_KEY = "BENCH_STATE"
PERSIST_TARGET = 1.5
LOAD_TARGET = 1.3
UNCHANGED_TARGET = 0.01


class BenchState(BaseModel):
    """A crawler-like state: one big dict of URLs to counters."""

    entries: dict[str, int] = Field(default_factory=dict)
    version: int = 0


def make_state(entries: int) -> BenchState:
    """A state of `entries` dict entries, about 43 bytes of JSON each."""
    return BenchState(entries={f"https://example.com/page/{i:07d}": i * 7919 % 10_000_000 for i in range(entries)})


# --- where the files go -----------------------------------------------------------------------------


# --- the floor --------------------------------------------------------------------------------------


def floor_persist(model: BenchState, folder: Path) -> None:
    """Serialise with pydantic-core and write durably."""
    durable_write(folder, "state.json", BenchState.__pydantic_serializer__.to_json(model))


def floor_load(folder: Path) -> BenchState:
    """Read the file and validate it."""
    with open(folder / "state.json", "rb") as f:
        return BenchState.model_validate_json(f.read())


# --- measuring --------------------------------------------------------------------------------------


def measure(func: Callable[[], object], repeat: int) -> list[float]:
    """Seconds each of `repeat` calls took, after one warm-up call."""
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
        del result  # freed after the clock stopped: freeing a large state is not part of the work measured
    return times


async def measure_async(
    func: Callable[[], Awaitable[object]], repeat: int, before: Callable[[], Awaitable[object]] | None = None
) -> list[float]:
    """Seconds each of `repeat` awaits took, after one warm-up; `before` runs untimed before each."""
    if before is not None:
        await before()
    await func()
    times = []
    for _ in range(repeat):
        if before is not None:
            await before()
        start = time.perf_counter()
        result = await func()
        times.append(time.perf_counter() - start)
        del result
    return times


def ms(seconds: float) -> str:
    """Milliseconds, for printing."""
    return f"{seconds * 1000:8.2f} ms"


def verdict(value: float, target: float, *, strict: bool = False) -> str:
    """'met' or 'NOT met', for printing."""
    ok = value < target if strict else value <= target
    return "met" if ok else "NOT met"


async def measure_persist(
    model: BenchState, store: KeyValueStore, floor_dir: Path, repeat: int
) -> tuple[list[float], list[float], list[float]]:
    """(a) persist after a change, (b) its floor, (e) persist with no change."""
    state = RecoverableState(
        default_state=model,
        persist_state_key=STATE_KEY,
        persistence_enabled="explicit_only",
        key_value_store=store,
    )
    await state.initialize()
    value = state.current_value

    async def change_and_persist() -> None:
        value.version += 1
        value.entries["https://example.com/page/0000000"] = value.version
        await state.persist_state()

    # Alternated, so that both see the same disk and caches.
    persist_times: list[float] = []
    floor_times: list[float] = []
    await change_and_persist()
    floor_persist(model, floor_dir)
    for _ in range(repeat):
        persist_times += await measure_async(change_and_persist, 1)
        floor_times += measure(lambda: floor_persist(model, floor_dir), 1)

    # The second of two persist_state() calls with nothing changed in between.
    unchanged_times = await measure_async(state.persist_state, repeat, before=change_and_persist)
    await state.teardown()
    return persist_times, floor_times, unchanged_times


async def measure_load(
    store: KeyValueStore, floor_dir: Path, entries: int, repeat: int
) -> tuple[list[float], list[float]]:
    """(c) initialize() of a new state object, (d) its floor."""

    async def load() -> float:
        fresh = RecoverableState(
            default_state=BenchState(),
            persist_state_key=STATE_KEY,
            persistence_enabled="explicit_only",
            key_value_store=store,
        )
        start = time.perf_counter()
        await fresh.initialize()
        elapsed = time.perf_counter() - start
        if len(fresh.current_value.entries) != entries:
            raise RuntimeError("the loaded state is not the saved one")
        await fresh.teardown()  # untimed: gives the state's lease back for the next one
        return elapsed

    load_times: list[float] = []
    floor_times: list[float] = []
    await load()
    floor_load(floor_dir)
    for _ in range(repeat):
        load_times.append(await load())
        floor_times += measure(lambda: floor_load(floor_dir), 1)
    return load_times, floor_times


async def run(entries: int, repeat: int, work: Path) -> None:
    """Measure and print."""
    model = make_state(entries)
    size = len(BenchState.__pydantic_serializer__.to_json(model))
    print(f"state: {entries:,} dict entries, {size / 1e6:.1f} MB of JSON; median of {repeat} runs")
    print(f"files: {work} ({filesystem_type(work)})")

    floor_dir = work / "floor"
    floor_dir.mkdir()
    storage = FileSystemStorageClient(storage_dir=work / "storage")
    store = await KeyValueStore.open(name="bench-state", storage_client=storage)
    persist_times, floor_persist_times, unchanged_times = await measure_persist(model, store, floor_dir, repeat)
    load_times, floor_load_times = await measure_load(store, floor_dir, entries, repeat)

    persist = statistics.median(persist_times)
    floor_p = statistics.median(floor_persist_times)
    loaded = statistics.median(load_times)
    floor_l = statistics.median(floor_load_times)
    unchanged = statistics.median(unchanged_times)

    print()
    print(f"(a) persist_state() after a change     {ms(persist)}")
    print(f"(b) floor: to_json + durable write      {ms(floor_p)}")
    print(f"(c) initialize() of a new state         {ms(loaded)}")
    print(f"(d) floor: read + model_validate_json   {ms(floor_l)}")
    print(f"(e) persist_state() with no change      {ms(unchanged)}")
    print()
    r_persist, r_load, r_unchanged = persist / floor_p, loaded / floor_l, unchanged / persist
    print(f"persist / floor    {r_persist:6.2f}   target <= {PERSIST_TARGET}: {verdict(r_persist, PERSIST_TARGET)}")
    print(f"load / floor       {r_load:6.2f}   target <= {LOAD_TARGET}: {verdict(r_load, LOAD_TARGET)}")
    print(
        f"unchanged / full   {r_unchanged:6.2%}   target < {UNCHANGED_TARGET:.0%}: "
        f"{verdict(r_unchanged, UNCHANGED_TARGET, strict=True)}"
    )


def main() -> int:
    """Parse the command line, run in a temporary folder, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=200_000, help="dict entries in the state (default 200000)")
    parser.add_argument("--repeat", type=int, default=11, help="repetitions of each measurement (default 11)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary folder")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = Path(tempfile.mkdtemp(prefix="bench-state-", dir=root))
    try:
        if filesystem_type(work) == "tmpfs":
            print("warning: the files are on a tmpfs, so fsync costs nothing; pass --dir on a disk", file=sys.stderr)
        asyncio.run(run(args.entries, args.repeat, work))
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
