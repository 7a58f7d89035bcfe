"""SIGKILL at random moments of saves with a history (the default, history=3): the history stays consistent.

The rounds of test_state_crash.py again (state_crash_child.py saves as fast as it can, killed 0 to 50 ms after
its first save), each followed by a look at the history as the next start finds it: the save numbers are
unique and go on from round to round, at most one copy more than `history` is kept (a kill between a copy and
its trim), every copy holds the bytes its checksum names and a save of the run, and the current record is
either the newest copy or the save right after it, whose copy the kill cut short.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from state_crash_child import KEY, CrashState, open_store
from test_state_crash import load_in_this_process, run_and_kill

from recoverable import RecoverableState
from recoverable._history import history_prefix, read_version

if TYPE_CHECKING:
    from pathlib import Path

    from recoverable._history import SavedVersion

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ROUNDS = 30
HISTORY = 3  # the default, which state_crash_child.py keeps
INFIX = history_prefix("A")[1:]
COPY = re.compile(re.escape(INFIX) + r"(?P<save>[0-9]+)\.[a-z]+\.[0-9]{8}T[0-9]{12}Z\.(?P<checksum>[0-9a-f]{8})$")


@dataclass(frozen=True)
class Seen:
    persisted: list[int]
    saved: CrashState
    versions: list[SavedVersion]
    copies: dict[str, tuple[int, int]]  # key -> (save number, counter it holds)


async def look(storage_dir: Path) -> tuple[list[SavedVersion], dict[str, tuple[int, int]]]:
    kvs = await open_store(str(storage_dir))
    state = RecoverableState(
        default_state=CrashState(), persist_state_key=KEY, key_value_store=kvs, persistence_enabled="explicit_only"
    )
    await state.initialize()
    try:
        versions = await state.history()
    finally:
        await state.teardown()
    copies: dict[str, tuple[int, int]] = {}
    for info in await kvs.list_keys():
        if INFIX not in info.key:
            continue
        match = COPY.search(info.key)
        assert match is not None, info.key
        stored = await kvs.client.get_record(key=info.key)
        assert stored is not None, info.key
        assert f"{zlib.crc32(stored.value):08x}" == match["checksum"], f"copy {info.key} does not match its checksum"
        copies[info.key] = (int(match["save"]), CrashState.model_validate(json.loads(stored.value)).counter)
    return versions, copies


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def storage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history-crash") / "storage"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rounds(storage_dir: Path) -> list[Seen]:
    seen: list[Seen] = []
    for round_ in range(ROUNDS):
        _, persisted = await run_and_kill(storage_dir, round_)
        saved = await load_in_this_process(storage_dir)
        versions, copies = await look(storage_dir)
        seen.append(Seen(persisted=persisted, saved=saved, versions=versions, copies=copies))
    return seen


async def test_save_numbers_are_unique_and_go_on_across_kills(rounds: list[Seen]) -> None:
    highest = 0
    for round_, seen in enumerate(rounds):
        numbers = [number for number, _ in seen.copies.values()]
        assert len(numbers) == len(set(numbers)), (round_, sorted(seen.copies))
        assert len(numbers) <= HISTORY + 1, (round_, sorted(seen.copies))
        assert max(numbers) > highest, (round_, highest, sorted(seen.copies))  # the round saved at least once
        highest = max(numbers)
        # A later save holds a later counter.
        by_number = sorted(seen.copies.values())
        assert [counter for _, counter in by_number] == sorted({counter for _, counter in by_number}), round_


async def test_the_newest_copy_is_the_last_save_that_returned_or_the_one_cut_short(rounds: list[Seen]) -> None:
    for round_, seen in enumerate(rounds):
        newest_number, newest_counter = max(seen.copies.values())
        last_returned = seen.persisted[-1]
        assert newest_counter >= last_returned, (round_, newest_counter, last_returned)
        current = seen.versions[0]
        assert current.current, round_
        if current.version == 0:
            # Killed between the record write and its copy: the record is the save right after the newest copy.
            assert seen.saved.counter == newest_counter + 1, (round_, seen.saved.counter, newest_counter)
        else:
            assert current.version == newest_number, round_
            assert seen.saved.counter == newest_counter, round_


async def test_every_version_kept_after_the_kills_can_be_rolled_back_to(rounds: list[Seen], storage_dir: Path) -> None:
    last = rounds[-1]
    kvs = await open_store(str(storage_dir))
    older = [version for version in last.versions if not version.current]
    assert older
    for version in older:
        _, stored = await read_version(kvs.client, KEY, version.version)  # its checksum is checked
        assert CrashState.model_validate_json(stored.value).counter == last.copies[version.key][1]
    state = RecoverableState(
        default_state=CrashState(), persist_state_key=KEY, key_value_store=kvs, persistence_enabled="explicit_only"
    )
    await state.initialize()
    try:
        restored = await state.rollback(older[-1].version)  # the oldest (a rollback trims the oldest copies)
        assert restored.counter == last.copies[older[-1].key][1]
    finally:
        await state.teardown()
