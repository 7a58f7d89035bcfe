"""A process saving its state is killed with SIGKILL at random moments; the state always survives intact.

The module runs `ROUNDS` rounds on one storage folder: start `state_crash_child.py`, wait until it has
persisted at least once, kill it 0 to 50 ms later, load the record in this process. The tests then
check what every round saw: the record always loads and validates, it is never older than the last
persist that returned nor newer than the one in progress, the next round resumes from it, and the
temp files of interrupted writes do not pile up.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from crash_support import child_environment, read_line
from state_crash_child import KEY, CrashState, open_store

from recoverable import RecoverableState
from recoverable._history import damage_of, kept_versions

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

CHILD = Path(__file__).with_name("state_crash_child.py")
ROUNDS = 50
MAX_TEMP_FILES = 3
TEMP_PREFIX = ".~tmp."


@dataclass(frozen=True)
class Round:
    """What one round saw.

    Attributes:
        loaded: The counter the child printed after loading the state.
        persisted: The counters the child printed, each after its `persist_state()` returned.
        saved: The state this process loaded from the record after the kill.
        temp_files: Names of the temp files in the store folder after the round.
        history: The copies the state's history keeps after the round, newest first: (save number, counter
            of the state it holds, whether its bytes match its checksum).
    """

    loaded: int
    persisted: list[int]
    saved: CrashState
    temp_files: list[str]
    history: list[tuple[int, int, bool]]


async def run_and_kill(storage_dir: Path, round_: int) -> tuple[int, list[int]]:
    """Run one child until it persisted once, kill it; return the counter it loaded and those it persisted."""
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
        assert loaded_line.startswith("loaded "), loaded_line
        first_persisted = await read_line(process, round_)
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
    return int(loaded_line.removeprefix("loaded ")), [int(first_persisted), *map(int, complete)]


async def history_in_this_process(storage_dir: Path) -> list[tuple[int, int, bool]]:
    """The copies the state's history keeps: save number, the counter each holds, and whether it is whole."""
    kvs = await open_store(str(storage_dir))
    found = []
    for kept in await kept_versions(kvs.client, KEY):
        stored = await kvs.client.get_record(key=kept.key)
        assert stored is not None, kept.key
        counter = CrashState.model_validate_json(stored.value).counter
        found.append((kept.version, counter, damage_of(kept.checksum, stored) is None))
    return found


async def load_in_this_process(storage_dir: Path) -> CrashState:
    """Load the record as the next program would (raising if it does not validate); check it writes nothing."""
    kvs = await open_store(str(storage_dir))
    raw = await kvs.client.get_record(key=KEY)
    assert raw is not None, "the record is missing"
    assert raw.value.strip(), "the record is empty"
    assert isinstance(json.loads(raw.value), dict)
    state = RecoverableState(
        default_state=CrashState(), persist_state_key=KEY, key_value_store=kvs, persistence_enabled="explicit_only"
    )
    value = await state.initialize()
    await state.teardown()
    after = await kvs.client.get_record(key=KEY)
    assert after is not None
    assert after.version == raw.version, "loading and tearing down an unchanged state wrote the record"
    return value


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rounds(tmp_path_factory: pytest.TempPathFactory) -> list[Round]:
    storage_dir = tmp_path_factory.mktemp("crash") / "storage"
    store_dir = storage_dir / "key_value_stores" / "crash"
    seen: list[Round] = []
    for round_ in range(ROUNDS):
        loaded, persisted = await run_and_kill(storage_dir, round_)
        history = await history_in_this_process(storage_dir)
        saved = await load_in_this_process(storage_dir)
        temp_files = sorted(p.name for p in store_dir.iterdir() if p.name.startswith(TEMP_PREFIX))
        seen.append(Round(loaded=loaded, persisted=persisted, saved=saved, temp_files=temp_files, history=history))
    return seen


async def test_sigkill_never_corrupts_loses_or_skips_a_persisted_state(rounds: list[Round]) -> None:
    expected_start = 0
    for round_, seen in enumerate(rounds):
        assert seen.loaded == expected_start, f"round {round_}: the child did not resume from the saved state"
        assert seen.persisted == list(range(seen.loaded + 1, seen.loaded + 1 + len(seen.persisted))), round_
        last_returned = seen.persisted[-1]
        # Never older than the last persist that returned; at most the one that was in progress.
        assert last_returned <= seen.saved.counter <= last_returned + 1, (round_, last_returned, seen.saved.counter)
        assert seen.saved.pages == {f"page-{n}": n for n in range(1, seen.saved.counter + 1)}, round_
        expected_start = seen.saved.counter
    assert len(rounds) == ROUNDS
    assert expected_start >= ROUNDS


async def test_the_history_stays_whole_and_in_order_through_kills(rounds: list[Round]) -> None:
    for round_, seen in enumerate(rounds):
        numbers = [number for number, _, _ in seen.history]
        counters = [counter for _, counter, _ in seen.history]
        assert all(whole for _, _, whole in seen.history), (round_, seen.history)
        # Three copies, and a fourth when the kill came between a copy and the trim it is followed by.
        assert 1 <= len(seen.history) <= 4, (round_, seen.history)
        assert numbers == sorted(set(numbers), reverse=True), (round_, seen.history)
        assert counters == sorted(set(counters), reverse=True), (round_, seen.history)
        # The newest copy is the record, or the save before it when the kill came between a write and its copy.
        assert seen.saved.counter - 1 <= counters[0] <= seen.saved.counter, (round_, seen.saved.counter, counters)
    # Numbering went on across the restarts: one number per save that was copied.
    assert rounds[-1].history[0][0] >= rounds[-1].saved.counter - len(rounds)


async def test_temp_files_of_interrupted_writes_do_not_pile_up(rounds: list[Round]) -> None:
    for round_, seen in enumerate(rounds):
        assert len(seen.temp_files) <= MAX_TEMP_FILES, f"round {round_}: temp files pile up: {seen.temp_files}"
