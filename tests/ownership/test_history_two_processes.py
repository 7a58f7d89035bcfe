"""A frozen owner resumed after a takeover, in the middle of keeping a save in the history: real processes.

The owner stops itself (SIGSTOP) between the record write and the copy's write, or between the copy and the
trim; its lease expires, a new owner takes the state over and saves; then the old owner runs again (SIGCONT).
Nothing it does then may change the new owner's history: "a stale owner's copy never lands over a new owner's
history" (docs/history.md), and a stale owner's write never lands (docs/ownership.md).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import services
from test_two_processes import WAIT_SECS, Owner, http_server

from recoverable import KeyValueStore
from recoverable._history import history_prefix

__all__ = ["http_server"]  # the fixture, used by `spec`

CHILD = Path(__file__).with_name("history_owner_child.py")
TTL_MS = 1500
COPY = re.compile(re.escape(history_prefix("A")[1:]) + r"(?P<save>[0-9]+)\.[a-z]+\.[0-9]{8}T[0-9]{12}Z\.[0-9a-f]{8}$")


@pytest.fixture(params=["file_system", "postgres", "redis", "http"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    kind = request.param
    if kind == "file_system":
        return {"kind": "file_system", "storage_dir": str(tmp_path / "storage")}
    if kind == "postgres":
        return {"kind": "sql", "url": services.postgres_url(), "table_prefix": services.sql_table_prefix(tmp_path)}
    if kind == "redis":
        return {"kind": "redis", "url": services.redis_url(), "key_prefix": services.redis_key_prefix(tmp_path)}
    server: dict[str, Any] = request.getfixturevalue("http_server")
    return server


def start(spec: dict[str, Any], env: dict[str, str], *, history: int, freeze: str = "none", at: int = 0) -> Owner:
    command = [sys.executable, str(CHILD), json.dumps(spec), str(TTL_MS), str(history), freeze, str(at)]
    return Owner(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))


async def _copies(spec: dict[str, Any]) -> list[tuple[int, str]]:
    """(save number, key) of every copy the history of the state holds, read by a process of its own."""
    from owner_child import KEY, STORE, build_client  # noqa: PLC0415

    async with build_client(spec) as client:
        kvs = await KeyValueStore.open(name=STORE, storage_client=client)
        keys = [info.key for info in await kvs.list_keys() if info.key.startswith(history_prefix(KEY))]
    found = []
    for key in keys:
        match = COPY.search(key)
        assert match is not None, key
        found.append((int(match["save"]), key))
    return sorted(found)


def _take_over_while_frozen(spec: dict[str, Any], env: dict[str, str], *, history: int) -> None:
    """Let the frozen owner's lease run out, start a new owner, let it save twice, then kill it."""
    time.sleep(TTL_MS / 1000 + 0.5)
    new = start(spec, env, history=history)
    try:
        owner = new.read_until(("OWNER", "REFUSED"))
        assert owner.startswith("OWNER"), owner
        new.read_until(("SAVED",))
        new.read_until(("SAVED",))
    finally:
        new.stop()


def _resume_and_wait(stale: Owner) -> str:
    stale.proc.send_signal(signal.SIGCONT)
    lost = stale.read_until(("LOST",))
    assert stale.proc.wait(timeout=WAIT_SECS) == 4, lost
    return lost


def test_a_copy_of_an_owner_frozen_before_writing_it_never_lands_in_the_new_owners_history(
    spec: dict[str, Any], child_env: dict[str, str]
) -> None:
    """The owner froze inside `copy_record`: the record it copies was read and its version checked, the copy not
    yet written. A new owner takes over and numbers its own saves after the copies it found. The old copy,
    written when the old owner runs again, lands all the same: two copies of one save number, the newest of
    the old owner's saves listed with a number the new owner also used.
    """
    if spec["kind"] == "http":
        pytest.xfail(
            "the key-value store API v2 has no copy: the HTTP client reads the record, checks its version and writes "
            "the copy, and an owner frozen in between writes it late (a true save of its own, numbered like one of "
            "the new owner's, listed beside it)"
        )
    stale = start(spec, child_env, history=3, freeze="copy", at=4)
    try:
        stale.read_until(("OWNER",))
        line = stale.read_until(("FROZEN", "NOFREEZE"))
        if line == "NOFREEZE":
            return  # the storage client copies inside the store, all at once: there is no such moment
        stale_copy = line.removeprefix("FROZEN ")
        _take_over_while_frozen(spec, child_env, history=3)
        _resume_and_wait(stale)
    finally:
        stale.stop()

    copies = asyncio.run(_copies(spec))
    numbers = [number for number, _ in copies]
    assert stale_copy not in [key for _, key in copies], f"the stale owner's copy landed: {copies}"
    assert len(numbers) == len(set(numbers)), f"two copies of one save number: {copies}"


def test_a_trim_of_an_owner_frozen_before_it_began_never_deletes_what_the_new_owner_keeps(
    spec: dict[str, Any], child_env: dict[str, str]
) -> None:
    """The owner (history=3) froze after its copy, before the trim that follows: the trim checks the lease first,
    finds it run out, and leaves the history to the new owner, which keeps 10 saves."""
    stale = start(spec, child_env, history=3, freeze="after_copy", at=4)
    try:
        stale.read_until(("OWNER",))
        stale.read_until(("FROZEN",))
        _take_over_while_frozen(spec, child_env, history=10)
        kept_by_new_owner = [key for _, key in asyncio.run(_copies(spec))]
        _resume_and_wait(stale)
    finally:
        stale.stop()
    assert [key for _, key in asyncio.run(_copies(spec))] == kept_by_new_owner


@pytest.mark.xfail(
    reason="a delete already asked for when the owner froze lands when it runs again: the trim checks the lease "
    "right before deleting, and no storage client can make a delete conditional on another record (the lease). "
    "Only a copy older than the old owner's history is lost, and only when the new owner keeps a longer history",
    strict=False,
)
def test_a_trim_of_an_owner_frozen_before_it_never_deletes_what_the_new_owner_keeps(
    spec: dict[str, Any], child_env: dict[str, str]
) -> None:
    """The owner (history=3) froze right before deleting the copy its last save pushed out. The new owner keeps
    10 saves, that copy among them. The old owner, run again, deletes it all the same: a write of a process that
    no longer owns the state lands in the new owner's history.
    """
    stale = start(spec, child_env, history=3, freeze="trim", at=4)
    try:
        stale.read_until(("OWNER",))
        doomed = stale.read_until(("FROZEN",)).removeprefix("FROZEN ")
        _take_over_while_frozen(spec, child_env, history=10)
        kept_by_new_owner = [key for _, key in asyncio.run(_copies(spec))]
        assert doomed in kept_by_new_owner
        _resume_and_wait(stale)
    finally:
        stale.stop()

    left = [key for _, key in asyncio.run(_copies(spec))]
    assert doomed in left, "the stale owner deleted a copy the new owner keeps"
    assert left == kept_by_new_owner


def test_an_owner_frozen_between_its_record_write_and_its_copy_copies_nothing_after_a_takeover(
    spec: dict[str, Any], child_env: dict[str, str]
) -> None:
    """Held: the copy is asked for only of the version the old owner wrote, which the new owner's claim replaced."""
    stale = start(spec, child_env, history=3, freeze="before_copy", at=4)
    try:
        stale.read_until(("OWNER",))
        stale_copy = stale.read_until(("FROZEN",)).removeprefix("FROZEN ")
        _take_over_while_frozen(spec, child_env, history=3)
        before = asyncio.run(_copies(spec))
        _resume_and_wait(stale)
    finally:
        stale.stop()

    copies = asyncio.run(_copies(spec))
    assert stale_copy not in [key for _, key in copies]
    numbers = [number for number, _ in copies]
    assert len(numbers) == len(set(numbers)), copies
    # What the old owner still did when it ran again: its trim of copy 1, which the new owner trimmed already.
    assert copies == before
