"""Versions that never repeat, an index that sees other processes' writes, leftovers of crashes swept."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import StoreNotFoundError, VersionConflictError
from recoverable.storages import FileSystemStorageClient, KeyValueStore
from recoverable.storages._file_system._layout import TEMP_PREFIX
from recoverable.storages._file_system._writers_lock import LockWait

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


async def test_versions_of_same_size_writes_never_repeat(storage_client: FileSystemStorageClient) -> None:
    # Same size every time, so inode reuse plus a coarse clock could give two writes one version.
    store = await storage_client.open_key_value_store_client(name="versions")
    versions = [
        await store.set_record(key="counter", value=f"{i:06d}".encode(), content_type="text/plain; charset=utf-8")
        for i in range(1500)
    ]
    assert len(set(versions)) == len(versions)


async def test_a_stale_version_never_matches_again(storage_client: FileSystemStorageClient) -> None:
    store = await storage_client.open_key_value_store_client(name="aba")
    stale = await store.set_record(key="k", value=b"a", content_type="application/octet-stream")
    for _ in range(50):
        await store.set_record(key="k", value=b"a", content_type="application/octet-stream")
        with pytest.raises(VersionConflictError):
            await store.set_record(key="k", value=b"b", content_type="application/octet-stream", if_version=stale)
    record = await store.get_record(key="k")
    assert record is not None
    assert record.value == b"a"


async def test_a_key_created_by_another_process_is_seen_even_when_the_folder_time_did_not_move(
    storage_dir: Path, stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    first = await restart().open_key_value_store_client(name="shared")
    assert await first.get_record(key="new") is None  # builds this process's index
    folder = stores_dir / "shared"
    before = os.stat(folder)

    other = await restart().open_key_value_store_client(name="shared")
    await other.set_record(key="new", value=b"from the other process", content_type="application/octet-stream")
    # A file system whose clock did not tick between the two changes shows the same folder time.
    os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))

    record = await first.get_record(key="new")
    assert record is not None
    assert record.value == b"from the other process"
    with pytest.raises(VersionConflictError):
        await first.set_record(key="new", value=b"mine", content_type="application/octet-stream", if_absent=True)


async def test_temp_files_left_by_a_crash_are_swept_by_the_next_writer(
    stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    store = await restart().open_key_value_store_client(name="sweep")
    await store.set_record(key="k", value=b"v", content_type="application/octet-stream")
    leftover = stores_dir / "sweep" / f"{TEMP_PREFIX}0123456789abcdef"
    leftover.write_bytes(b"half a record")

    after_restart = await restart().open_key_value_store_client(name="sweep")
    await after_restart.set_record(key="other", value=b"v", content_type="application/octet-stream")

    assert not leftover.exists()
    assert sorted([info.key async for info in after_restart.iterate_keys()]) == ["k", "other"]


async def test_a_store_dropped_by_another_process_is_reported_as_not_found(
    restart: Callable[[], FileSystemStorageClient],
) -> None:
    mine = await KeyValueStore.open(name="gone", storage_client=restart())
    await mine.set_value("k", 1)
    theirs = await KeyValueStore.open(name="gone", storage_client=restart())
    await theirs.drop()

    with pytest.raises(StoreNotFoundError, match="no longer exists"):
        await mine.set_value("k", 2)
    with pytest.raises(StoreNotFoundError):
        await mine.list_keys()


async def test_writers_of_a_store_made_anew_by_another_process_lock_the_new_lock_file(
    stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    mine = await restart().open_key_value_store_client(name="again")
    await mine.set_record(key="k", value=b"1", content_type="application/octet-stream")
    other = restart()
    await (await other.open_key_value_store_client(name="again")).drop()
    remade = await other.open_key_value_store_client(name="again")
    await remade.set_record(key="k", value=b"2", content_type="application/octet-stream")

    # This process still holds the old, deleted .lock open; its next write must lock the new one.
    new_lock_inode = os.stat(stores_dir / "again" / ".lock").st_ino
    await mine.set_record(key="k", value=b"3", content_type="application/octet-stream")
    lock_fd = mine._dir._lock_fd
    assert lock_fd is not None
    assert os.fstat(lock_fd).st_ino == new_lock_inode


async def test_a_writer_waiting_while_its_store_is_dropped_and_made_anew_locks_the_new_lock_file(
    stores_dir: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    mine = await restart().open_key_value_store_client(name="again")
    await mine.set_record(key="k", value=b"1", content_type="application/octet-stream")
    dropping = await restart().open_key_value_store_client(name="again")
    taken, release = threading.Event(), threading.Event()

    def hold_the_old_lock() -> None:
        with dropping._dir.write_lock(LockWait(timeout=10)):
            taken.set()
            release.wait()

    holder = threading.Thread(target=hold_the_old_lock)
    holder.start()
    await asyncio.to_thread(taken.wait)
    writing = asyncio.create_task(mine.set_record(key="k", value=b"3", content_type="application/octet-stream"))
    await asyncio.sleep(0.2)  # this process's write now waits for the old lock
    # Dropped (renamed away under its lock) and made anew by another process while the write waits.
    os.replace(stores_dir / "again", stores_dir / "dropped")
    remade = await restart().open_key_value_store_client(name="again")
    await remade.set_record(key="k", value=b"2", content_type="application/octet-stream")
    release.set()
    await writing
    await asyncio.to_thread(holder.join)

    lock_fd = mine._dir._lock_fd
    assert lock_fd is not None
    assert os.fstat(lock_fd).st_ino == os.stat(stores_dir / "again" / ".lock").st_ino
    assert (stores_dir / "again" / "k.bin").read_bytes() == b"3"


async def test_each_rewrite_gets_a_later_modification_time_even_when_the_clock_stands_still(
    storage_client: FileSystemStorageClient, stores_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await storage_client.open_key_value_store_client(name="clock")
    await store.set_record(key="k", value=b"0", content_type="application/octet-stream")
    # A clock stuck ahead of the kernel's: only the library's own timestamps can be at or after it.
    frozen = os.stat(stores_dir / "clock" / "k.bin").st_mtime_ns + 10**12
    monkeypatch.setattr("recoverable.storages._file_system._durable_writes.time.time_ns", lambda: frozen)
    seen = []
    for i in range(20):
        await store.set_record(key="k", value=str(i % 10).encode(), content_type="application/octet-stream")
        seen.append(os.stat(stores_dir / "clock" / "k.bin").st_mtime_ns)
    assert seen == sorted(set(seen))
    assert seen[0] >= frozen
