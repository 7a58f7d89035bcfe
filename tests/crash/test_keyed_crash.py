"""A process saving a keyed state and a set is killed with SIGKILL at random moments; each loads as a saved state.

The module runs `ROUNDS` rounds on one storage folder: start `keyed_crash_child.py`, wait until it has written
one to `MAX_WRITES_WAITED` saves, kill it 0 to 50 ms later, load both states in this process (without a
lease, so that the next child takes the lease over from the killed one, and without tidying the store, so
that what the kill left is seen). The states grow by 350 to 450 entries a save, to several times the size
at which a part splits, and their changelogs trigger compactions again and again, so kills land inside
changelog writes, manifest writes, compactions and the deletions after a save alike. The tests then check
what every round saw: each state loads as exactly the state of one of its saves, never older than the last
write that returned nor newer than the one in progress; the next child resumes from it and starts at once;
the records that no manifest names are those of one save and are gone after the next load.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from crash_support import child_environment, read_line
from keyed_crash_child import (
    KEYED_KEY,
    SAVE_ITEM_PREFIX,
    SAVE_KEY,
    SET_KEY,
    STORE_NAME,
    expected_keyed,
    expected_set,
    open_store,
    write_position,
)

from recoverable import KeyedRecoverableState, KeyValueStore, RecoverableSet
from recoverable._keyed_manifest import Manifest
from recoverable._keyed_parts import PART_SIZE
from recoverable._ownership import LEASE_SUFFIX, LeaseRecord
from recoverable.errors import RecoverableError

if TYPE_CHECKING:
    from collections.abc import Mapping

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CHILD = Path(__file__).with_name("keyed_crash_child.py")
ROUNDS = 60
MAX_WRITES_WAITED = 6
MAX_START_SECS = 10.0
"""Longest a child may take to load: a third of the lease's 30 s, so a lease waited for cannot pass."""
MAX_TEMP_FILES = 3
TEMP_PREFIX = ".~tmp."
MIN_COMPACTION_ROUNDS = 5
"""Rounds in which, for each state, a compaction landed (the manifest names other part records)."""
MIN_ROUNDS_KILLED_IN_COMPACTION = 2
"""Rounds in which a kill cut a compaction short: its parts written, or its replaced parts not yet deleted."""
STATE_KEYS = frozenset({KEYED_KEY, SET_KEY, KEYED_KEY + LEASE_SUFFIX, SET_KEY + LEASE_SUFFIX})
"""The manifests and leases of the two states."""
_RECORD = re.compile(r"\.~(?:part\.[0-9a-f]{8}\.(?P<part_seq>\d+)\.\d+\.\d+|log\.[0-9a-f]{8}\.(?P<log_seq>\d+))")


@dataclass(frozen=True)
class StateSeen:
    """What the load after a kill found of one state.

    Attributes:
        save: The number of the save the loaded state says it holds (its marker), 0 for none.
        size: How many entries (items) it holds.
        mismatch: How it differs from the expected state of save `save`; None when it is exactly that state.
        manifest_seq: The save number the manifest records.
        named: The records the manifest names.
        parts: The part records the manifest names.
        part_regions: How many parts the manifest names (a record each, or none for an empty part).
        max_depth: The depth of the deepest part the manifest names (0 until the first split lands).
        log_records: How many changelog records the manifest names.
        orphans: The records of the state that the manifest does not name, with the save that wrote each.
        missing: The records the manifest names that the store does not hold.
    """

    save: int
    size: int
    mismatch: str | None
    manifest_seq: int
    named: frozenset[str]
    parts: frozenset[str]
    part_regions: int
    max_depth: int
    log_records: int
    orphans: dict[str, int]
    missing: list[str]


@dataclass(frozen=True)
class Round:
    """What one round saw.

    Attributes:
        loaded: The write number the child printed after loading the states.
        pid: The child's process id.
        start_secs: From the start of the child to its `loaded` line.
        persisted: The write numbers the child printed, each after its `persist_state()` returned.
        keyed: The keyed state after the kill.
        set: The set after the kill.
        keys: Every key in the store after the kill.
        lease_pids: The process ids that the leases of the keyed state and of the set name after the kill.
        strays: The keys that are neither a manifest, nor a lease, nor a record of either state.
        temp_files: Names of the temp files in the store folder after the kill.
    """

    loaded: int
    pid: int
    start_secs: float
    persisted: list[int]
    keyed: StateSeen
    set: StateSeen
    keys: frozenset[str]
    lease_pids: tuple[int, int]
    strays: list[str]
    temp_files: list[str]


async def run_and_kill(storage_dir: Path, round_: int) -> tuple[int, int, float, list[int]]:
    """Run one child until it wrote a few times, kill it; return the write it loaded, its pid, start time, writes."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        str(storage_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(),
    )
    try:
        loaded_line = await read_line(process, round_)
        start_secs = time.monotonic() - started
        assert loaded_line.startswith("loaded "), loaded_line
        waited = [await read_line(process, round_) for _ in range(random.randint(1, MAX_WRITES_WAITED))]
        await asyncio.sleep(random.uniform(0.0, 0.05))
    finally:
        # One signal only: a second kill() polls the process, and that poll can reap it before asyncio's
        # child watcher does, which then reports the status as 255.
        process.kill()
        rest, err = await process.communicate()
    assert process.returncode == -signal.SIGKILL, f"round {round_}: the child ended by itself: {err.decode()}"
    # Only whole lines count; the child writes each line in one write, after its persist returned.
    text = rest.decode()
    complete = text[: text.rfind("\n") + 1].split()
    return int(loaded_line.removeprefix("loaded ")), process.pid, start_secs, [*map(int, waited), *map(int, complete)]


def difference(found: Mapping[str, object], expected: Mapping[str, object]) -> str | None:
    """How `found` differs from `expected`, in a few words and examples; None when they are equal."""
    if found == expected:
        return None
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    changed = sorted(k for k in found.keys() & expected.keys() if found[k] != expected[k])
    return (
        f"{len(found)} entries, {len(expected)} expected: {len(missing)} missing {missing[:5]}, "
        f"{len(extra)} extra {extra[:5]}, {len(changed)} of other values "
        f"{[(k, found[k], expected[k]) for k in changed[:5]]}"
    )


async def seen_of(
    kvs: KeyValueStore, key: str, keys: frozenset[str], entries: Mapping[str, object], save: int
) -> StateSeen:
    """What the store holds of the state saved under `key`, and how its loaded `entries` compare with save `save`."""
    raw = await kvs.client.get_record(key=key)
    assert raw is not None, f"the manifest {key!r} is missing"
    manifest = Manifest.model_validate_json(raw.value)
    expected: dict[str, object] = dict(expected_keyed(save)) if key == KEYED_KEY else dict.fromkeys(expected_set(save))
    # The records the manifest names, and those every copy its history keeps names (kept with them), and the copies.
    named = set(manifest.records())
    for copy in sorted(k for k in keys if k.startswith(f"{key}.history.")):
        kept = await kvs.client.get_record(key=copy)
        assert kept is not None, copy
        named |= Manifest.model_validate_json(kept.value).records() | {copy}
    orphans = {}
    for other in keys:
        match = _RECORD.fullmatch(other.removeprefix(key)) if other.startswith(key) else None
        if match is not None and other not in named:
            orphans[other] = int(match["part_seq"] or match["log_seq"])
    return StateSeen(
        save=save,
        size=len(entries),
        mismatch=difference(entries, expected),
        manifest_seq=manifest.seq,
        named=frozenset(named),
        parts=frozenset(part.record for part in manifest.parts if part.record is not None),
        part_regions=len(manifest.parts),
        max_depth=max(part.depth for part in manifest.parts),
        log_records=len(manifest.log),
        orphans=orphans,
        missing=sorted(named - keys),
    )


async def lease_pid(kvs: KeyValueStore, key: str) -> int:
    """The process id that the lease of the state `key` names."""
    raw = await kvs.get_value(key + LEASE_SUFFIX)
    assert raw is not None, f"the lease of {key!r} is missing"
    return LeaseRecord.model_validate(raw).pid


async def load_in_this_process(storage_dir: Path) -> tuple[StateSeen, StateSeen, frozenset[str], tuple[int, int]]:
    """Load both states as the next program would, without a lease; check that this writes nothing."""
    kvs = await open_store(str(storage_dir))
    keys = frozenset([info.key async for info in kvs.client.iterate_keys()])
    pids = (await lease_pid(kvs, KEYED_KEY), await lease_pid(kvs, SET_KEY))
    versions = {key: (await kvs.client.get_record(key=key)) for key in (KEYED_KEY, SET_KEY)}
    keyed: KeyedRecoverableState[int] = KeyedRecoverableState(
        value_type=int,
        persist_state_key=KEYED_KEY,
        key_value_store=kvs,
        persistence_enabled="explicit_only",
        lease_ttl=None,
    )
    items: RecoverableSet[str] = RecoverableSet(
        persist_state_key=SET_KEY, key_value_store=kvs, persistence_enabled="explicit_only", lease_ttl=None
    )
    async with keyed, items:
        keyed_entries = dict(keyed.items())
        set_entries: dict[str, object] = dict.fromkeys(items)
        # Each entry is where a lookup looks for it (the parts are placed by the hash the manifest keys).
        assert all(keyed[key] == value for key, value in keyed_entries.items()), "an entry is not where it hashes"
        assert all(item in items for item in set_entries), "an item is not where it hashes"
    for key, before in versions.items():
        after = await kvs.client.get_record(key=key)
        assert before is not None
        assert after is not None
        assert after.version == before.version, f"loading and tearing down an unchanged {key} wrote its manifest"
    assert keys == frozenset([info.key async for info in kvs.client.iterate_keys()]), "a load without lease wrote"
    keyed_save = keyed_entries.get(SAVE_KEY, 0)
    set_saves = [int(item.removeprefix(SAVE_ITEM_PREFIX)) for item in set_entries if item.startswith(SAVE_ITEM_PREFIX)]
    assert len(set_saves) <= 1, f"the set holds the markers of several saves: {set_saves}"
    return (
        await seen_of(kvs, KEYED_KEY, keys, keyed_entries, keyed_save),
        await seen_of(kvs, SET_KEY, keys, set_entries, set_saves[0] if set_saves else 0),
        keys,
        pids,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rounds(tmp_path_factory: pytest.TempPathFactory) -> list[Round]:
    storage_dir = tmp_path_factory.mktemp("keyed-crash") / "storage"
    store_dir = storage_dir / "key_value_stores" / STORE_NAME
    seen: list[Round] = []
    for round_ in range(ROUNDS):
        loaded, pid, start_secs, persisted = await run_and_kill(storage_dir, round_)
        try:
            keyed, set_, keys, lease_pids = await load_in_this_process(storage_dir)
        except RecoverableError as exc:
            left = sorted(p.name for p in store_dir.iterdir())
            pytest.fail(f"round {round_}: the states saved up to write {persisted[-1]} do not load: {exc}\n{left}")
        temp_files = sorted(p.name for p in store_dir.iterdir() if p.name.startswith(TEMP_PREFIX))
        seen.append(
            Round(
                loaded=loaded,
                pid=pid,
                start_secs=start_secs,
                persisted=persisted,
                keyed=keyed,
                set=set_,
                keys=keys,
                lease_pids=lease_pids,
                strays=sorted(
                    keys - STATE_KEYS - keyed.named - keyed.orphans.keys() - set_.named - set_.orphans.keys()
                ),
                temp_files=temp_files,
            )
        )
    return seen


async def test_sigkill_leaves_each_state_exactly_as_one_save_left_it(rounds: list[Round]) -> None:
    expected_start = 0
    for round_, seen in enumerate(rounds):
        assert seen.loaded == expected_start, f"round {round_}: the child did not resume from the saved states"
        assert seen.persisted == list(range(seen.loaded + 1, seen.loaded + 1 + len(seen.persisted))), round_
        for state in (seen.keyed, seen.set):
            assert state.mismatch is None, (
                f"round {round_}: the state of save {state.save} (manifest seq {state.manifest_seq}) differs from "
                f"the expected one: {state.mismatch}; the store holds {sorted(seen.keys)}"
            )
            assert state.manifest_seq == state.save, (round_, state.manifest_seq, state.save)
        written = write_position(seen.keyed.save, seen.set.save)
        assert written is not None, f"round {round_}: keyed state at save {seen.keyed.save}, set at {seen.set.save}"
        last_returned = seen.persisted[-1]
        # Never older than the last write that returned; at most the one that was in progress.
        assert last_returned <= written <= last_returned + 1, (round_, last_returned, written)
        expected_start = written
    assert len(rounds) == ROUNDS


async def test_a_killed_owner_does_not_delay_the_next(rounds: list[Round]) -> None:
    for round_, seen in enumerate(rounds):
        # The killed child still holds both leases: the next child takes them over from a dead owner.
        assert seen.lease_pids == (seen.pid, seen.pid), f"round {round_}: the leases name {seen.lease_pids}"
        assert seen.start_secs < MAX_START_SECS, f"round {round_}: the child took {seen.start_secs:.1f} s to load"


async def test_records_of_interrupted_saves_do_not_pile_up(rounds: list[Round]) -> None:
    for round_, seen in enumerate(rounds):
        assert len(seen.temp_files) <= MAX_TEMP_FILES, f"round {round_}: temp files pile up: {seen.temp_files}"
        assert not seen.strays, f"round {round_}: the store holds other records: {seen.strays}"
        for state in (seen.keyed, seen.set):
            assert not state.missing, f"round {round_}: the manifest names records the store lacks: {state.missing}"
            # A kill leaves the records of one save: those written by the save in progress, before its manifest
            # landed, or those that the last save that landed no longer names, not yet deleted.
            saves = set(state.orphans.values())
            assert saves <= {state.save + 1} or max(saves) <= state.save, (round_, state.save, state.orphans)
        if round_ + 1 < len(rounds):
            # The next load deletes them.
            left = (seen.keyed.orphans.keys() | seen.set.orphans.keys()) & rounds[round_ + 1].keys
            assert not left, f"round {round_ + 1}: the records {sorted(left)} of round {round_} are still there"


async def test_the_kills_hit_split_parts_and_compactions(rounds: list[Round]) -> None:
    for name in ("keyed", "set"):
        states: list[StateSeen] = [getattr(seen, name) for seen in rounds]
        last = states[-1]
        assert last.size > 4 * PART_SIZE, (name, last.size)
        assert last.max_depth >= 2, (name, last.max_depth)  # parts split at least twice
        compacted = [r for r in range(1, len(states)) if states[r].parts != states[r - 1].parts]
        assert len(compacted) >= MIN_COMPACTION_ROUNDS, (name, compacted)
    in_compaction = [
        r
        for r, seen in enumerate(rounds)
        if any(".~part." in orphan for orphan in (*seen.keyed.orphans, *seen.set.orphans))
    ]
    assert len(in_compaction) >= MIN_ROUNDS_KILLED_IN_COMPACTION, in_compaction
