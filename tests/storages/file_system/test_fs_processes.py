"""Several clients and processes on one storage folder: restarts, foreign writes, write races."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from recoverable.errors import StoreNotFoundError
from recoverable.storages import FileSystemStorageClient, KeyValueStore, StorageClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TEXT = "text/plain; charset=utf-8"


async def test_stores_reopen_after_a_restart(
    storage_client: StorageClient, restart: Callable[[], FileSystemStorageClient]
) -> None:
    named = await KeyValueStore.open(name="crawl", storage_client=storage_client)
    aliased = await KeyValueStore.open(alias="crawl", storage_client=storage_client)
    default = await KeyValueStore.open(storage_client=storage_client)
    for store in (named, aliased, default):
        await store.set_value("state", {"id": store.id})
    await named.set_value("l" * 900, "long key")
    before = await named.get_record("state")

    client = restart()

    by_id = await KeyValueStore.open(id=named.id, storage_client=client)
    assert (by_id.id, by_id.name) == (named.id, "crawl")
    assert await by_id.get_value("state") == {"id": named.id}
    assert await by_id.get_value("l" * 900) == "long key"
    after = await by_id.get_record("state")
    assert before is not None
    assert after is not None
    assert after.version == before.version
    by_name = await KeyValueStore.open(name="crawl", storage_client=client)
    assert by_name is by_id
    for store in (aliased, default):
        by_alias_id = await KeyValueStore.open(id=store.id, storage_client=restart())
        assert await by_alias_id.get_value("state") == {"id": store.id}
    assert (await KeyValueStore.open(alias="crawl", storage_client=restart())).id == aliased.id
    assert (await KeyValueStore.open(storage_client=restart())).id == default.id
    listed = await restart().list_key_value_stores()
    assert {m.id for m in listed} == {named.id, aliased.id, default.id}


async def test_open_by_unknown_id_after_a_restart(
    storage_client: StorageClient, restart: Callable[[], FileSystemStorageClient]
) -> None:
    await KeyValueStore.open(name="crawl", storage_client=storage_client)
    with pytest.raises(StoreNotFoundError):
        await KeyValueStore.open(id="nosuchstoreid0000", storage_client=restart())


async def test_a_second_client_sees_writes_and_deletes(storage_dir: Path, storage_client: StorageClient) -> None:
    first = await storage_client.open_key_value_store_client(name="shared")
    other = await FileSystemStorageClient(storage_dir=storage_dir).open_key_value_store_client(name="shared")
    assert await other.get_record(key="k") is None

    version = await first.set_record(key="k", value=b"1", content_type=TEXT)
    record = await other.get_record(key="k")
    assert record is not None
    assert (record.value, record.version) == (b"1", version)

    await other.set_record(key="k", value=b"{}", content_type="application/json", if_version=version)
    record = await first.get_record(key="k")
    assert record is not None
    assert (record.value, record.content_type) == (b"{}", "application/json")

    await first.delete_record(key="k")
    assert await other.get_record(key="k") is None
    assert [info async for info in other.iterate_keys()] == []


CHILD_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from recoverable.storages import FileSystemStorageClient

    async def main():
        client = FileSystemStorageClient(storage_dir=sys.argv[1])
        store = await client.open_key_value_store_client(name="shared")
        if sys.argv[2] == "write":
            version = await store.set_record(key=sys.argv[3], value=sys.argv[4].encode(), content_type=sys.argv[5])
            print(version)
        elif sys.argv[2] == "retype":
            await store.set_record(key=sys.argv[3], value=b"[1]", content_type="application/json")
        else:
            print(await store.delete_record(key=sys.argv[3]))

    asyncio.run(main())
    """
)


def _child(python: str, env: dict[str, str], storage_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [python, "-c", CHILD_WRITER, str(storage_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_records_written_by_another_process_are_seen(
    storage_client: StorageClient, storage_dir: Path, python: str, child_env: dict[str, str]
) -> None:
    store = await storage_client.open_key_value_store_client(name="shared")
    await store.set_record(key="mine", value=b"1", content_type=TEXT)
    assert [info.key async for info in store.iterate_keys()] == ["mine"]

    version = _child(python, child_env, storage_dir, "write", "from/child 🔑", "hello", TEXT)

    record = await store.get_record(key="from/child 🔑")
    assert record is not None
    assert (record.value, record.content_type, record.version) == (b"hello", TEXT, version)
    assert [info.key async for info in store.iterate_keys()] == ["from/child 🔑", "mine"]
    assert await store.record_exists(key="from/child 🔑")

    _child(python, child_env, storage_dir, "retype", "mine")
    record = await store.get_record(key="mine")
    assert record is not None
    assert (record.value, record.content_type) == (b"[1]", "application/json")

    assert _child(python, child_env, storage_dir, "delete", "mine") == "True"
    assert await store.get_record(key="mine") is None
    assert [info.key async for info in store.iterate_keys()] == ["from/child 🔑"]


RACER = textwrap.dedent(
    """
    import asyncio, sys
    from recoverable.errors import VersionConflictError
    from recoverable.storages import FileSystemStorageClient

    async def main():
        storage_dir, name, condition = sys.argv[1:4]
        store = await FileSystemStorageClient(storage_dir=storage_dir).open_key_value_store_client(name="race")
        print("ready", flush=True)
        sys.stdin.readline()
        kwargs = {"if_absent": True} if condition == "absent" else {"if_version": condition}
        try:
            await store.set_record(key="k", value=name.encode(), content_type="text/plain; charset=utf-8", **kwargs)
        except VersionConflictError:
            print("lost")
        else:
            print("won")

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("condition", ["if_version", "if_absent"])
@pytest.mark.parametrize("round_", range(5))
async def test_conditional_write_race_between_processes(
    *,
    storage_client: StorageClient,
    storage_dir: Path,
    python: str,
    child_env: dict[str, str],
    condition: str,
    round_: int,
) -> None:
    store = await storage_client.open_key_value_store_client(name="race")
    argument = "absent"
    if condition == "if_version":
        argument = await store.set_record(key="k", value=b"start", content_type=TEXT)
    names = ("alpha", "beta")
    racers = [
        await asyncio.create_subprocess_exec(
            python,
            "-c",
            RACER,
            str(storage_dir),
            name,
            argument,
            env=child_env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for name in names
    ]
    for racer in racers:
        assert racer.stdout is not None
        assert await racer.stdout.readline() == b"ready\n"
    # Both wait on stdin: release them together, so that both read version v before either writes.
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write(b"go\n")
    outputs = await asyncio.gather(*(racer.communicate() for racer in racers))
    results = {}
    for name, racer, (out, err) in zip(names, racers, outputs, strict=True):
        assert racer.returncode == 0, err.decode()
        results[name] = out.decode().strip()

    assert sorted(results.values()) == ["lost", "won"]
    (winner,) = (name for name, result in results.items() if result == "won")
    record = await store.get_record(key="k")
    assert record is not None
    assert record.value == winner.encode()


_HOLD_LOCK = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('LOCKED', flush=True)\n"
    "time.sleep(60)\n"
)


async def test_reads_do_not_wait_for_a_writer_waiting_for_another_process(tmp_path: Path) -> None:
    """A process holding the writers' lock (frozen in the middle of a write, say) keeps this process's writers
    waiting; its readers, even those that must look at the folder again, go on."""
    client = FileSystemStorageClient(storage_dir=tmp_path, lock_timeout=timedelta(seconds=20))
    kvs = await KeyValueStore.open(name="busy", storage_client=client)
    await kvs.set_value("before", 1)
    folder = tmp_path / "key_value_stores" / "busy"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLD_LOCK, str(folder / ".lock"), stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert await holder.stdout.readline() == b"LOCKED\n"
        writer = asyncio.create_task(kvs.set_value("blocked", 2))
        await asyncio.sleep(0.3)  # the writer waits for the lock by now
        assert not writer.done()
        (folder / "by-hand.json").write_text('{"by": "hand"}')  # another program changed the folder
        started = time.monotonic()
        assert await kvs.get_value("by-hand") == {"by": "hand"}  # a lookup that scans the folder again
        assert await kvs.get_value("before") == 1
        assert time.monotonic() - started < 2
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
    finally:
        holder.kill()
        await holder.wait()
    await kvs.set_value("after", 3)  # the lock is free again: the writer goes on
    await client.aclose()


_FORK_THEN_HOLD = (
    "import asyncio, os, sys, threading, time\n"
    "from recoverable.storages import FileSystemStorageClient, KeyValueStore\n"
    "from recoverable.storages._file_system._writers_lock import LockWait\n"
    "async def main():\n"
    "    client = FileSystemStorageClient(storage_dir=sys.argv[1])\n"
    "    kvs = await KeyValueStore.open(name='forked', storage_client=client)\n"
    "    await kvs.set_value('a', 1)\n"
    "    worker = os.fork()\n"
    "    if worker == 0:\n"
    "        os.close(1)  # the test waits for the writer's output to close\n"
    "        time.sleep(60)\n"
    "        os._exit(0)\n"
    "    with kvs.client._dir.write_lock(LockWait(timeout=10)):\n"
    "        print(worker, flush=True)\n"
    "        time.sleep(60)\n"
    "asyncio.run(main())\n"
)


async def test_a_worker_forked_by_a_writer_does_not_keep_its_lock_after_it_died(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    """A flock belongs to the open file, which a forked child (a multiprocessing worker) shares: the child lets
    go of its copy, so the lock ends with the process that took it."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FORK_THEN_HOLD, str(tmp_path), stdout=subprocess.PIPE, env=child_env
    )
    assert writer.stdout is not None
    worker = int(await writer.stdout.readline())
    try:
        writer.kill()  # dies holding the lock; its worker lives on
        await writer.wait()
        assert psutil.pid_exists(worker)
        client = FileSystemStorageClient(storage_dir=tmp_path, lock_timeout=timedelta(seconds=3))
        kvs = await KeyValueStore.open(name="forked", storage_client=client)
        await kvs.set_value("b", 2)
        assert await kvs.get_value("a") == 1
    finally:
        os.kill(worker, signal.SIGKILL)


async def test_a_read_racing_another_threads_rescan_still_finds_a_record_another_process_wrote(
    storage_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that looked a key up in the index as it was, while another thread rescanned the folder, looks again.

    The rescan of the other thread is made to happen between the two steps of the lookup, where concurrent
    reads (eight at a time, by a keyed state's load) met it: the key is missing from the index this thread
    read, and the folder no longer counts as changed, since the other thread's scan saw it as it is now.
    """
    from recoverable.storages._file_system._record_index import RecordIndex  # noqa: PLC0415

    kvs = await KeyValueStore.open(name="race", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    assert await kvs.get_value("written-elsewhere") is None  # this process's index: scanned, without the key
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITE_ELSEWHERE, str(storage_dir), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await other.communicate()
    assert other.returncode == 0, stderr.decode()

    find = RecordIndex.find
    rescanned: list[bool] = []

    def find_while_another_thread_rescans(self: RecordIndex, records: dict[str, Any], key: str) -> Any:
        if not rescanned:
            rescanned.append(True)
            self.scan()  # what another thread's read did meanwhile
        return find(self, records, key)

    monkeypatch.setattr(RecordIndex, "find", find_while_another_thread_rescans)
    assert await kvs.get_value("written-elsewhere") == {"by": "another process"}
    assert rescanned


async def test_a_read_racing_the_end_of_another_threads_rescan_still_finds_the_record(
    storage_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, the other thread's rescan ending between the two checks of the lookup (what the index holds,
    whether the folder changed since): the lookup must not take the index for fresh and the record for missing.
    """
    from recoverable.storages._file_system._record_index import RecordIndex  # noqa: PLC0415

    kvs = await KeyValueStore.open(name="race", storage_client=FileSystemStorageClient(storage_dir=storage_dir))
    assert await kvs.get_value("written-elsewhere") is None
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITE_ELSEWHERE, str(storage_dir), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await other.communicate()
    assert other.returncode == 0, stderr.decode()

    changed = RecordIndex.changed
    rescanned: list[bool] = []

    def changed_after_another_threads_rescan(self: RecordIndex, folder: int | None = None) -> bool:
        if not rescanned:
            rescanned.append(True)
            self.scan()  # another thread's rescan ends just now
        return changed(self, folder)

    monkeypatch.setattr(RecordIndex, "changed", changed_after_another_threads_rescan)
    assert await kvs.get_value("written-elsewhere") == {"by": "another process"}
    assert rescanned


_WRITE_ELSEWHERE = textwrap.dedent(
    """
    import asyncio, sys
    from recoverable.storages import FileSystemStorageClient, KeyValueStore

    async def main() -> None:
        client = FileSystemStorageClient(storage_dir=sys.argv[1])
        kvs = await KeyValueStore.open(name="race", storage_client=client)
        await kvs.set_value("written-elsewhere", {"by": "another process"})

    asyncio.run(main())
    """
)
