"""Each write is one durable all-or-nothing replace; a failure or a crash leaves the old record."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import stat
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import StorageBackendError, VersionConflictError
from recoverable.storages import KeyValueStore, StorageClient
from recoverable.storages._file_system._layout import TEMP_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable


def _full(path: str | os.PathLike[str], dir_fd: object) -> Path:
    """The path of `path`, relative to the open folder `dir_fd` when there is one."""
    if isinstance(dir_fd, int):
        return Path(os.readlink(f"/proc/self/fd/{dir_fd}")) / path
    return Path(path)


class Calls:
    """The fsync and replace calls made while it records, with the kind of each fsync'd descriptor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsyncs: list[str] = []
        self.replaces: list[tuple[Path, Path]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            self.fsyncs.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
            real_fsync(fd)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kwargs: object) -> None:
            self.replaces.append((_full(src, kwargs.get("src_dir_fd")), _full(dst, kwargs.get("dst_dir_fd"))))
            real_replace(src, dst, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)


@pytest.fixture
async def kvs(storage_client: StorageClient) -> KeyValueStore:
    store = await KeyValueStore.open(name="durable", storage_client=storage_client)
    await store.set_value("warm-up", 0)
    return store


@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "overwrite"])
async def test_one_durable_write_per_set_value(
    kvs: KeyValueStore, stores_dir: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    if existing:
        await kvs.set_value("k", {"old": True})
    calls = Calls(monkeypatch)

    await kvs.set_value("k", {"new": True})

    assert sorted(calls.fsyncs) == ["dir", "file"]
    assert calls.fsyncs == ["file", "dir"]
    ((src, dst),) = calls.replaces
    assert dst == stores_dir / "durable" / "k.json"
    assert src.parent == dst.parent
    assert src.name.startswith(TEMP_PREFIX)


async def test_conditional_write_is_one_durable_write(kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    version = await kvs.set_value("k", 1)
    calls = Calls(monkeypatch)

    await kvs.set_value("k", 2, if_version=version)

    assert calls.fsyncs == ["file", "dir"]
    assert len(calls.replaces) == 1


async def test_read_list_and_exists_do_not_write(kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await kvs.set_value("k", 1)
    calls = Calls(monkeypatch)

    await kvs.get_value("k")
    await kvs.record_exists("k")
    await kvs.list_keys()
    await kvs.get_metadata()

    assert (calls.fsyncs, calls.replaces) == ([], [])


async def test_failed_conditional_write_does_not_touch_the_disk(
    kvs: KeyValueStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kvs.set_value("k", 1)
    calls = Calls(monkeypatch)

    with pytest.raises(VersionConflictError):
        await kvs.set_value("k", 2, if_version="stale")

    assert (calls.fsyncs, calls.replaces) == ([], [])


def _temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)]


async def test_failing_rename_keeps_the_old_record(
    kvs: KeyValueStore, stores_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = await kvs.set_value("k", {"old": True})

    def broken_replace(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value("k", {"new": True})
    monkeypatch.undo()

    assert isinstance(info.value.__cause__, OSError)
    assert info.value.key == "k"
    assert "'k'" in str(info.value)
    assert "Input/output error" in str(info.value)
    record = await kvs.get_record("k")
    assert record is not None
    assert (record.value, record.version) == ({"old": True}, version)
    folder = stores_dir / "durable"
    assert _temp_files(folder) == []
    assert json.loads((folder / "k.json").read_text()) == {"old": True}


async def test_failing_fsync_keeps_the_old_record(
    kvs: KeyValueStore, stores_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await kvs.set_value("k", "old")

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageBackendError, match="free some disk space"):
        await kvs.set_value("k", "new")
    monkeypatch.undo()

    assert await kvs.get_value("k") == "old"
    assert _temp_files(stores_dir / "durable") == []


async def test_failing_write_of_a_new_key_leaves_nothing(
    kvs: KeyValueStore, stores_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageBackendError):
        await kvs.set_value("new", [1])
    monkeypatch.undo()

    assert not await kvs.record_exists("new")
    assert [info.key for info in await kvs.list_keys()] == ["warm-up"]
    assert _temp_files(stores_dir / "durable") == []


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from recoverable.storages import FileSystemStorageClient, KeyValueStore

    async def main():
        kvs = await KeyValueStore.open(name="durable", storage_client=FileSystemStorageClient(storage_dir=sys.argv[1]))
        i = 0
        while True:
            i += 1
            await kvs.set_value("state", {"i": i, "pad": "x" * (i % 7 * 50_000)})
            await kvs.set_value("text", f"line {i}\\n" * (i % 5 * 10_000))
            if i == 3:
                print("writing", flush=True)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05, 0.1, 0.2])
async def test_sigkill_mid_write_leaves_a_whole_record(
    *,
    kvs: KeyValueStore,
    storage_dir: Path,
    python: str,
    child_env: dict[str, str],
    restart: Callable[[], StorageClient],
    delay: float,
) -> None:
    child = await asyncio.create_subprocess_exec(
        python, "-c", WRITER, str(storage_dir), env=child_env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await child.stdout.readline() == b"writing\n"
        # Kill it at some point of its write loop; where exactly does not matter, any instant must be safe.
        await asyncio.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.communicate()
    assert child.returncode == -signal.SIGKILL

    reopened = await KeyValueStore.open(name="durable", storage_client=restart())
    state = await reopened.get_value("state")
    assert state["i"] >= 3
    assert state["pad"] == "x" * (state["i"] % 7 * 50_000)
    lines = set((await reopened.get_value("text")).splitlines())
    assert len(lines) <= 1
    assert all(line.startswith("line ") for line in lines)
    assert {info.key for info in await reopened.list_keys()} == {"warm-up", "state", "text"}
    await reopened.set_value("state", {"after": "crash"})
    assert await reopened.get_value("state") == {"after": "crash"}
