"""What a save and a load of a large `KeyedRecoverableState` and `RecoverableSet` cost, next to one record.

Two cases run on the file system storage client, each against a `RecoverableState` holding the same data in
one record (the baseline), measured in the same run:

- keyed: a `KeyedRecoverableState` of 1,000,000 keys holding small models (`Domain`: two ints), against a
  model with a `dict[str, Domain]` field. Before each save, 1 % of the keys, drawn at random, change: half
  are assigned a new `Domain`, half are changed in place inside `edit()`.
- set: a `RecoverableSet` of 3,000,000 URLs, against a model with a `set[str]` field. Before each save, 1 % of
  the starting size is added as new URLs (to both, so that they stay the same size: they grow to twice the
  starting size over 100 saves).

For each case it prints:

- save: `persist_state()` after 1 % changed, the median of the saves that did not compact and, separately, of
  those that did (a compaction rewrites a share of the snapshot), and the mean of all `--saves` saves in a
  row, compaction included, all against the median one-record save; the one-record saves are interleaved
  with the keyed ones, so that both see the same disk and the same load on the machine;
- nothing changed: `persist_state()` right after a save;
- stall: the longest the event loop was blocked during a save. A task sleeps 1 ms over and over while the save
  runs, and the longest gap between two of its wake-ups (and between the last one and the end of the save)
  is the save's stall; so about 1 ms is the least it reports. The same method is used for both kinds of
  state. The target is checked on the median over the saves (the keyed ones compaction included), and on
  the longest of all of them, which also catches what else the machine was doing at that moment;
- load: `initialize()` of a new object on the same store, taking the lease as a program does, against the
  same for the one-record state (the keyed state then holds the changelog the saves left, as a program
  stopped at that point would find it);
- memory: the bytes per key (item) a loaded state holds, measured with `tracemalloc` as the memory allocated
  by Python during `initialize()` and still held after it (after a `gc.collect()`), against the same
  measure for a plain dict (set) of the same data parsed from its JSON by pydantic. It counts what Python
  asked of its allocators, not the process's resident size (which adds the allocators' own slack).

The states are built, saved (the keyed one until its first compaction is over) and loaded again before the
measured saves, so that each one's objects are laid out in memory by its own load, as a program finds them
after a restart. The loaded data, and before each save what the changes allocated, is then moved out of the
cyclic garbage collector's reach (`gc.freeze()`): a full pass over millions of objects, set off by whatever
allocates at that moment, would otherwise land in random saves of either kind (the longest pass that still
falls in a save is printed). The loads run with the collector as it is, as a starting program's would.

Targets (keyed state / one record): save after 1 % changed <= 1/50; mean of the saves, compaction included,
<= 1/10; save with nothing changed < 1 ms; stall <= 1/20; load <= 1.3x; memory per key against a plain
dict (set) <= 1.5x. The script prints figures and never fails on them.

    python benchmarks/bench_keyed_state.py [--keys 1000000] [--urls 3000000] [--saves 100] [--repeat 7] [--dir PATH]

The files go to a temporary folder under `.bench-tmp/` in the repository (so on the disk the code lives on,
not a tmpfs), removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

from _files import bench_root, filesystem_type, remove_bench_root
from pydantic import BaseModel, Field, TypeAdapter
from typing_extensions import override

from recoverable import (
    FileSystemStorageClient,
    KeyedRecoverableState,
    KeyValueStore,
    RecoverableSet,
    RecoverableState,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

TARGET_KEY = "BENCH_KEYED"
BASELINE_KEY = "BENCH_ONE_RECORD"
SAVE_TARGET = 1 / 50
MEAN_TARGET = 1 / 10
UNCHANGED_TARGET = 0.001
STALL_TARGET = 1 / 20
LOAD_TARGET = 1.3
MEMORY_TARGET = 1.5
TICK = 0.001
"""How long the stall watcher sleeps between wake-ups."""
UNCHANGED_REPEAT = 101
MAX_WARM_UP_SAVES = 50
"""The most keyed saves made before the measured ones (the first compaction takes one or two)."""


class Domain(BaseModel):
    """A small value: what a crawler counts per domain."""

    pages: int = 0
    errors: int = 0


class Domains(BaseModel):
    """The keyed case's baseline: every entry in one record."""

    domains: dict[str, Domain] = Field(default_factory=dict)


class SeenUrls(BaseModel):
    """The set case's baseline: every URL in one record."""

    urls: set[str] = Field(default_factory=set)


def domain_name(i: int) -> str:
    """The key of entry `i`."""
    return f"shop-{i:07d}.example.com"


def page_url(i: int) -> str:
    """The URL of item `i`."""
    return f"https://example.com/page/{i}"


class Saved(Protocol):
    """What both kinds of state have: the lifecycle the benchmark drives."""

    async def initialize(self) -> object:
        """Take the lease and load."""

    async def persist_state(self) -> None:
        """Save what changed."""

    async def teardown(self) -> None:
        """Save and let go."""


TargetT = TypeVar("TargetT", bound=Saved)
BaselineT = TypeVar("BaselineT", bound=Saved)


# --- the two cases ----------------------------------------------------------------------------------


class Case(ABC, Generic[TargetT, BaselineT]):
    """One keyed state against the one-record state of the same data: how to build, change and size them."""

    name: str
    """Names the stores."""
    unit: str
    """What one entry is called: key, URL."""
    container: str
    """The plain container of the same data: dict, set."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.per_save = max(1, size // 100)

    @abstractmethod
    def describe(self) -> str:
        """One line saying what the states hold and how they change."""

    @abstractmethod
    def new_target(self, store: KeyValueStore) -> TargetT:
        """A new keyed state object on `store`."""

    @abstractmethod
    def new_baseline(self, store: KeyValueStore) -> BaselineT:
        """A new one-record state object on `store`."""

    @abstractmethod
    def fill(self, target: TargetT, baseline: BaselineT) -> None:
        """Put the starting data in both (initialized) states."""

    @abstractmethod
    async def change_target(self, target: TargetT, count: int) -> None:
        """Change `count` entries of the keyed state."""

    @abstractmethod
    def change_baseline(self, baseline: BaselineT, count: int) -> None:
        """Change `count` entries of the one-record state (the set: add the URLs the keyed one got since)."""

    @abstractmethod
    def target_size(self, target: TargetT) -> int:
        """How many entries the keyed state holds."""

    @abstractmethod
    def baseline_size(self, baseline: BaselineT) -> int:
        """How many entries the one-record state holds."""

    @abstractmethod
    def plain_json(self, target: TargetT) -> bytes:
        """The JSON of the keyed state's data as a plain container."""

    @abstractmethod
    def plain_load(self, data: bytes) -> object:
        """The plain container parsed from `plain_json`."""


class KeyedCase(Case[KeyedRecoverableState[Domain], RecoverableState[Domains]]):
    """`KeyedRecoverableState` of `Domain` values against a `dict[str, Domain]` field."""

    name = "keyed"
    unit = "key"
    container = "dict"

    def __init__(self, size: int, seed: int) -> None:
        super().__init__(size)
        self._keys = [domain_name(i) for i in range(size)]
        self._random = random.Random(seed)
        self._round = 0
        self._adapter: TypeAdapter[dict[str, Domain]] = TypeAdapter(dict[str, Domain])

    @override
    def describe(self) -> str:
        return (
            f"{self.size:,} keys of Domain values; before each save {self.per_save:,} keys change, half assigned "
            "a new Domain, half changed inside edit()"
        )

    @override
    def new_target(self, store: KeyValueStore) -> KeyedRecoverableState[Domain]:
        return KeyedRecoverableState(
            value_type=Domain,
            persist_state_key=TARGET_KEY,
            persistence_enabled="explicit_only",
            key_value_store=store,
        )

    @override
    def new_baseline(self, store: KeyValueStore) -> RecoverableState[Domains]:
        return RecoverableState(
            default_state=Domains(),
            persist_state_key=BASELINE_KEY,
            persistence_enabled="explicit_only",
            key_value_store=store,
        )

    @override
    def fill(self, target: KeyedRecoverableState[Domain], baseline: RecoverableState[Domains]) -> None:
        domains = baseline.current_value.domains
        for i, key in enumerate(self._keys):
            target[key] = Domain(pages=i % 1000, errors=i % 7)
            domains[key] = Domain(pages=i % 1000, errors=i % 7)

    @override
    async def change_target(self, target: KeyedRecoverableState[Domain], count: int) -> None:
        self._round += 1
        keys = self._random.sample(self._keys, count)
        half = len(keys) // 2
        for key in keys[:half]:
            target[key] = Domain(pages=self._round, errors=self._round % 7)
        for key in keys[half:]:
            async with target.edit(key) as domain:
                domain.pages += 1

    @override
    def change_baseline(self, baseline: RecoverableState[Domains], count: int) -> None:
        self._round += 1
        domains = baseline.current_value.domains
        for key in self._random.sample(self._keys, count):
            domains[key] = Domain(pages=self._round, errors=self._round % 7)

    @override
    def target_size(self, target: KeyedRecoverableState[Domain]) -> int:
        return len(target)

    @override
    def baseline_size(self, baseline: RecoverableState[Domains]) -> int:
        return len(baseline.current_value.domains)

    @override
    def plain_json(self, target: KeyedRecoverableState[Domain]) -> bytes:
        return self._adapter.dump_json(dict(target.items()))

    @override
    def plain_load(self, data: bytes) -> object:
        return self._adapter.validate_json(data)


class SetCase(Case[RecoverableSet[str], RecoverableState[SeenUrls]]):
    """`RecoverableSet` of URLs against a `set[str]` field; both get the same new URLs."""

    name = "set"
    unit = "URL"
    container = "set"

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._next = size
        self._not_in_baseline: list[str] = []
        self._adapter: TypeAdapter[set[str]] = TypeAdapter(set[str])

    @override
    def describe(self) -> str:
        return (
            f"{self.size:,} URLs to start with; before each save {self.per_save:,} new URLs are added (to both "
            "states, which grow alike)"
        )

    @override
    def new_target(self, store: KeyValueStore) -> RecoverableSet[str]:
        return RecoverableSet(persist_state_key=TARGET_KEY, persistence_enabled="explicit_only", key_value_store=store)

    @override
    def new_baseline(self, store: KeyValueStore) -> RecoverableState[SeenUrls]:
        return RecoverableState(
            default_state=SeenUrls(),
            persist_state_key=BASELINE_KEY,
            persistence_enabled="explicit_only",
            key_value_store=store,
        )

    @override
    def fill(self, target: RecoverableSet[str], baseline: RecoverableState[SeenUrls]) -> None:
        urls = [page_url(i) for i in range(self.size)]
        target.update(urls)
        baseline.current_value.urls.update(urls)

    @override
    async def change_target(self, target: RecoverableSet[str], count: int) -> None:
        new = [page_url(i) for i in range(self._next, self._next + count)]
        self._next += count
        target.update(new)
        self._not_in_baseline += new

    @override
    def change_baseline(self, baseline: RecoverableState[SeenUrls], count: int) -> None:
        # The URLs the keyed set got since the last call (`count` of them per keyed save), so that both hold the same.
        baseline.current_value.urls.update(self._not_in_baseline)
        self._not_in_baseline = []

    @override
    def target_size(self, target: RecoverableSet[str]) -> int:
        return len(target)

    @override
    def baseline_size(self, baseline: RecoverableState[SeenUrls]) -> int:
        return len(baseline.current_value.urls)

    @override
    def plain_json(self, target: RecoverableSet[str]) -> bytes:
        return self._adapter.dump_json(set(target))

    @override
    def plain_load(self, data: bytes) -> object:
        return self._adapter.validate_json(data)


# --- measuring --------------------------------------------------------------------------------------


class LoopWatch:
    """The longest the event loop went without running a task that asks to wake up every `TICK` seconds."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._last = time.perf_counter()
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)  # the ticker is asleep, its clock started, before the work begins
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._last)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.longest = max(self.longest, now - self._last)
            self._last = now


class CollectorWatch:
    """The longest pass of the cyclic garbage collector while it is entered."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def __enter__(self) -> Self:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:  # noqa: ARG002 - the signature gc calls
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.longest = max(self.longest, time.perf_counter() - self._started)


@dataclass
class Save:
    """One timed save."""

    seconds: float
    stall: float
    collector: float
    """The longest garbage-collector pass during the save."""
    compacted: bool = False


@dataclass
class Figures:
    """What one case measured."""

    saves: list[Save] = field(default_factory=list)
    baseline_saves: list[Save] = field(default_factory=list)
    unchanged: list[float] = field(default_factory=list)
    baseline_unchanged: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    baseline_loads: list[float] = field(default_factory=list)
    warm_up_saves: int = 0
    entries_at_end: int = 0
    record_size: int = 0
    log_records: int = 0
    log_entries: int = 0
    parts: int = 0
    memory: int = 0
    plain_memory: int = 0
    baseline_memory: int = 0


async def timed_save(state: Saved) -> Save:
    """`persist_state()`, timed, with the longest stall of the loop while it ran.

    What the changes before it allocated is moved out of the garbage collector's reach first, as the data was:
    a pass over it costs in proportion to everything the program made since, whichever call happens to set it off.
    """
    gc.freeze()
    with CollectorWatch() as collector:
        async with LoopWatch() as watch:
            start = time.perf_counter()
            await state.persist_state()
            elapsed = time.perf_counter() - start
    return Save(elapsed, watch.longest, collector.longest)


async def manifest_of(store: KeyValueStore) -> dict[str, Any]:
    """The manifest record the keyed state's last save wrote."""
    manifest: dict[str, Any] = await store.get_value(TARGET_KEY)
    return manifest


def compacted(manifest: dict[str, Any]) -> bool:
    """Whether the save that wrote `manifest` rewrote snapshot parts (they then hold every save before it)."""
    return any(part["upto"] == manifest["seq"] - 1 for part in manifest["parts"])


async def timed_load(state: Saved) -> float:
    """Seconds `initialize()` of a new state object took; the object is torn down (untimed) after."""
    start = time.perf_counter()
    await state.initialize()
    elapsed = time.perf_counter() - start
    await state.teardown()  # gives the lease back for the next one
    return elapsed


async def traced_load(state: Saved) -> int:
    """Bytes allocated during `initialize()` and still held after it; the state is left initialized."""
    gc.collect()
    tracemalloc.start()
    try:
        await state.initialize()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return held


def traced(build: Callable[[], object]) -> tuple[object, int]:
    """What `build()` returns, and the bytes allocated during it and still held after it."""
    gc.collect()
    tracemalloc.start()
    try:
        result = build()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, held


async def build(case: Case[TargetT, BaselineT], store: KeyValueStore, baseline_store: KeyValueStore) -> int:
    """Fill and save both states, then run out the compaction the first save starts; how many keyed saves that took."""
    target = case.new_target(store)
    baseline = case.new_baseline(baseline_store)
    await target.initialize()
    await baseline.initialize()
    case.fill(target, baseline)
    await baseline.persist_state()
    # The first save writes everything as one changelog record, and the next ones fold it into the
    # snapshot: run them out, so that the measured saves start from a compacted state as a long-running
    # program's do.
    await target.persist_state()
    warm_up = 1
    while warm_up < MAX_WARM_UP_SAVES:
        await case.change_target(target, 1)
        await target.persist_state()
        warm_up += 1
        if not compacted(await manifest_of(store)):
            break
    await target.teardown()
    await baseline.teardown()
    return warm_up


async def measure_saves(
    case: Case[TargetT, BaselineT],
    *,
    target: TargetT,
    baseline: BaselineT,
    store: KeyValueStore,
    saves: int,
    repeat: int,
) -> Figures:
    """The saves of both states, the keyed ones in a row with the one-record ones interleaved."""
    figures = Figures()
    step = max(1, saves // repeat)
    for i in range(saves):
        await case.change_target(target, case.per_save)
        save = await timed_save(target)
        save.compacted = compacted(await manifest_of(store))
        figures.saves.append(save)
        if i % step == step // 2 and len(figures.baseline_saves) < repeat:
            case.change_baseline(baseline, case.per_save)
            figures.baseline_saves.append(await timed_save(baseline))
    while len(figures.baseline_saves) < repeat:  # fewer keyed saves than one-record ones
        await case.change_target(target, case.per_save)
        await target.persist_state()
        case.change_baseline(baseline, case.per_save)
        figures.baseline_saves.append(await timed_save(baseline))
    case.change_baseline(baseline, case.per_save)  # the set: the URLs the keyed one got since
    await baseline.persist_state()

    for _ in range(UNCHANGED_REPEAT):
        start = time.perf_counter()
        await target.persist_state()
        figures.unchanged.append(time.perf_counter() - start)
    for _ in range(3):
        start = time.perf_counter()
        await baseline.persist_state()
        figures.baseline_unchanged.append(time.perf_counter() - start)

    manifest = await manifest_of(store)
    figures.log_records = len(manifest["log"])
    figures.log_entries = sum(entry["count"] for entry in manifest["log"])
    figures.parts = len(manifest["parts"])
    figures.entries_at_end = case.target_size(target)
    if case.baseline_size(baseline) != figures.entries_at_end:
        raise RuntimeError("the two states do not hold the same number of entries")
    return figures


async def measure_case(
    case: Case[TargetT, BaselineT], storage: FileSystemStorageClient, saves: int, repeat: int
) -> Figures:
    """Every figure of one case."""
    store = await KeyValueStore.open(name=f"bench-{case.name}", storage_client=storage)
    baseline_store = await KeyValueStore.open(name=f"bench-{case.name}-one-record", storage_client=storage)
    warm_up = await build(case, store, baseline_store)
    gc.collect()
    # Loaded, as a program finds them after a restart: each state's objects are laid out in memory by its own
    # load, not by the order the benchmark built them in (which decides how well the CPU caches serve a save).
    target = case.new_target(store)
    baseline = case.new_baseline(baseline_store)
    await target.initialize()
    await baseline.initialize()
    gc.collect()
    gc.freeze()
    try:
        figures = await measure_saves(case, target=target, baseline=baseline, store=store, saves=saves, repeat=repeat)
        await target.teardown()
        await baseline.teardown()
    finally:
        gc.unfreeze()
    figures.warm_up_saves = warm_up
    del target, baseline
    gc.collect()
    record = await baseline_store.client.get_record(key=BASELINE_KEY)
    figures.record_size = len(record.value) if record is not None else 0

    # Alternated, so that both see the same disk and caches.
    for _ in range(repeat):
        figures.loads.append(await timed_load(case.new_target(store)))
        figures.baseline_loads.append(await timed_load(case.new_baseline(baseline_store)))

    loaded = case.new_target(store)
    figures.memory = await traced_load(loaded)
    if case.target_size(loaded) != figures.entries_at_end:
        raise RuntimeError("the loaded state is not the saved one")
    data = case.plain_json(loaded)
    await loaded.teardown()
    del loaded
    plain, figures.plain_memory = traced(functools.partial(case.plain_load, data))
    del plain, data
    loaded_baseline = case.new_baseline(baseline_store)
    figures.baseline_memory = await traced_load(loaded_baseline)
    await loaded_baseline.teardown()
    del loaded_baseline
    gc.collect()
    return figures


# --- printing ---------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    """Milliseconds, for printing."""
    return f"{seconds * 1000:9.2f} ms"


def us(seconds: float) -> str:
    """Microseconds, for printing."""
    return f"{seconds * 1e6:9.1f} us"


def verdict(value: float, target: float, *, strict: bool = False) -> str:
    """'met' or 'NOT met', for printing."""
    ok = value < target if strict else value <= target
    return "met" if ok else "NOT met"


def median_or_nan(values: Iterable[float]) -> float:
    """The median, or NaN for no values."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


@dataclass
class Summary:
    """The figures of one case that the ratios compare."""

    plain: list[Save]
    compacting: list[Save]
    save: float
    mean_save: float
    base_save: float
    stall: float
    worst_stall: float
    base_stall: float
    base_worst_stall: float
    unchanged: float
    load: float
    base_load: float

    @classmethod
    def of(cls, figures: Figures) -> Summary:
        """The medians, means and maxima of `figures`."""
        plain = [s for s in figures.saves if not s.compacted]
        return cls(
            plain=plain,
            compacting=[s for s in figures.saves if s.compacted],
            save=median_or_nan(s.seconds for s in plain),
            mean_save=statistics.fmean(s.seconds for s in figures.saves),
            base_save=statistics.median(s.seconds for s in figures.baseline_saves),
            stall=statistics.median(s.stall for s in figures.saves),
            worst_stall=max(s.stall for s in figures.saves),
            base_stall=statistics.median(s.stall for s in figures.baseline_saves),
            base_worst_stall=max(s.stall for s in figures.baseline_saves),
            unchanged=statistics.median(figures.unchanged),
            load=statistics.median(figures.loads),
            base_load=statistics.median(figures.baseline_loads),
        )


def row(label: str, figure: str) -> None:
    """One figure, for printing."""
    print(f"  {label:<50}{figure}")


def print_figures(case: Case[Any, Any], figures: Figures, summary: Summary) -> None:
    """Print one case's figures."""
    n = figures.entries_at_end
    print(
        f"after the saves: {n:,} {case.unit}s, in one record of {figures.record_size / 1e6:.1f} MB of JSON, or in "
        f"{figures.parts} parts and a changelog of {figures.log_records} records holding "
        f"{figures.log_entries:,} entries; {figures.warm_up_saves} keyed saves before the measured ones"
    )
    print()
    print(
        f"save after 1 % changed: {len(figures.saves)} keyed saves in a row, {len(figures.baseline_saves)} one-record"
    )
    row(f"keyed, the {len(summary.plain)} that did not compact (median)", ms(summary.save))
    row(
        f"keyed, the {len(summary.compacting)} that compacted (median)",
        ms(median_or_nan(s.seconds for s in summary.compacting)),
    )
    row(f"keyed, all {len(figures.saves)} (mean)", ms(summary.mean_save))
    row("one record (median)", ms(summary.base_save))
    print("save with nothing changed")
    row(f"keyed (median of {len(figures.unchanged)})", us(summary.unchanged))
    row(
        f"one record, for information (median of {len(figures.baseline_unchanged)})",
        ms(statistics.median(figures.baseline_unchanged)),
    )
    print(f"longest event-loop stall during a save (a ticker of {TICK * 1000:g} ms)")
    row("keyed, saves that did not compact (median)", ms(median_or_nan(s.stall for s in summary.plain)))
    row("keyed, saves that compacted (median)", ms(median_or_nan(s.stall for s in summary.compacting)))
    row("keyed, all saves (median)", ms(summary.stall))
    row("keyed, longest of all", ms(summary.worst_stall))
    row("one record (median)", ms(summary.base_stall))
    row("one record, longest of all", ms(summary.base_worst_stall))
    row(
        "garbage collector, longest pass in a save (both)",
        ms(max(s.collector for s in [*figures.saves, *figures.baseline_saves])),
    )
    print(f"load: initialize() of a new object (median of {len(figures.loads)})")
    row("keyed", ms(summary.load))
    row("one record", ms(summary.base_load))
    print(f"memory held by the loaded data, bytes per {case.unit} (tracemalloc)")
    row("keyed state", f"{figures.memory / n:9.1f}")
    row(f"plain {case.container} of the same data", f"{figures.plain_memory / n:9.1f}")
    row("one-record state, for information", f"{figures.baseline_memory / n:9.1f}")


def print_ratios(case: Case[Any, Any], figures: Figures, summary: Summary) -> None:
    """Print one case's ratios, each next to its target."""

    def ratio(label: str, value: float, target: float, target_text: str) -> None:
        print(f"{label:<28}{value:8.4f}   target <= {target_text}: {verdict(value, target)}")

    ratio("save / one record", summary.save / summary.base_save, SAVE_TARGET, "1/50")
    ratio("mean save / one record", summary.mean_save / summary.base_save, MEAN_TARGET, "1/10")
    print(
        f"{'nothing changed':<25}{us(summary.unchanged)}   target < {UNCHANGED_TARGET * 1000:g} ms: "
        f"{verdict(summary.unchanged, UNCHANGED_TARGET, strict=True)}"
    )
    ratio("stall / one record", summary.stall / summary.base_stall, STALL_TARGET, "1/20")
    ratio("  longest / longest", summary.worst_stall / summary.base_worst_stall, STALL_TARGET, "1/20")
    ratio("load / one record", summary.load / summary.base_load, LOAD_TARGET, f"{LOAD_TARGET}")
    ratio(f"memory / plain {case.container}", figures.memory / figures.plain_memory, MEMORY_TARGET, f"{MEMORY_TARGET}")


def report(case: Case[Any, Any], figures: Figures) -> None:
    """Print one case's figures and ratios."""
    summary = Summary.of(figures)
    print_figures(case, figures, summary)
    print()
    print_ratios(case, figures, summary)


async def run(keys: int, urls: int, saves: int, repeat: int, work: Path) -> None:
    """Measure and print both cases."""
    print(f"files: {work} ({filesystem_type(work)}); one-record figures are the median of {repeat} runs")
    storage = FileSystemStorageClient(storage_dir=work / "storage")
    keyed = KeyedCase(keys, seed=1)
    print()
    print(f"== KeyedRecoverableState against RecoverableState with a dict[str, Domain] field: {keyed.describe()}")
    report(keyed, await measure_case(keyed, storage, saves, repeat))
    del keyed
    seen = SetCase(urls)
    print()
    print(f"== RecoverableSet against RecoverableState with a set[str] field: {seen.describe()}")
    report(seen, await measure_case(seen, storage, saves, repeat))


def main() -> int:
    """Parse the command line, run in a temporary folder, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the keyed state (default 1000000)")
    parser.add_argument("--urls", type=int, default=3_000_000, help="URLs the set starts with (default 3000000)")
    parser.add_argument("--saves", type=int, default=100, help="keyed saves in a row in each case (default 100)")
    parser.add_argument("--repeat", type=int, default=7, help="one-record saves, and loads of each (default 7)")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the temporary folder")
    args = parser.parse_args()
    root = bench_root(args.dir)
    work = Path(tempfile.mkdtemp(prefix="bench-keyed-", dir=root))
    try:
        if filesystem_type(work) == "tmpfs":
            print("warning: the files are on a tmpfs, so fsync costs nothing; pass --dir on a disk", file=sys.stderr)
        asyncio.run(run(args.keys, args.urls, args.saves, args.repeat, work))
    finally:
        remove_bench_root(root, work, given=args.dir is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
